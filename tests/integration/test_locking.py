"""The per-policy lock: real processes contend for it; a SIGKILLed holder's lock is taken over;
with a PostgreSQL catalog the advisory lock excludes runs that share no state directory (hosts)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backupctl.locking import LockBusy, lock_path, policy_lock, read_holder
from backupctl.settings import Settings
from tests.fixtures.postgres import PgDatabase

# Holds the lock of policy "shop", says "locked", then keeps it for argv[2] seconds (or until killed).
HOLDER = """
import json, sys, time
from datetime import timedelta
from backupctl.locking import policy_lock
from backupctl.settings import Settings
config = json.loads(sys.argv[1])
settings = Settings.resolve(config["policies"], config["state"], config["catalog"])
with policy_lock(settings, "shop", "backup", timedelta(seconds=30)):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def settings_for(root: Path, catalog: str | None = None) -> Settings:
    return Settings.resolve(str(root / "policies"), str(root / "state"), catalog)


def start_holder(settings: Settings, seconds: float) -> subprocess.Popen[str]:
    config = {
        "policies": str(settings.policies),
        "state": str(settings.state_dir),
        "catalog": settings.catalog_url,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, json.dumps(config), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "locked\n", process.stderr.read() if process.stderr else line
    return process


def try_in_other_process(settings: Settings) -> str:
    """Ask for the lock once, without waiting, from another process: 'locked' or 'busy: ...'."""
    code = (
        "import sys; from backupctl.locking import LockBusy, policy_lock; "
        "from backupctl.settings import Settings\n"
        "try:\n    with policy_lock(Settings.resolve(*sys.argv[1:4]), 'shop', 'backup'): print('locked')\n"
        "except LockBusy as error:\n    print('busy:', error)"
    )
    args = [str(settings.policies), str(settings.state_dir), settings.catalog_url]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_second_run_fails_at_once_naming_the_holder(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    settings = settings_for(tmp_path)
    holder = start_holder(settings, 30)
    holders.append(holder)
    began = time.monotonic()
    with pytest.raises(LockBusy) as caught, policy_lock(settings, "shop", "prune"):
        pytest.fail("the lock was granted twice")
    assert time.monotonic() - began < 2
    message = str(caught.value)
    assert f"pid {holder.pid}" in message and socket.gethostname() in message and "backup" in message
    assert caught.value.holder is not None
    since = datetime.fromisoformat(caught.value.holder.since)
    assert abs((datetime.now(since.tzinfo) - since).total_seconds()) < 60
    assert caught.value.exit_code == 1
    # Other policies are independent.
    with policy_lock(settings, "web", "backup"):
        pass


def test_nested_lock_in_one_process_is_granted(tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    """A backup that prunes afterwards holds the lock once; the nested request must not deadlock."""
    settings = settings_for(tmp_path)
    with policy_lock(settings, "shop", "backup") as me:
        with policy_lock(settings, "shop", "prune") as inner:
            assert inner == me and read_holder(settings, "shop") == me
        assert read_holder(settings, "shop") == me  # the inner exit did not release it
        assert try_in_other_process(settings).startswith("busy: policy 'shop' is locked")
    assert read_holder(settings, "shop") is None  # released: the description is gone
    assert try_in_other_process(settings) == "locked"


def test_wait_gets_the_lock_when_the_holder_finishes(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    settings = settings_for(tmp_path)
    holders.append(start_holder(settings, 1.5))
    began = time.monotonic()
    with policy_lock(settings, "shop", "backup", timedelta(seconds=20), poll_seconds=0.1) as me:
        assert me.pid == os.getpid()
        waited = time.monotonic() - began
    assert 0.5 < waited < 10
    # A wait that is too short still fails, and says how long it waited.
    holders.append(start_holder(settings, 30))
    with (
        pytest.raises(LockBusy, match="after waiting 1s"),
        policy_lock(settings, "shop", "backup", timedelta(seconds=1), poll_seconds=0.1),
    ):
        pass


def test_lock_of_a_killed_process_is_taken_over(
    tmp_path: Path, holders: list[subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    holder = start_holder(settings, 300)
    holders.append(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    left = read_holder(settings, "shop")
    assert left is not None and left.pid == holder.pid  # the dead run's description is still there
    with (
        caplog.at_level(logging.INFO, logger="backupctl.locking"),
        policy_lock(settings, "shop", "backup") as me,
    ):
        assert read_holder(settings, "shop") == me
    assert f"pid {holder.pid}" in caplog.text and "no longer exists" in caplog.text
    assert lock_path(settings, "shop").exists()


# --------------------------------------------------------------------------- across hosts
def pg_url(database: PgDatabase) -> str:
    return database.cluster.url(database.name, database.user, database.password)


def test_advisory_lock_excludes_runs_on_other_hosts(
    tmp_path: Path, pg_empty_database: PgDatabase, holders: list[subprocess.Popen[str]]
) -> None:
    url = pg_url(pg_empty_database)
    # Two state directories = two hosts: only the shared catalog connects them.
    host_a, host_b = settings_for(tmp_path / "a", url), settings_for(tmp_path / "b", url)
    holder = start_holder(host_a, 2)
    holders.append(holder)
    with pytest.raises(LockBusy) as caught, policy_lock(host_b, "shop", "drill"):
        pytest.fail("the advisory lock was granted twice")
    assert f"pid {holder.pid}" in str(caught.value) and socket.gethostname() in str(caught.value)
    assert caught.value.holder is not None and caught.value.holder.purpose == "backup"
    assert url.split("@")[0].split(":")[-1] not in str(caught.value)  # no password in messages

    with policy_lock(host_b, "shop", "drill", timedelta(seconds=20), poll_seconds=0.1):
        assert holder.wait(timeout=10) == 0  # we got it because the holder finished
        # While we hold it, host A is refused in turn.
        with pytest.raises(LockBusy, match="drill"), policy_lock(host_a, "shop", "backup"):
            pass


def test_advisory_lock_of_a_killed_process_is_released(
    tmp_path: Path, pg_empty_database: PgDatabase, holders: list[subprocess.Popen[str]]
) -> None:
    url = pg_url(pg_empty_database)
    holder = start_holder(settings_for(tmp_path / "a", url), 300)
    holders.append(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # PostgreSQL ends the dead client's session (and its advisory lock) when the socket closes.
    with policy_lock(
        settings_for(tmp_path / "b", url), "shop", "backup", timedelta(seconds=10), poll_seconds=0.1
    ):
        pass


def test_unreachable_postgres_catalog_is_a_config_error(tmp_path: Path) -> None:
    from backupctl.errors import ConfigError

    settings = settings_for(tmp_path, "postgresql://nobody:secret@127.0.0.1:9/none")
    with pytest.raises(ConfigError) as caught, policy_lock(settings, "shop", "backup"):
        pass
    assert "secret" not in str(caught.value)
    with policy_lock(settings_for(tmp_path), "shop", "backup"):  # the file lock was released
        pass
