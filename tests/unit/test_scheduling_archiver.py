"""The schedulers keep the asynchronous WAL archiver (`wal archiver`) of a source running:
a systemd service with Restart=always, a cron watchdog line, the daemon's supervised child
(the daemon itself: tests/integration/pitr/test_archiver_scheduled.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backupctl.scheduling import (
    backupctl_argv,
    cron,
    scheduled_policies,
    systemd,
    unscheduled_archivers,
    writable_paths,
)
from backupctl.settings import Settings
from tests.fixtures.core import Workspace
from tests.unit.test_scheduling import run_cli


def write_archiver_policy(space: Workspace, *, pgdata: bool = True) -> Path:
    spool = space.root / "spool"
    archiver: dict[str, object] = {"spool": str(spool), "workers": 3}
    if pgdata:
        archiver |= {"pgdata": "/var/lib/postgresql/15/main", "user": "postgres"}
    sources = [
        {"name": "pg", "type": "postgres", "url": "postgresql://backup@db.example.net/shop",
         "pitr": {"base_backup_schedule": "0 3 * * 0", "archiver": archiver}},
        {"name": "plain", "type": "postgres", "url": "postgresql://backup@db.example.net/crm",
         "pitr": {}},
    ]  # fmt: skip
    targets = [{"name": "local", "type": "local", "path": str(space.root / "backups")}]
    space.write_policy("shop", space.base_policy("shop", sources, targets, schedule="15 2 * * *"))
    return spool


def _settings(space: Workspace) -> Settings:
    return Settings(space.policies, space.state, "sqlite:///x", space.keys)


def test_a_source_with_an_archiver_pgdata_gets_an_archiver_service(workspace: Workspace) -> None:
    spool = write_archiver_policy(workspace)
    items = {(item.kind, item.source): item for item in scheduled_policies(_settings(workspace))}
    assert set(items) == {("backup", None), ("base-backup", "pg"), ("archiver", "pg")}
    archiver = items[("archiver", "pg")]
    assert archiver.service and not items[("base-backup", "pg")].service
    assert archiver.command() == ["wal", "archiver", "shop", "--source", "pg"]  # --pgdata: the policy's
    assert str(spool) in writable_paths(archiver, _settings(workspace))
    assert unscheduled_archivers(list(items.values())) == []


def test_an_archiver_without_pgdata_is_not_scheduled_and_install_says_so(workspace: Workspace) -> None:
    write_archiver_policy(workspace, pgdata=False)
    items = scheduled_policies(_settings(workspace))
    assert {item.kind for item in items} == {"backup", "base-backup"}
    [note] = unscheduled_archivers(items)
    assert note.startswith("shop/pg: pitr.archiver has no pgdata")
    done = run_cli(workspace, "schedule", "install", "--cron", "--dry-run", "--cron-file", "/nonexistent/x")
    assert done.returncode == 0, done.stderr
    assert "shop/pg: pitr.archiver has no pgdata" in done.stderr


def test_the_archiver_service_unit_restarts_always_and_passes_systemd_analyze(
    workspace: Workspace, tmp_path: Path
) -> None:
    program = shutil.which("systemd-analyze")
    if not program:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    spool = write_archiver_policy(workspace)
    settings = _settings(workspace)
    options = systemd.UnitOptions(backupctl_argv(settings, executable=sys.executable), settings.state_dir)
    units: dict[str, str] = {}
    for item in scheduled_policies(settings):
        units.update(systemd.render_units(item, options, writable_paths(item, settings)))
    name = "backupctl-wal-archiver-shop-pg.service"
    assert name in units and "backupctl-wal-archiver-shop-pg.timer" not in units
    lines = units[name].splitlines()
    for expected in ("Type=simple", "User=postgres", "Restart=always", "RestartSec=5s", "KillMode=mixed",
                     f"ReadWritePaths=-{spool}", "WantedBy=multi-user.target"):  # fmt: skip
        assert expected in lines, units[name]
    assert any(
        line.startswith("ExecStart=") and line.endswith("wal archiver shop --source pg") for line in lines
    )
    assert not any(line.startswith(("Nice=", "IOSchedulingClass=")) for line in lines)  # RPO first
    directory = tmp_path / "units"
    systemd.write_units(units, directory)
    done = subprocess.run(
        [program, "verify", *sorted(str(path) for path in directory.iterdir())],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    security = subprocess.run(
        [program, "security", "--offline=true", "--threshold=40", str(directory / name)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert security.returncode == 0, security.stdout[-2000:]
    # install enables and starts the service with the timers; remove disables it
    plan = systemd.plan_install(units, directory, user=False)
    enable = next(command for command in plan.commands if "enable" in command)
    assert name in enable and "backupctl-base-backup-shop-pg.timer" in enable
    assert name not in {path.name for path in plan.delete}
    removal = systemd.plan_remove(directory, user=False)
    disable = next(command for command in removal.commands if "disable" in command)
    assert name in disable and (directory / name) in removal.delete
    # a user unit has no User= and starts with the user's session
    user_options = systemd.UnitOptions(options.argv, settings.state_dir, user=True)
    archiver = next(item for item in scheduled_policies(settings) if item.service)
    user_unit = systemd.render_units(archiver, user_options, [])[name].splitlines()
    assert "WantedBy=default.target" in user_unit and not any(line.startswith("User=") for line in user_unit)


def test_the_cron_line_of_the_archiver_is_a_watchdog_run_as_the_servers_user(workspace: Workspace) -> None:
    spool = write_archiver_policy(workspace)
    settings = _settings(workspace)
    argv = backupctl_argv(settings, executable=sys.executable)
    items = scheduled_policies(settings)
    as_root = cron.render_block(items, cron.CronOptions(argv, settings.state_dir, user_field="root"))
    line = next(line for line in as_root.splitlines() if "wal archiver" in line)
    directory = spool / "shop" / "pg"
    assert line.startswith("* * * * * postgres umask 077; mkdir -p ")  # every minute, as the server's user
    assert f"-n {directory}/archiver.cron.lock sh -c " in line and f">> {directory}/archiver.log 2>&1" in line
    assert "# archiver shop/pg: * * * * *" in as_root
    [backup] = [line for line in as_root.splitlines() if line.startswith("15 2 ")]
    assert backup.startswith("15 2 * * * root ")  # the other jobs keep their user
    personal = cron.render_block(items, cron.CronOptions(argv, settings.state_dir))
    assert next(line for line in personal.splitlines() if "wal archiver" in line).startswith(
        "* * * * * umask"
    )


def test_cli_list_shows_the_archiver_as_always_running(workspace: Workspace) -> None:
    write_archiver_policy(workspace)
    done = run_cli(workspace, "schedule", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {(row["job"], row.get("source")): row for row in json.loads(done.stdout)}
    assert rows[("archiver", "pg")]["schedule"] == "always running" and rows[("archiver", "pg")]["next"] == []


def _wait_exit(process: subprocess.Popen[bytes] | None) -> None:
    assert process is not None
    process.wait(timeout=30)


def test_the_daemon_survives_a_program_that_cannot_be_started_and_tries_again(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Popen that raises (the interpreter vanished in an upgrade) is logged; a timed job runs at
    its next time, a service is started again after its back-off; the daemon itself goes on."""
    from backupctl.scheduling.daemon import Daemon, _Service

    write_archiver_policy(workspace)
    items = {(item.kind, item.source): item for item in scheduled_policies(_settings(workspace))}
    daemon = Daemon(list(items.values()), _settings(workspace))
    service = _Service(items[("archiver", "pg")])
    daemon._services.append(service)
    backup = items[("backup", None)]
    slot = datetime(2026, 3, 1, 2, 15)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")  # a real ENOENT from exec
    daemon._fire(backup, slot)
    daemon._supervise()
    assert daemon._running == {} and service.process is None
    assert service.failures == 1 and service.restart_at > 0
    messages = [record.getMessage() for record in caplog.records]
    assert any("cannot start the backup" in m and "next scheduled time" in m for m in messages)
    assert any("cannot start the archiver (pg)" in m and "trying again" in m for m in messages)
    assert len(daemon._scheduler.get_jobs(backup.name)) == 1  # the next run is armed
    # the program is back: the next run of the timed job and the service's restart both start
    monkeypatch.setattr(sys, "executable", shutil.which("true") or "/bin/true")
    daemon._fire(backup, slot + timedelta(days=1))
    service.restart_at = 0.0
    daemon._supervise()
    running = daemon._running[backup.lane]
    assert service.process is not None and service.starts == 1
    _wait_exit(running.process)
    _wait_exit(service.process)
    daemon._reap()
    assert daemon._running == {}
