"""MariaDB with `via: ssh://...` through the CLI: the policy alone says how to reach the host.

No BACKUPCTL_SSH_* variable and no agent: the key and known_hosts come from the policy's
`via_key_file` and `via_known_hosts`. The "remote" host is a real sshd on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_mysql_cli import checksums
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import EXPECTED_ROWS, MariaDatabase
from tests.fixtures.sshd import SshdServer


@pytest.fixture(autouse=True)
def no_ssh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKUPCTL_SSH_KEY_FILE", "BACKUPCTL_SSH_KNOWN_HOSTS", "SSH_AUTH_SOCK"):
        monkeypatch.delenv(name, raising=False)


def write_via_policy(
    workspace: Workspace, database: MariaDatabase, server: SshdServer, **overrides: Any
) -> None:
    workspace.env["SHOP_MYSQL_PASSWORD"] = database.password
    source = {
        "name": "maria", "type": "mysql", "host": "127.0.0.1", "port": database.server.port,
        "user": database.user, "password": "env:SHOP_MYSQL_PASSWORD", "database": database.name,
        "via": f"ssh://{server.user}@{server.host}:{server.port}",
        "via_key_file": server.key_file, "via_known_hosts": server.known_hosts, **overrides,
    }  # fmt: skip
    workspace.write_policy("shopdb", workspace.base_policy("shopdb", [source]))


def test_via_backup_then_local_restore_has_equal_counts_and_checksums(
    workspace: Workspace, mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    sshd_server: SshdServer,
) -> None:  # fmt: skip
    write_via_policy(workspace, mariadb_database, sshd_server)
    result = workspace.run_json("backup", "shopdb")
    assert result["status"] == "complete"
    facts = result["sources"]["maria"]["facts"]
    assert facts["row_counts"] == EXPECTED_ROWS
    assert facts["dumped_on"] == f"{sshd_server.user}@{sshd_server.host}:{sshd_server.port}"
    assert workspace.run_json("verify", "shopdb", "latest")[0]["ok"]

    done = workspace.run(
        "restore", "shopdb", "latest", "--source", "maria",
        "--to-db", mariadb_empty_database.root_url, "--db-password", "env:MARIA_ROOT",
        env={"MARIA_ROOT": mariadb_empty_database.password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "row counts equal the manifest" in done.stdout
    assert mariadb_database.password not in done.stdout + done.stderr
    tables = sorted(EXPECTED_ROWS)
    assert checksums(mariadb_empty_database, tables) == checksums(mariadb_database, tables)


def test_via_wrong_password_exits_1_with_the_remote_stderr_and_records_nothing(
    workspace: Workspace, mariadb_database: MariaDatabase, sshd_server: SshdServer
) -> None:
    write_via_policy(workspace, mariadb_database, sshd_server)
    done = workspace.run("backup", "shopdb", env={"SHOP_MYSQL_PASSWORD": "definitely-wrong"})
    assert done.returncode == 1, done.stderr
    assert "exited with status 1" in done.stderr
    assert f"Access denied for user '{mariadb_database.user}'" in done.stderr
    assert "definitely-wrong" not in done.stdout + done.stderr
    assert workspace.run_json("snapshots", "shopdb") == []
    assert list(workspace.backups.rglob("manifest.json")) == []


def test_via_unknown_host_key_exits_2_and_writes_nothing(
    workspace: Workspace, mariadb_database: MariaDatabase, sshd_server: SshdServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    write_via_policy(workspace, mariadb_database, sshd_server, via_known_hosts=str(empty))
    done = workspace.run("backup", "shopdb")
    assert done.returncode == 2, done.stderr
    assert f"is not in {empty}" in done.stderr
    assert f"ssh-keyscan -p {sshd_server.port} {sshd_server.host} >> {empty}" in done.stderr
    assert empty.read_text() == ""
    assert workspace.run_json("snapshots", "shopdb") == []
    assert list(workspace.backups.rglob("manifest.json")) == []
