"""Children get only the secrets they need (issue #13, item 8): the real CLI backs up PostgreSQL
and MariaDB in one run; mariadb-dump's real environment (read from /proc by a PATH wrapper that
then execs the real tool) holds neither password nor the variables naming them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.fixtures.postgres import PgDatabase


def _spy(directory: Path, tool: str, record: Path) -> None:
    """`directory/tool`: writes its own /proc/self/environ to `record`, then execs the real tool."""
    real = shutil.which(tool)
    assert real, f"{tool} is not installed"
    wrapper = directory / tool
    wrapper.write_text(f'#!/bin/sh\ncat /proc/$$/environ > "{record}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)


def _environ(record: Path) -> dict[str, str]:
    items = [item.split("=", 1) for item in record.read_bytes().decode().split("\0") if "=" in item]
    return {name: value for name, value in items}


def test_each_dump_tool_sees_only_its_own_secret(
    workspace: Workspace, pg_database: PgDatabase, mariadb_database: MariaDatabase, tmp_path: Path
) -> None:
    spies = tmp_path / "bin"
    spies.mkdir()
    maria_env = tmp_path / "mariadb-dump.environ"
    _spy(spies, "mariadb-dump", maria_env)
    address = urlparse(mariadb_database.url)
    workspace.env.update(
        PG_SECRET=pg_database.password,
        MARIA_SECRET=mariadb_database.password,
        PATH=f"{spies}{os.pathsep}{os.environ['PATH']}",
    )
    sources = [
        {"name": "pg", "type": "postgres", "url": pg_database.url, "password": "env:PG_SECRET"},
        {"name": "maria", "type": "mysql", "host": address.hostname, "port": address.port,
         "user": mariadb_database.user, "password": "env:MARIA_SECRET", "database": mariadb_database.name},
    ]  # fmt: skip
    workspace.write_policy("two", workspace.base_policy("two", sources))
    result = workspace.run_json("backup", "two")
    assert result["status"] == "complete"

    seen = _environ(maria_env)
    assert "PATH" in seen  # it is the real environment of the child
    assert "PG_SECRET" not in seen and "MARIA_SECRET" not in seen
    values = set(seen.values())
    assert pg_database.password not in values
    assert mariadb_database.password not in values  # it gets its own through an option-file fd
