"""`restore --to-db URL --as NAME`: a copy next to the live database, which is never touched,
and no hint ever suggests dropping the database that carries the source's name."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

from tests.e2e.pgcheck import fingerprints
from tests.e2e.test_mysql_cli import checksums
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.fixtures.postgres import PgDatabase


def test_postgres_restore_as_new_name_beside_the_live_database(
    workspace: Workspace, pg_database: PgDatabase
) -> None:
    workspace.env["AS_DB_PASSWORD"] = pg_database.password
    source = {"name": "db", "type": "postgres", "url": pg_database.url, "password": "env:AS_DB_PASSWORD"}
    workspace.write_policy("app", workspace.base_policy("app", [source]))
    assert workspace.run_json("backup", "app")["status"] == "complete"
    cluster = pg_database.cluster
    superuser = {"PW": cluster.password}
    server = cluster.url("postgres", "postgres")  # the maintenance database of the same server

    # --create on the live server: the source's database exists; the hint must not say drop it.
    refused = workspace.run("restore", "app", "latest", "--source", "db", "--to-db", server, "--create",
                            "--db-password", "env:PW", env=superuser)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "--as NEW_NAME" in refused.stderr and "--clean" not in refused.stderr, refused.stderr
    # Straight into the live database: also refused without a --clean hint.
    live = workspace.run("restore", "app", "latest", "--source", "db", "--to-db", pg_database.url,
                         "--db-password", "env:PW", env={"PW": pg_database.password})  # fmt: skip
    assert live.returncode == 2 and "--as NEW_NAME" in live.stderr and "--clean" not in live.stderr, (
        live.stderr
    )

    name = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        done = workspace.run("restore", "app", "latest", "--source", "db", "--to-db", server, "--as", name,
                             "--db-password", "env:PW", env=superuser)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"as new database {name}" in done.stdout and "row counts equal the manifest" in done.stdout
        copy = PgDatabase(cluster, name, "postgres", cluster.password)
        with pg_database.connect() as original, copy.connect() as restored:
            assert fingerprints(restored) == fingerprints(original)
        again = workspace.run("restore", "app", "latest", "--source", "db", "--to-db", server, "--as", name,
                              "--db-password", "env:PW", env=superuser)  # fmt: skip
        assert again.returncode == 2 and "choose another --as name" in again.stderr, again.stderr
    finally:
        cluster.drop_database(name)


def test_mariadb_restore_as_new_name(workspace: Workspace, mariadb_database: MariaDatabase) -> None:
    address = urlparse(mariadb_database.url)
    workspace.env["AS_MYSQL_PASSWORD"] = mariadb_database.password
    source = {"name": "maria", "type": "mysql", "host": address.hostname, "port": address.port,
              "user": mariadb_database.user, "password": "env:AS_MYSQL_PASSWORD",
              "database": mariadb_database.name}  # fmt: skip
    workspace.write_policy("app", workspace.base_policy("app", [source]))
    result = workspace.run_json("backup", "app")
    name = f"copy_{uuid.uuid4().hex[:8]}"
    server = mariadb_database.server
    try:
        done = workspace.run("restore", "app", "latest", "--source", "maria", "--to-db",
                             mariadb_database.root_url, "--as", name, "--db-password", "env:PW",
                             env={"PW": server.password})  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"as new database {name}" in done.stdout
        tables = sorted(result["sources"]["maria"]["facts"]["row_counts"])
        copy = MariaDatabase(server, name, "root", server.password)
        assert checksums(copy, tables) == checksums(mariadb_database, tables)
    finally:
        server.drop_database(name)
