"""Role/account passwords travel with a database only when the operator opts in
(`roles: {passwords: true}`): then their hashes are a separate encrypted artifact of the
snapshot, and `backupctl restore` recreates a lost role/account that logs in with its original
password; without the opt-in no hash is stored anywhere (target, catalog, output). A
PostgreSQL restore under another name (`--as`) also gets the database's own GRANTs and
settings, which pg_restore restores only with --create."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

from backupctl.local_cluster.postgres import LocalPostgres
from backupctl.sources.mysql import Endpoint, run_sql
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase


def _holders(root: Path, needle: str) -> list[str]:
    """Files under `root` (targets, catalog, state) whose bytes contain `needle`."""
    return [str(path) for path in root.rglob("*") if path.is_file() and needle.encode() in path.read_bytes()]


def test_postgres_role_password_and_database_grants_restored_only_with_the_opt_in(
    workspace: Workspace, postgres_cluster: LocalPostgres
) -> None:
    suffix = secrets.token_hex(3)
    database, restored, app = f"rp_{suffix}", f"rp_new_{suffix}", f"app_{suffix}"
    original = f"orig-{secrets.token_urlsafe(9)}"
    postgres_cluster.create_database(database)
    postgres_cluster.psql(
        f"CREATE ROLE {app} LOGIN PASSWORD '{original}'; "
        f"REVOKE ALL ON DATABASE {database} FROM PUBLIC; "
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {app}; "
        f"ALTER ROLE {app} IN DATABASE {database} SET search_path TO app, public; "
        f"ALTER DATABASE {database} SET work_mem TO '8MB';"
    )
    try:
        postgres_cluster.psql(
            f"CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2); "
            f"ALTER TABLE items OWNER TO {app};",
            database,
        )
        scram = postgres_cluster.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{app}'").strip()
        assert scram.startswith("SCRAM-SHA-256$")
        workspace.env["RP_PASSWORD"] = postgres_cluster.password
        source = {"name": "app-db", "type": "postgres", "url": postgres_cluster.url(database, "postgres"),
                  "password": "env:RP_PASSWORD"}  # fmt: skip

        # Without the opt-in: no hash anywhere, no secrets artifact.
        workspace.write_policy("plain", workspace.base_policy("plain", [source]))
        plain = workspace.run("backup", "plain", "--json")
        assert plain.returncode == 0, plain.stderr[-2000:]
        assert _holders(workspace.root, scram) == []
        assert not list(workspace.backups.rglob("*.secrets.*"))

        # With it: a separate age artifact holds it; the manifest, catalog and output do not.
        workspace.write_policy("rp", workspace.base_policy("rp", [{**source, "roles": {"passwords": True}}]))
        backup = workspace.run("backup", "rp", "--json")
        assert backup.returncode == 0, backup.stderr[-2000:]
        assert scram not in backup.stdout + backup.stderr
        (artifact,) = workspace.backups.rglob("app-db.secrets.json.zst.age")
        assert artifact.read_bytes().startswith(b"age-encryption.org/v1")
        assert _holders(workspace.root, scram) == []
        manifest = json.loads((artifact.parent / "manifest.json").read_text())
        (grants,) = [a["facts"]["database_grants"] for a in manifest["artifacts"] if a["source"] == "app-db"]
        assert grants["default_acl"] is False
        verified = workspace.run("verify", "rp")
        assert verified.returncode == 0 and "app-db.secrets.json.zst.age" in verified.stdout, verified.stdout

        # Total loss of the database and its role; restore under another name.
        postgres_cluster.drop_database(database)
        postgres_cluster.psql(f"DROP ROLE {app};")
        done = workspace.run(
            "restore", "rp", "--source", "app-db", "--to-db", postgres_cluster.url("postgres", "postgres"),
            "--as", restored, "--db-password", "env:RP_PASSWORD", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert scram not in done.stdout + done.stderr
        roles = json.loads(done.stdout)["roles"]
        assert roles["created"] == [app]
        assert any("recorded password" in note and app in note for note in roles["notes"])
        assert f'REVOKE ALL ON DATABASE "{restored}" FROM PUBLIC' in roles["applied"]
        assert f'GRANT CONNECT ON DATABASE "{restored}" TO "{app}"' in roles["applied"]

        # The role logs in with its original password, over TCP (scram-sha-256), and has CONNECT.
        with psycopg.connect(postgres_cluster.url(restored, app), password=original) as connection:
            assert connection.execute("SELECT count(*) FROM items").fetchone() == (2,)
            assert connection.execute("SHOW search_path").fetchone() == ("app, public",)
            assert connection.execute("SHOW work_mem").fetchone() == ("8MB",)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(postgres_cluster.url(restored, app), password="not-the-password").close()
        one = postgres_cluster.psql(
            f"SELECT has_database_privilege('{app}', '{restored}', 'CONNECT')::text || "
            f"has_database_privilege('public', '{restored}', 'CONNECT')::text"
        ).strip()
        assert one == "truefalse"  # PUBLIC's CONNECT revoked, as recorded
    finally:
        for name in (database, restored):
            postgres_cluster.psql(f"DROP DATABASE IF EXISTS {name};")
        postgres_cluster.psql(f"DROP ROLE IF EXISTS {app};")


def test_postgres_password_opt_in_refused_without_the_privilege(
    workspace: Workspace, postgres_cluster: LocalPostgres
) -> None:
    suffix = secrets.token_hex(3)
    database, backup_role = f"rq_{suffix}", f"bk_{suffix}"
    postgres_cluster.create_database(database)
    postgres_cluster.psql(f"CREATE ROLE {backup_role} LOGIN PASSWORD 'bk-{suffix}';")
    try:
        workspace.env["RQ_PASSWORD"] = f"bk-{suffix}"
        workspace.write_policy("rq", workspace.base_policy("rq", [
            {"name": "app-db", "type": "postgres", "url": postgres_cluster.url(database, backup_role),
             "password": "env:RQ_PASSWORD", "roles": {"passwords": True}}]))  # fmt: skip
        done = workspace.run("backup", "rq")
        assert done.returncode != 0
        assert "may not read the password hashes" in done.stderr and "pg_read_all_data" in done.stderr
        assert not list(workspace.backups.rglob("*.zst.age"))
    finally:
        postgres_cluster.psql(f"DROP DATABASE IF EXISTS {database}; DROP ROLE IF EXISTS {backup_role};")


def test_mariadb_account_restored_with_its_password_only_with_the_opt_in(
    workspace: Workspace, mariadb_database: MariaDatabase
) -> None:
    server = mariadb_database.server
    app_user, original = f"app_{secrets.token_hex(3)}", f"orig-{secrets.token_urlsafe(9)}"
    restored = f"restored_{secrets.token_hex(4)}"
    server.sql(f"CREATE USER '{app_user}'@'%' IDENTIFIED BY '{original}'; GRANT SELECT, "
               f"INSERT ON `{mariadb_database.name}`.* TO '{app_user}'@'%';")  # fmt: skip
    try:
        created = server.sql(f"SHOW CREATE USER '{app_user}'@'%'")
        digest = created.split("PASSWORD '")[1].split("'")[0]
        assert digest.startswith("*")
        address = urlparse(mariadb_database.root_url)
        workspace.env["RM_ROOT"] = server.password
        source = {"name": "maria-db", "type": "mysql", "host": address.hostname, "port": address.port,
                  "user": "root", "password": "env:RM_ROOT", "database": mariadb_database.name}  # fmt: skip
        workspace.write_policy("rmplain", workspace.base_policy("rmplain", [source]))
        assert workspace.run("backup", "rmplain").returncode == 0
        assert _holders(workspace.root, digest) == []
        assert not list(workspace.backups.rglob("*.secrets.*"))

        workspace.write_policy("rm", workspace.base_policy("rm", [{**source, "roles": {"passwords": True}}]))
        backup = workspace.run("backup", "rm", "--json")
        assert backup.returncode == 0, backup.stderr[-2000:]
        assert digest not in backup.stdout + backup.stderr
        assert len(list(workspace.backups.rglob("maria-db.secrets.json.zst.age"))) == 1
        assert _holders(workspace.root, digest) == []
        server.sql(f"DROP USER '{app_user}'@'%';")  # lost with the old server

        done = workspace.run(
            "restore", "rm", "--source", "maria-db", "--to-db", mariadb_database.root_url,
            "--as", restored, "--db-password", "env:RM_ROOT", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert digest not in done.stdout + done.stderr
        roles = json.loads(done.stdout)["roles"]
        assert roles["created"] == [f"{app_user}@%"]
        assert any("recorded password" in note for note in roles["notes"])
        assert "ACCOUNT LOCK" not in server.sql(f"SHOW CREATE USER '{app_user}'@'%'")

        # The account logs in with its original password and reads the restored database.
        login = Endpoint(app_user, restored, str(address.hostname), int(address.port or 3306), None, original)
        client = "mariadb"
        assert run_sql(client, login, "SELECT COUNT(*) > 0 FROM customers", "log in as the app") == [["1"]]
    finally:
        server.sql(f"DROP USER IF EXISTS '{app_user}'@'%'; DROP DATABASE IF EXISTS `{restored}`;")


def test_postgres_role_password_through_restic_and_a_second_blob_target(
    workspace: Workspace, postgres_cluster: LocalPostgres, restic_binary: str, tmp_path: Path
) -> None:
    """The secrets artifact follows the dump to every target: encrypted once, copied (re-hashed)
    to the second blob target, stored in restic by restic; each copy verifies, and a restore
    from restic alone creates the role with its password."""
    suffix = secrets.token_hex(3)
    database, restored, app = f"rs_{suffix}", f"rs_new_{suffix}", f"app_{suffix}"
    original = f"orig-{secrets.token_urlsafe(9)}"
    postgres_cluster.create_database(database)
    postgres_cluster.psql(f"CREATE ROLE {app} LOGIN PASSWORD '{original}';")
    try:
        postgres_cluster.psql(f"CREATE TABLE t (id int); ALTER TABLE t OWNER TO {app};", database)
        workspace.env.update(RS_PASSWORD=postgres_cluster.password, RS_RESTIC=f"pw-{suffix}")
        workspace.write_policy("rs", workspace.base_policy("rs", [
            {"name": "app-db", "type": "postgres", "url": postgres_cluster.url(database, "postgres"),
             "password": "env:RS_PASSWORD", "roles": {"passwords": True}}], [
            {"name": "local", "type": "local", "path": str(workspace.backups)},
            {"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
            {"name": "dedup", "type": "restic", "repository": str(tmp_path / "restic"),
             "password": "env:RS_RESTIC"}]))  # fmt: skip
        assert workspace.run("target", "setup", "rs", "dedup").returncode == 0
        backup = workspace.run_json("backup", "rs")
        assert backup["status"] == "complete", backup
        assert len(list((tmp_path / "nas").rglob("app-db.secrets.json.zst.age"))) == 1
        verified = workspace.run("verify", "rs")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.count("app-db.secrets") == 3, verified.stdout  # local, nas, restic

        postgres_cluster.drop_database(database)
        postgres_cluster.psql(f"DROP ROLE {app};")
        done = workspace.run(
            "restore", "rs", "--source", "app-db", "--from", "dedup", "--to-db",
            postgres_cluster.url("postgres", "postgres"), "--as", restored,
            "--db-password", "env:RS_PASSWORD", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert json.loads(done.stdout)["roles"]["created"] == [app]
        with psycopg.connect(postgres_cluster.url(restored, app), password=original) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (app,)
    finally:
        for name in (database, restored):
            postgres_cluster.psql(f"DROP DATABASE IF EXISTS {name};")
        postgres_cluster.psql(f"DROP ROLE IF EXISTS {app};")
