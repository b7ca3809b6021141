"""`backupctl daemon` as a real process runs binlog collection for a source with binlog archiving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.integration.pitr_mysql.pitr import SOURCE, make_pitr


def test_the_daemon_collects_binlogs_without_a_backup_schedule(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)  # no `schedule:`: only the binlog job
    binlog_database.sql("INSERT INTO orders (label) VALUES ('collected by the daemon');")
    log = workspace.root / "daemon.log"
    with open(log, "w", encoding="utf-8") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "backupctl", "daemon", "--run-now", "--stop-timeout", "30s"],
            env={**os.environ, **workspace.env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while f"binlog ({SOURCE}) (pid" not in log.read_text():  # the pass ended and was reaped
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    text = log.read_text()
    assert daemon.returncode == 0, text
    assert "policy shop: next binlog at" in text and f"binlog ({SOURCE}) started" in text, text
    assert f"binlog ({SOURCE}) (pid" in text and "collected after" in text, text
    with pitr.archive() as archive:
        archived = archive.binlogs()
    assert archived, "the daemon's pass archived the server's binlogs"
    status = workspace.run_json("binlog", "status", "shop", "--source", SOURCE)
    assert status["ok"] and status["files"] == len(archived)
