"""`backupctl restore` recreates the roles/accounts the snapshot recorded (`--roles create-missing`,
the default): after a total loss (database and roles gone), a restore into a fresh database
creates the missing roles and their grants, without passwords, and leaves existing ones alone."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlparse

from backupctl.local_cluster.postgres import LocalPostgres
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase


def test_postgres_restore_creates_missing_roles_and_leaves_existing_ones(
    workspace: Workspace, postgres_cluster: LocalPostgres
) -> None:
    suffix = secrets.token_hex(3)
    database, restored = f"rr_{suffix}", f"rr_new_{suffix}"
    owner, readers, reader = f"own_{suffix}", f"grp_{suffix}", f"rd_{suffix}"
    postgres_cluster.create_database(database)
    postgres_cluster.psql(
        f"CREATE ROLE {owner} LOGIN PASSWORD 'prod-only-secret'; CREATE ROLE {readers} NOLOGIN; "
        f"CREATE ROLE {reader} LOGIN CONNECTION LIMIT 7 PASSWORD 'reader-keeps-this' IN ROLE {readers};"
    )
    try:
        postgres_cluster.psql(
            "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2), (3); "
            f"ALTER TABLE items OWNER TO {owner}; GRANT SELECT ON items TO {readers};",
            database,
        )
        workspace.env["RR_PASSWORD"] = postgres_cluster.password
        workspace.write_policy("rr", workspace.base_policy("rr", [
            {"name": "app-db", "type": "postgres", "url": postgres_cluster.url(database, "postgres"),
             "password": "env:RR_PASSWORD"}]))  # fmt: skip
        assert workspace.run("backup", "rr").returncode == 0
        # Total loss: the database and two of its three roles are gone; the reader survives
        # (and so loses its membership of the dropped group).
        postgres_cluster.drop_database(database)
        postgres_cluster.psql(f"DROP ROLE {owner}, {readers};")

        # --roles skip creates nothing (without the roles, only --no-owner can restore it).
        skipped = workspace.run(
            "restore", "rr", "--source", "app-db", "--to-db", postgres_cluster.url("postgres", "postgres"),
            "--as", f"{restored}_skip", "--db-password", "env:RR_PASSWORD", "--roles", "skip", "--no-owner",
            "--json",
        )  # fmt: skip
        assert skipped.returncode == 0, skipped.stderr[-2000:]
        nothing: dict[str, list[str]] = {"created": [], "existing": [], "notes": [], "applied": []}
        assert json.loads(skipped.stdout)["roles"] == nothing
        count = f"SELECT count(*) FROM pg_roles WHERE rolname = '{owner}'"
        assert postgres_cluster.psql(count).strip() == "0"

        done = workspace.run(
            "restore", "rr", "--source", "app-db", "--to-db", postgres_cluster.url("postgres", "postgres"),
            "--as", restored, "--db-password", "env:RR_PASSWORD", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        result = json.loads(done.stdout)
        assert sorted(result["roles"]["created"]) == sorted([owner, readers])
        assert set(result["roles"]["existing"]) == {reader, "postgres"}  # postgres owns schema public
        assert any("without a password" in note and owner in note for note in result["roles"]["notes"])
        assert "prod-only-secret" not in done.stdout + done.stderr

        def one(sql: str, dbname: str = "postgres") -> str:
            return postgres_cluster.psql(sql, dbname).strip()

        assert one("SELECT tableowner FROM pg_tables WHERE tablename = 'items'", restored) == owner
        assert one(f"SELECT has_table_privilege('{readers}', 'public.items', 'SELECT')", restored) == "t"
        # Created: LOGIN as recorded, no password, never superuser.
        assert one(
            "SELECT rolcanlogin::text || rolsuper::text || (rolpassword IS NULL)::text "
            f"FROM pg_authid WHERE rolname = '{owner}'"
        ) == "truefalsetrue"
        # Left alone: its password and connection limit kept, no membership granted back.
        kept = "SELECT rolconnlimit::text || (rolpassword IS NOT NULL)::text FROM pg_authid WHERE rolname = "
        assert one(f"{kept}'{reader}'") == "7true"
        assert one(f"SELECT pg_has_role('{reader}', '{readers}', 'MEMBER')") == "f"

        # A second restore finds them all, creates nothing; --roles skip does not even look.
        again = workspace.run(
            "restore", "rr", "--source", "app-db", "--to-db", postgres_cluster.url("postgres", "postgres"),
            "--as", f"{restored}_2", "--db-password", "env:RR_PASSWORD",
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        assert "roles created" not in again.stdout and "left as they are" in again.stdout
    finally:
        for name in (database, restored, f"{restored}_2", f"{restored}_skip"):
            postgres_cluster.psql(f"DROP DATABASE IF EXISTS {name};")
        postgres_cluster.psql(f"DROP ROLE IF EXISTS {reader}, {readers}, {owner};")


def test_mariadb_restore_creates_missing_accounts_locked_with_their_grants(
    workspace: Workspace, mariadb_database: MariaDatabase
) -> None:
    server = mariadb_database.server
    app_user = f"app_{secrets.token_hex(3)}"
    restored = f"restored_{secrets.token_hex(4)}"
    server.sql(f"CREATE USER '{app_user}'@'localhost' IDENTIFIED BY 'prod-only-secret'; GRANT SELECT, "
               f"INSERT ON `{mariadb_database.name}`.* TO '{app_user}'@'localhost';")  # fmt: skip
    try:
        address = urlparse(mariadb_database.root_url)
        workspace.env["RR_ROOT"] = server.password
        workspace.write_policy("rrm", workspace.base_policy("rrm", [
            {"name": "maria-db", "type": "mysql", "host": address.hostname, "port": address.port,
             "user": "root", "password": "env:RR_ROOT", "database": mariadb_database.name}]))  # fmt: skip
        assert workspace.run("backup", "rrm").returncode == 0
        server.sql(f"DROP USER '{app_user}'@'localhost';")  # lost with the old server

        done = workspace.run(
            "restore", "rrm", "--source", "maria-db", "--to-db", mariadb_database.root_url,
            "--as", restored, "--db-password", "env:RR_ROOT", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        roles = json.loads(done.stdout)["roles"]
        assert roles["created"] == [f"{app_user}@localhost"]
        # The fixture's backup user was granted on the database too: it exists, so it is kept as is.
        assert roles["existing"] == [f"{mariadb_database.user}@localhost"]
        assert any("locked" in note for note in roles["notes"])

        grants = server.sql(f"SHOW GRANTS FOR '{app_user}'@'localhost'")
        assert f"GRANT SELECT, INSERT ON `{restored}`.*" in grants
        assert f"`{mariadb_database.name}`" not in grants  # renamed to the restored database
        created = server.sql(f"SHOW CREATE USER '{app_user}'@'localhost'")
        assert "ACCOUNT LOCK" in created and "IDENTIFIED" not in created  # locked, no password
        untouched = server.sql(f"SHOW GRANTS FOR '{mariadb_database.user}'@'localhost'")
        assert restored not in untouched
    finally:
        server.sql(f"DROP USER IF EXISTS '{app_user}'@'localhost'; DROP DATABASE IF EXISTS `{restored}`;")
