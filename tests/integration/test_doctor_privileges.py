"""`doctor` checks the backup role's privileges on real servers, naming the GRANT to run."""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg

from backupctl.actions.doctor_privileges import mysql_missing
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.fixtures.postgres import PgDatabase
from tests.integration.test_doctor import findings


def privileges(space: Workspace) -> dict[str, Any]:
    _, items = findings(space, "shop")
    [found] = [item for item in items if item["check"].endswith(": privileges")]
    return found


def test_postgres_role_without_sequence_privilege_is_named_with_the_grant(
    workspace: Workspace, pg_database: PgDatabase
) -> None:
    role, password = f"ro_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12)
    with pg_database.connect() as owner:
        owner.execute("CREATE TABLE counted (id serial PRIMARY KEY)")
    cluster = pg_database.cluster
    cluster.create_role(role, password)
    cluster.psql(f"GRANT CONNECT ON DATABASE {pg_database.name} TO {role}")
    workspace.env["DOCTOR_DB_PASSWORD"] = password
    url = cluster.url(pg_database.name, role)
    workspace.write_policy(
        "shop",
        workspace.base_policy(
            "shop", [{"name": "db", "type": "postgres", "url": url, "password": "env:DOCTOR_DB_PASSWORD"}]
        ),
    )
    try:
        found = privileges(workspace)
        assert found["level"] == "FAIL" and "cannot read" in found["detail"], found
        assert f'GRANT pg_read_all_data TO "{role}";' in found["fix"], found

        # Tables granted, sequences forgotten: what pg_dump trips over first.
        with pg_database.connect() as owner:
            for schema in ("public", "archive"):
                owner.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
                owner.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
        found = privileges(workspace)
        assert found["level"] == "FAIL" and "sequence public.counted_id_seq" in found["detail"], found
        assert "table " not in found["detail"], found

        cluster.psql(f"GRANT pg_read_all_data TO {role}")
        found = privileges(workspace)
        assert found["level"] == "ok" and "pg_read_all_data" in found["detail"], found
        # The fix works: pg_dump as that role now succeeds.
        assert workspace.run("backup", "shop").returncode == 0
    finally:
        with psycopg.connect(
            cluster.url(pg_database.name, "postgres"), password=cluster.password, autocommit=True
        ) as admin:
            admin.execute(f"DROP OWNED BY {role}")
        cluster.psql(f"DROP ROLE {role}")


def test_mariadb_user_missing_privileges_is_named_with_the_grant(
    workspace: Workspace, mariadb_database: MariaDatabase
) -> None:
    server = mariadb_database.server
    user, password = f"ro_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12)
    server.create_user(user, password, [f"SELECT ON `{mariadb_database.name}`.*"], host="%")
    address = urlsplit(mariadb_database.url)
    workspace.env["DOCTOR_MYSQL_PASSWORD"] = password
    source = {
        "name": "maria",
        "type": "mysql",
        "host": address.hostname,
        "port": address.port,
        "user": user,
        "password": "env:DOCTOR_MYSQL_PASSWORD",
        "database": mariadb_database.name,
    }
    workspace.write_policy("shop", workspace.base_policy("shop", [source]))
    try:
        found = privileges(workspace)
        assert found["level"] == "FAIL", found
        assert "lacks SHOW VIEW, TRIGGER, EVENT, LOCK TABLES" in found["detail"], found
        assert f"GRANT SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{mariadb_database.name}`.*" in found["fix"]
        server.sql(
            f"GRANT SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{mariadb_database.name}`.* TO '{user}'@'%'"
        )
        found = privileges(workspace)
        assert found["level"] == "ok", found
    finally:
        server.drop_user(user, host="%")


def test_mysql_grant_parsing() -> None:
    assert (
        mysql_missing(["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"], "shop") == []
    )
    assert (
        mysql_missing(["GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `shop`.* TO `b`@`%`"], "shop")
        == []
    )
    assert mysql_missing(["GRANT SELECT ON `other`.* TO `b`@`%`"], "shop") == [
        "SELECT",
        "SHOW VIEW",
        "TRIGGER",
        "EVENT",
        "LOCK TABLES",
    ]
