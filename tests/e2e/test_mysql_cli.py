"""MariaDB through the CLI: backup → verify → restore, counts and checksums equal."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase


def checksums(database: MariaDatabase, tables: list[str]) -> dict[str, str]:
    quoted = ", ".join("`" + table.replace("`", "``") + "`" for table in tables)
    out = database.sql(f"CHECKSUM TABLE {quoted}")
    return {line.split("\t")[0].split(".", 1)[1]: line.split("\t")[1] for line in out.strip().splitlines()}


def test_mariadb_backup_verify_restore(
    workspace: Workspace, mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase
) -> None:
    address = urlparse(mariadb_database.url)
    workspace.env["SHOP_MYSQL_PASSWORD"] = mariadb_database.password
    workspace.write_policy(
        "shopdb",
        workspace.base_policy(
            "shopdb",
            [
                {
                    "name": "maria",
                    "type": "mysql",
                    "host": address.hostname,
                    "port": address.port,
                    "user": mariadb_database.user,
                    "password": "env:SHOP_MYSQL_PASSWORD",
                    "database": mariadb_database.name,
                }
            ],
        ),
    )
    result = workspace.run_json("backup", "shopdb")
    assert result["status"] == "complete"
    counts = result["sources"]["maria"]["facts"]["row_counts"]
    assert counts and all(isinstance(value, int) for value in counts.values())
    assert workspace.run_json("verify", "shopdb", "latest")[0]["ok"]

    done = workspace.run(
        "restore",
        "shopdb",
        "latest",
        "--source",
        "maria",
        "--to-db",
        mariadb_empty_database.root_url,
        "--db-password",
        "env:MARIA_ROOT",
        env={"MARIA_ROOT": mariadb_empty_database.password},
    )
    assert done.returncode == 0, done.stderr
    assert "row counts equal the manifest" in done.stdout
    assert mariadb_database.password not in done.stdout + done.stderr
    tables = sorted(counts)
    assert checksums(mariadb_empty_database, tables) == checksums(mariadb_database, tables)
