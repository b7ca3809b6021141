"""`backupctl daemon` as a real process runs binlog collection for a source with binlog archiving."""

from __future__ import annotations

import pytest

from tests.fixtures.core import Workspace
from tests.fixtures.daemon import run_daemon_until
from tests.fixtures.mariadb import MariaDatabase
from tests.integration.pitr_mysql.pitr import SOURCE, make_pitr


def test_the_daemon_collects_binlogs_without_a_backup_schedule(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)  # no `schedule:`: only the binlog job
    binlog_database.sql("INSERT INTO orders (label) VALUES ('collected by the daemon');")
    # The marker: the pass ended and was reaped.
    code, text = run_daemon_until(
        workspace, ["--run-now", "--stop-timeout", "30s"], f"binlog ({SOURCE}) (pid"
    )
    assert code == 0, text
    assert "policy shop: next binlog at" in text and f"binlog ({SOURCE}) started" in text, text
    assert f"binlog ({SOURCE}) (pid" in text and "collected after" in text, text
    with pitr.archive() as archive:
        archived = archive.binlogs()
    assert archived, "the daemon's pass archived the server's binlogs"
    status = workspace.run_json("binlog", "status", "shop", "--source", SOURCE)
    assert status["ok"] and status["files"] == len(archived)
