"""Bounded time (issue #13, item 1): an S3 endpoint frozen (SIGSTOP) in the middle of an upload
turns into a failed target within the configured deadlines: the backup exits 3 with the local
copy complete, the policy lock is released, and after SIGCONT `replicate` heals the copy."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.core import Workspace
from tests.fixtures.processes import descendants
from tests.fixtures.s3 import MotoServer
from tests.fixtures.sshd import SshdServer

# Short deadlines so the test is quick; docs/targets.md gives the bound for the defaults.
DEADLINES = {"connect_timeout": "2s", "read_timeout": "3s", "max_attempts": 2}
# max_attempts x (connect + read) + backoff per request, for the part in flight and the parts
# waiting beside it; generous for a loaded machine.
BOUND_SECONDS = 60


def _lock_is_free(space: Workspace, policy: str) -> bool:
    path = space.state / "locks" / f"{policy}.lock"
    if not path.exists():
        return True
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def test_frozen_s3_mid_upload_fails_the_target_in_bounded_time(
    workspace: Workspace, tmp_path: Path, moto_server_factory: Callable[..., MotoServer]
) -> None:
    server = moto_server_factory()
    client = server.client()
    client.create_bucket(Bucket="frozen")
    data = tmp_path / "data"
    data.mkdir()
    for index in range(8):  # 48 MiB that do not compress: ten 5 MiB parts to upload
        (data / f"blob{index}.bin").write_bytes(os.urandom(6 << 20))
    offsite = {"name": "offsite", "type": "s3", "bucket": "frozen", "endpoint_url": server.url,
               "region": "us-east-1", "versioning": "optional", "part_size_mb": 5, "max_concurrency": 2,
               **DEADLINES}  # fmt: skip
    workspace.write_policy(
        "app",
        workspace.base_policy(
            "app",
            [{"name": "files", "type": "files", "path": str(data)}],
            [{"name": "local", "type": "local", "path": str(workspace.backups)}, offsite],
        ),
    )
    backup = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "app"],
        env={**os.environ, **workspace.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not client.list_multipart_uploads(Bucket="frozen").get("Uploads"):
            assert backup.poll() is None, backup.communicate()
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.02)
        server.pause()
        frozen_at = time.monotonic()
        _, stderr = backup.communicate(timeout=BOUND_SECONDS * 3)
        elapsed = time.monotonic() - frozen_at
    finally:
        server.resume()
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 3, stderr
    print(f"frozen endpoint failed the target after {elapsed:.1f}s")
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f}s:\n{stderr}"
    assert "offsite" in stderr
    assert _lock_is_free(workspace, "app")

    server.resume()
    healed = workspace.run_json("replicate", "app")
    assert healed["failed"] == [] and len(healed["copied"]) == 1, healed
    (check,) = workspace.run_json("verify", "app", "--target", "offsite")
    assert check["ok"], check



def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_frozen_sftp_mid_upload_fails_the_target_in_bounded_time(
    workspace: Workspace, tmp_path: Path, sshd_server: SshdServer
) -> None:
    import signal

    data = tmp_path / "data"
    data.mkdir()
    for index in range(8):
        (data / f"blob{index}.bin").write_bytes(os.urandom(6 << 20))
    remote = sshd_server.root / f"frozen-{tmp_path.name}"
    remote.mkdir()
    offsite = {"name": "offsite", "type": "sftp", "host": sshd_server.host, "port": sshd_server.port,
               "user": sshd_server.user, "key_file": sshd_server.key_file,
               "known_hosts": sshd_server.known_hosts, "path": str(remote),
               "connect_timeout": "2s", "read_timeout": "3s"}  # fmt: skip
    workspace.write_policy(
        "app",
        workspace.base_policy(
            "app",
            [{"name": "files", "type": "files", "path": str(data)}],
            [{"name": "local", "type": "local", "path": str(workspace.backups)}, offsite],
        ),
    )
    listener = int((sshd_server.log_file.parent / "sshd.pid").read_text())
    backup = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "app"],
        env={**os.environ, **workspace.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    frozen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not any(path.is_file() and path.stat().st_size > 0 for path in remote.rglob("*")):
            assert backup.poll() is None, backup.communicate()
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.02)
        frozen = [listener, *descendants(listener)]  # the server and this backup's session
        _signal_all(frozen, signal.SIGSTOP)
        frozen_at = time.monotonic()
        _, stderr = backup.communicate(timeout=BOUND_SECONDS * 3)
        elapsed = time.monotonic() - frozen_at
    finally:
        _signal_all(frozen, signal.SIGCONT)
        if backup.poll() is None:
            backup.kill()
    print(f"frozen sshd failed the target after {elapsed:.1f}s")
    assert backup.returncode == 3, stderr
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f}s:\n{stderr}"
    assert "offsite" in stderr
    assert _lock_is_free(workspace, "app")

    healed = workspace.run_json("replicate", "app")
    assert healed["failed"] == [] and len(healed["copied"]) == 1, healed
    (check,) = workspace.run_json("verify", "app", "--target", "offsite")
    assert check["ok"], check


def test_frozen_restic_backend_is_stopped_by_the_stall_deadline(
    workspace: Workspace, tmp_path: Path, moto_server_factory: Callable[..., MotoServer]
) -> None:
    server = moto_server_factory()
    client = server.client()
    client.create_bucket(Bucket="restic-frozen")
    data = tmp_path / "data"
    data.mkdir()
    for index in range(8):
        (data / f"blob{index}.bin").write_bytes(os.urandom(6 << 20))
    workspace.env.update(RESTIC_FROZEN_PASSWORD="restic-frozen-test", RESTIC_AWS_KEY="testing",
                         RESTIC_AWS_SECRET="testing")  # fmt: skip
    dedup = {"name": "dedup", "type": "restic", "repository": f"s3:{server.url}/restic-frozen",
             "password": "env:RESTIC_FROZEN_PASSWORD", "stall_timeout": "5s",
             "environment": {"AWS_ACCESS_KEY_ID": "env:RESTIC_AWS_KEY",
                             "AWS_SECRET_ACCESS_KEY": "env:RESTIC_AWS_SECRET"}}  # fmt: skip
    workspace.write_policy(
        "app",
        workspace.base_policy(
            "app",
            [{"name": "files", "type": "files", "path": str(data)}],
            [{"name": "local", "type": "local", "path": str(workspace.backups)}, dedup],
        ),
    )
    workspace.run("target", "setup", "app", "dedup", check=True)
    backup = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "app"],
        env={**os.environ, **workspace.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not client.list_objects_v2(Bucket="restic-frozen", Prefix="data/").get("KeyCount"):
            assert backup.poll() is None, backup.communicate()
            assert time.monotonic() < deadline, "restic never uploaded data"
            time.sleep(0.02)
        server.pause()
        frozen_at = time.monotonic()
        _, stderr = backup.communicate(timeout=BOUND_SECONDS * 3)
        elapsed = time.monotonic() - frozen_at
    finally:
        server.resume()
        if backup.poll() is None:
            backup.kill()
    print(f"frozen restic backend failed the target after {elapsed:.1f}s")
    assert backup.returncode == 3, stderr
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f}s:\n{stderr}"
    assert "no progress" in stderr, stderr
    assert _lock_is_free(workspace, "app")


def _restic_on_frozen_s3_policy(
    workspace: Workspace, tmp_path: Path, server: MotoServer, bucket: str
) -> Path:
    """A policy with a files source and a sqlite source (a stream: `restic dump`) backed up to
    a local target and a restic repository on `server`; one backup made. The files' directory."""
    import sqlite3

    client = server.client()
    client.create_bucket(Bucket=bucket)
    data = tmp_path / "data"
    data.mkdir()
    (data / "blob.bin").write_bytes(os.urandom(4 << 20))
    database = tmp_path / "app.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        connection.executemany("INSERT INTO t (body) VALUES (?)", [(os.urandom(1024),) for _ in range(2000)])
    workspace.env.update(RESTIC_FROZEN_PASSWORD="restic-frozen-test", RESTIC_AWS_KEY="testing",
                         RESTIC_AWS_SECRET="testing")  # fmt: skip
    dedup = {"name": "dedup", "type": "restic", "repository": f"s3:{server.url}/{bucket}",
             "password": "env:RESTIC_FROZEN_PASSWORD", "stall_timeout": "5s",
             "environment": {"AWS_ACCESS_KEY_ID": "env:RESTIC_AWS_KEY",
                             "AWS_SECRET_ACCESS_KEY": "env:RESTIC_AWS_SECRET"}}  # fmt: skip
    workspace.write_policy(
        "app",
        workspace.base_policy(
            "app",
            [{"name": "files", "type": "files", "path": str(data)},
             {"name": "db", "type": "sqlite", "path": str(database)}],
            [{"name": "local", "type": "local", "path": str(workspace.backups)}, dedup],
        ),
    )  # fmt: skip
    workspace.run("target", "setup", "app", "dedup", check=True)
    workspace.run("backup", "app", check=True)
    return data


def _timed_while_frozen(server: MotoServer, workspace: Workspace, *args: str) -> tuple[int, str, float]:
    """Run `backupctl ARGS` with the server frozen: (exit code, stderr, seconds)."""
    server.pause()
    started = time.monotonic()
    try:
        done = workspace.run(*args, timeout=BOUND_SECONDS * 3)
    finally:
        server.resume()
    return done.returncode, done.stderr, time.monotonic() - started


def test_frozen_restic_backend_bounds_verify_and_restore(
    workspace: Workspace, tmp_path: Path, moto_server_factory: Callable[..., MotoServer]
) -> None:
    """Beyond backups: verify (snapshots, dump, check) and restore (snapshots, restore) of a
    restic copy end within the stall deadline against a frozen backend, with a TargetError that
    says so, and work again once it answers."""
    server = moto_server_factory()
    data = _restic_on_frozen_s3_policy(workspace, tmp_path, server, "restic-frozen-reads")

    code, stderr, elapsed = _timed_while_frozen(server, workspace, "verify", "app", "--target", "dedup")
    print(f"verify against a frozen restic backend ended after {elapsed:.1f}s")
    assert code == 1, stderr  # docs/json.md: a job failed
    assert "no progress" in stderr and "dedup" in stderr, stderr
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f}s:\n{stderr}"

    into = tmp_path / "restored"
    args = ("restore", "app", "--source", "files", "--from", "dedup", "--to-dir", str(into))
    code, stderr, elapsed = _timed_while_frozen(server, workspace, *args)
    print(f"restore against a frozen restic backend ended after {elapsed:.1f}s")
    assert code == 1, stderr
    assert "no progress" in stderr, stderr
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f}s:\n{stderr}"

    # Thawed, the same commands succeed: nothing was left locked or half-done.
    (check,) = workspace.run_json("verify", "app", "--target", "dedup")
    assert check["ok"], check
    workspace.run("restore", "app", "--source", "files", "--from", "dedup", "--to-dir", str(into), "--force",
                  check=True)  # fmt: skip
    assert (into / "blob.bin").read_bytes() == (data / "blob.bin").read_bytes()
