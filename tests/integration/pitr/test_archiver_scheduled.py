"""The schedulers keep the real `wal archiver` running: the daemon supervises it (start, restart
after it dies, stop on SIGTERM) and cron's watchdog line starts it only when none runs."""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from backupctl.pitr import spool as spool_lib
from backupctl.scheduling import backupctl_argv, cron, scheduled_policies
from backupctl.settings import Settings
from tests.integration.pitr.conftest import SOURCE, PitrSetup, _interpreter_and_path
from tests.integration.pitr.test_wal_archiver import ASYNC, Async, _segments


def _wait(condition: Callable[[], object], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what} within {timeout}s\n{detail}")
        time.sleep(0.2)


def _scheduled_case(setup: PitrSetup, segments: list[tuple[str, bytes]]) -> Async:
    """An `Async` case whose policy names its data directory: the schedulers run its archiver."""
    case = Async(setup, segments).local_policy()
    policy_file = setup.policies / f"{ASYNC}.yaml"
    policy = yaml.safe_load(policy_file.read_text())
    policy["sources"][0]["pitr"]["archiver"]["pgdata"] = str(case.pgdata)
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False))
    return case


def _archiver_pid(case: Async) -> int | None:
    return spool_lib.archiver_running(case.spool, ASYNC, SOURCE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def test_the_daemon_starts_restarts_and_stops_the_archiver(pitr_cluster: PitrSetup) -> None:
    """Run as root (as in a container), the daemon starts the archiver as `pitr.archiver.user`."""
    case = _scheduled_case(pitr_cluster, _segments(pitr_cluster, 1))
    log = case.spool.parent / "daemon.log"
    # an interpreter the server's user can run too (the venv's may live under /root): conftest
    interpreter, python_path = _interpreter_and_path()
    with open(log, "w", encoding="utf-8") as stderr:
        daemon = subprocess.Popen(
            [interpreter, "-m", "backupctl", "daemon", ASYNC, "--stop-timeout", "30s"],
            env={**os.environ, **pitr_cluster.env, "PYTHONPATH": python_path},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        # started with the daemon: it pushes the ready segment and acknowledges it
        _wait(lambda: case.ack(case.names[0]).exists(), 60, "the supervised archiver acked nothing", log)
        first = _archiver_pid(case)
        assert first is not None and first > 0
        if os.geteuid() == 0:  # the spool is the server user's: the archiver runs as that user
            uid = int(Path(f"/proc/{first}/status").read_text().split("Uid:")[1].split()[0])
            assert uid == pwd.getpwnam("postgres").pw_uid
        assert f"archiver ({SOURCE}) started (pid {first})" in log.read_text()
        # it dies: the daemon starts it again (back-off 1 s) and the new one does the work
        case.ack(case.names[0]).unlink()
        os.kill(first, signal.SIGKILL)
        _wait(lambda: (_archiver_pid(case) or first) != first, 30, "the archiver was not restarted", log)
        second = _archiver_pid(case)
        assert second is not None and second != first
        text = log.read_text()
        assert "exited (exit -9)" in text and "restarting in 1s" in text, text
        assert f"archiver ({SOURCE}) restarted (pid {second})" in text, text
        _wait(lambda: case.ack(case.names[0]).exists(), 60, "the restarted archiver acked nothing", log)
        # SIGTERM: the daemon stops the archiver (which exits 0) and then itself, with 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log.read_text()
        assert "daemon stopped\n" in log.read_text()
        assert second is not None and not _alive(second)
        assert _archiver_pid(case) is None
        assert f"archiver ({SOURCE}) (pid {second}) stopped" in log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if (pid := _archiver_pid(case)) is not None and pid > 0:
            os.kill(pid, signal.SIGKILL)


def test_the_cron_watchdog_line_starts_the_archiver_only_when_none_runs(pitr_cluster: PitrSetup) -> None:
    case = _scheduled_case(pitr_cluster, _segments(pitr_cluster, 1))
    settings = Settings(pitr_cluster.policies, pitr_cluster.root / "state", "sqlite:///x", pitr_cluster.keys)
    items = [item for item in scheduled_policies(settings) if item.service and item.name == ASYNC]
    options = cron.CronOptions(
        backupctl_argv(settings, executable=str(pitr_cluster.wrapper)), settings.state_dir
    )
    line = cron.render_line(items[0], options)
    fields = line.split(" ", 5)
    assert fields[:5] == ["*"] * 5
    command = fields[5].replace("\\%", "%")  # what cron hands to sh
    env = {**os.environ, **pitr_cluster.env}
    minute = subprocess.Popen(_as_server_user(["sh", "-c", command]), env=env, start_new_session=True)
    try:
        _wait(lambda: case.ack(case.names[0]).exists(), 60, "the watchdog's archiver acked nothing")
        running = _archiver_pid(case)
        assert running is not None and running > 0
        # the next minute: the lock is held, so the line exits at once and starts nothing
        started = time.monotonic()
        again = subprocess.run(_as_server_user(["sh", "-c", command]), env=env, timeout=30, check=False)
        assert again.returncode == 1 and time.monotonic() - started < 5
        assert _archiver_pid(case) == running
        directory = case.spool / ASYNC / SOURCE
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        assert f"archiver of {ASYNC}/{SOURCE}: watching" in (directory / "archiver.log").read_text()
    finally:
        os.killpg(minute.pid, signal.SIGTERM)
        minute.wait(timeout=60)
    assert _archiver_pid(case) is None
    assert "archiver stopped" in (case.spool / ASYNC / SOURCE / "archiver.log").read_text()
    assert shlex.split(command)  # a single, well-formed shell command
