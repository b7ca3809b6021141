"""Helpers for the PITR tests: a policy with binlog archiving on a local target, run in-process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.binlog import CollectReport, run_collect
from backupctl.pitr.mysql_archive import open_binlog_archive
from backupctl.policy.loader import LoadedPolicy, load_policy
from backupctl.settings import Settings
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase

PASSWORD_ENV = "BACKUPCTL_TEST_PITR_PASSWORD"
SOURCE = "shop-db"


@dataclass
class Pitr:
    """A policy `shop` whose source `shop-db` archives binlogs, and the database behind it."""

    workspace: Workspace
    database: MariaDatabase
    settings: Settings
    loaded: LoadedPolicy

    @property
    def policy(self) -> Any:
        return self.loaded.policy

    def backup(self) -> str:
        return run_backup(self.settings, self.loaded).snapshot_id

    def collect(self) -> CollectReport:
        with open_binlog_archive(self.settings, self.policy, SOURCE) as archive:
            return run_collect(self.policy, SOURCE, archive)

    def archive(self) -> Any:
        return open_binlog_archive(self.settings, self.policy, SOURCE)

    def archived_path(self, name: str) -> Path:
        """Where a binlog's encrypted data lives on the local target (pitr.archive's layout)."""
        return self.workspace.backups / "shop" / "pitr" / SOURCE / "segments" / f"{name}.zst.age"


def make_pitr(
    workspace: Workspace, database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, **binlog: Any
) -> Pitr:
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    workspace.env[PASSWORD_ENV] = database.password
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    source = {
        "name": SOURCE, "type": "mysql", "host": "127.0.0.1", "port": database.server.port,
        "user": database.user, "password": f"env:{PASSWORD_ENV}", "database": database.name,
        "pitr": {"rpo": "15m", "interval": "10s", **binlog},
    }  # fmt: skip
    path = workspace.write_policy("shop", workspace.base_policy("shop", [source]))
    return Pitr(workspace, database, Settings.resolve(), load_policy(path))


def server_stamp(moment: datetime) -> str:
    """`moment` as the server's DATETIME literal (the test server runs with time zone +00:00)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
