"""The `backupctl binlog` commands as a subprocess: collect, status + metrics, restore plan, prune."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from random import Random

import pytest

from backupctl.actions.binlog_drill import pick_point
from backupctl.metrics import parse_metrics
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.integration.pitr_mysql.pitr import SOURCE, make_pitr


def test_binlog_cli_collect_status_plan_and_prune(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    binlog_database.sql("INSERT INTO orders (label) VALUES ('before the first dump');")
    binlog_database.server.sql("FLUSH BINARY LOGS")  # so that a binlog older than the dump exists
    workspace.run("backup", "shop", check=True)
    time.sleep(1.1)  # binlog events carry whole seconds: the next write lands after the dump's second
    binlog_database.sql("INSERT INTO orders (label) VALUES ('after the first dump');")
    metrics = workspace.root / "binlog.prom"
    collected = workspace.run_json(
        "binlog", "collect", "shop", "--source", SOURCE, "--metrics-file", str(metrics)
    )
    assert collected["ok"] and collected["flushed"] and collected["archived"]
    status = workspace.run_json("binlog", "status", "shop", "--source", SOURCE)
    assert status["ok"] and status["rpo_seconds"] < 60 and status["gaps"] == []
    samples = {name: value for name, _labels, value in parse_metrics(metrics.read_text())}
    assert samples["backupctl_binlog_ok"] == 1 and samples["backupctl_binlog_gaps"] == 0
    assert samples["backupctl_binlog_files"] == status["files"]

    plan = workspace.run_json("restore", "shop", "--source", SOURCE, "--latest", "--dry-run")
    assert plan["dry_run"] and plan["plan"]["binlogs"] and plan["plan"]["start_position"] > 0
    refused = workspace.run("binlog", "restore", "shop", "--source", SOURCE, "--to-time", "yesterday")
    assert refused.returncode == 2 and "expected an ISO time" in refused.stderr

    first_dump_file = plan["plan"]["dump"]["file"]
    with pitr.archive() as archive:
        older = [item.name for item in archive.binlogs() if item.name < first_dump_file]
        newest = max(item.covered_until for item in archive.binlogs())
        random_points = {pick_point(pitr.policy, SOURCE, archive, pitr.settings, "random", Random(seed))
                         for seed in range(5)}  # fmt: skip
    dump_finished = datetime.fromisoformat(plan["plan"]["dump"]["finished"]).timestamp()
    assert all(
        moment is not None and dump_finished < moment.timestamp() <= newest for moment in random_points
    )
    assert older, "binlogs from before the first dump are archived too (the first pass takes all)"
    pruned = workspace.run_json("binlog", "prune", "shop", "--source", SOURCE, "--dry-run")
    assert pruned["removed"] == {"local": older} and pruned["keep_from"] == first_dump_file
    done = json.loads(
        workspace.run("binlog", "prune", "shop", "--source", SOURCE, "--json", check=True).stdout
    )
    assert done["removed"] == {"local": older}
    assert workspace.run_json("binlog", "verify", "shop", "--source", SOURCE)["ok"]

    doctor = json.loads(workspace.run("doctor", "shop", "--json").stdout)
    binlog_checks = [item for item in doctor["findings"] if item["check"] == f"shop/{SOURCE}: binlog"]
    assert len(binlog_checks) == 7 and all(item["ok"] for item in binlog_checks), binlog_checks


def test_watching_collector_survives_a_server_restart_and_catches_up(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    workspace.run("backup", "shop", check=True)
    argv = [sys.executable, "-m", "backupctl", "binlog", "collect", "shop", "--source", SOURCE, "--watch",
            "--every", "1s"]  # fmt: skip
    watcher = subprocess.Popen(argv, env={**os.environ, **workspace.env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        binlog_database.server.stop()
        time.sleep(2.5)  # passes fail while the server is down: warned, not fatal
        binlog_database.server.start()
        binlog_database.sql("INSERT INTO orders (label) VALUES ('after the restart');")
        wanted = binlog_database.server.sql("SELECT @@gtid_binlog_pos").strip()
        deadline = time.monotonic() + 60
        while True:
            with pitr.archive() as archive:
                chain = archive.binlogs()
            if chain and chain[-1].facts["gtid_end"] == wanted:
                break
            assert watcher.poll() is None, "the watching collector must not exit"
            assert time.monotonic() < deadline, "the archive did not catch up after the restart"
            time.sleep(0.5)
    finally:
        watcher.send_signal(signal.SIGTERM)
        _out, errors = watcher.communicate(timeout=30)
    assert "failed" in errors, "the passes that found the server down were reported"
    status = workspace.run_json("binlog", "status", "shop", "--source", SOURCE)
    assert status["ok"] and status["gaps"] == []
