"""The schedulers run the jobs of point-in-time archives: base backups, binlog collection."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupctl.core.cronexpr import CronExpr
from backupctl.scheduling import Scheduled, backupctl_argv, cron, scheduled_policies, systemd, writable_paths
from backupctl.scheduling.pitr_jobs import interval_cron
from backupctl.settings import Settings
from tests.fixtures.core import Workspace
from tests.unit.test_scheduling import FakeProcess, run_cli


def write_pitr_policy(space: Workspace) -> None:
    sources = [
        {"name": "pg", "type": "postgres", "url": "postgresql://backup@db.example.net/shop",
         "pitr": {"base_backup_schedule": "0 3 * * 0"}},
        {"name": "db", "type": "mysql", "user": "backup", "database": "shop", "pitr": {"rpo": "15m"}},
        {"name": "fast", "type": "mysql", "user": "backup", "database": "blog",
         "pitr": {"rpo": "15m", "interval": "10s"}},
        {"name": "plain", "type": "postgres", "url": "postgresql://backup@db.example.net/crm"},
    ]  # fmt: skip
    targets = [{"name": "local", "type": "local", "path": str(space.root / "backups")}]
    space.write_policy("shop", space.base_policy("shop", sources, targets, schedule="15 2 * * *"))


def _settings(space: Workspace) -> Settings:
    return Settings(space.policies, space.state, "sqlite:///x", space.keys)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (timedelta(seconds=10), "* * * * *"),
        (timedelta(minutes=5), "*/5 * * * *"),
        (timedelta(minutes=7), "*/6 * * * *"),  # never less often than the interval
        (timedelta(minutes=45), "*/30 * * * *"),
        (timedelta(hours=1), "0 * * * *"),
        (timedelta(hours=5), "0 */4 * * *"),
        (timedelta(days=2), "0 0 * * *"),
    ],
)
def test_interval_cron_fires_at_least_every_interval(interval: timedelta, expected: str) -> None:
    assert interval_cron(interval) == expected
    runs = CronExpr.parse(expected).next_runs(datetime(2026, 3, 1, 0, 0), 30)
    gaps = {later - earlier for earlier, later in itertools.pairwise(runs)}
    assert max(gaps) <= max(interval, timedelta(minutes=1))


def test_scheduled_policies_add_base_backups_and_binlog_collection(workspace: Workspace) -> None:
    write_pitr_policy(workspace)
    jobs = {(item.kind, item.source): item for item in scheduled_policies(_settings(workspace))}
    assert set(jobs) == {("backup", None), ("base-backup", "pg"), ("binlog", "db"), ("binlog", "fast")}
    base, binlog, fast = jobs[("base-backup", "pg")], jobs[("binlog", "db")], jobs[("binlog", "fast")]
    assert base.cron.text == "0 3 * * 0" and base.command() == [
        "wal",
        "base-backup",
        "shop",
        "--source",
        "pg",
    ]
    assert binlog.cron.text == "*/5 * * * *"  # rpo 15m / 3
    assert binlog.command() == ["binlog", "collect", "shop", "--source", "db"]
    assert fast.cron.text == "* * * * *"
    assert {item.lane for item in jobs.values()} == {"shop", "base-backup:shop-pg", "binlog:shop-db",
                                                     "binlog:shop-fast"}  # fmt: skip
    assert str(workspace.root / "backups") in writable_paths(binlog, _settings(workspace))


def test_pitr_units_are_named_per_source_and_pass_systemd_analyze(
    workspace: Workspace, tmp_path: Path
) -> None:
    program = shutil.which("systemd-analyze")
    if not program:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    write_pitr_policy(workspace)
    settings = _settings(workspace)
    options = systemd.UnitOptions(backupctl_argv(settings, executable=sys.executable), settings.state_dir)
    units: dict[str, str] = {}
    for item in scheduled_policies(settings):
        units.update(systemd.render_units(item, options, writable_paths(item, settings)))
    assert set(units) == {
        f"backupctl-{kind}-{slot}.{suffix}"
        for kind, slot in [("backup", "shop"), ("base-backup", "shop-pg"), ("binlog", "shop-db"),
                           ("binlog", "shop-fast")]
        for suffix in ("service", "timer")
    }  # fmt: skip
    service = units["backupctl-binlog-shop-db.service"]
    assert any(line.endswith("binlog collect shop --source db") for line in service.splitlines())
    timer = units["backupctl-binlog-shop-db.timer"]
    assert "OnCalendar=*-*-* *:00,05,10,15,20,25,30,35,40,45,50,55:00" in timer
    assert "RandomizedDelaySec=30" in timer  # a tenth of the interval, not the 5 minutes of backups
    assert "RandomizedDelaySec=300" in units["backupctl-base-backup-shop-pg.timer"]
    assert "OnCalendar=Sun *-*-* 03:00:00" in units["backupctl-base-backup-shop-pg.timer"]
    directory = tmp_path / "units"
    systemd.write_units(units, directory)
    done = subprocess.run(
        [program, "verify", *sorted(str(path) for path in directory.iterdir())],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Installed units are found again (and removed by `schedule remove`).
    assert {path.name for path in systemd.installed_units(directory)} == set(units)


def test_cron_lines_of_pitr_jobs_have_their_own_lock_and_log(workspace: Workspace) -> None:
    write_pitr_policy(workspace)
    settings = _settings(workspace)
    options = cron.CronOptions(backupctl_argv(settings, executable=sys.executable), settings.state_dir)
    block = cron.render_block(scheduled_policies(settings), options)
    line = next(line for line in block.splitlines() if "binlog collect" in line)
    assert (
        line.startswith("*/5 * * * * ")
        and "shop-db.binlog.cron.lock" in line
        and "shop-db.binlog.log" in line
    )


def test_daemon_runs_binlog_collection_beside_a_running_backup(tmp_path: Path, workspace: Workspace) -> None:
    """A PITR job has a lane of its own: a long backup of the policy does not hold it up."""
    from backupctl.scheduling.daemon import Daemon, _Running

    write_pitr_policy(workspace)
    settings = _settings(workspace)
    items = {(item.kind, item.source): item for item in scheduled_policies(settings)}
    started: list[str] = []

    class Recording(Daemon):
        def _start(self, item: Scheduled) -> None:
            started.append(item.job)
            process: Any = FakeProcess(1000 + len(started))
            self._running[item.lane] = _Running(item, process, 0.0)

    daemon = Recording(list(items.values()), settings)
    slot = datetime(2026, 3, 1, 2, 15)
    daemon._fire(items[("backup", None)], slot)
    daemon._fire(items[("binlog", "db")], slot)
    daemon._fire(items[("binlog", "db")], slot)  # the previous pass still runs: skipped, not queued
    daemon._fire(items[("base-backup", "pg")], slot)
    assert started == ["backup", "binlog (db)", "base-backup (pg)"]
    assert daemon._waiting.get("binlog:shop-db", []) == []


def test_cli_list_shows_the_pitr_jobs(workspace: Workspace) -> None:
    write_pitr_policy(workspace)
    done = run_cli(workspace, "schedule", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {(row["job"], row.get("source")): row for row in json.loads(done.stdout)}
    assert rows[("binlog", "db")]["schedule"] == "*/5 * * * *" and len(rows[("binlog", "db")]["next"]) == 3
    assert rows[("base-backup", "pg")]["schedule"] == "0 3 * * 0"
