"""`backupctl daemon` as a real process: it starts a scheduled backup, SIGTERM arrives mid-backup,
the backup aborts cleanly (no snapshot recorded, no temp file left) and the daemon exits 0; it runs
a due drill, never at the same time as its policy's backup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.core import Workspace
from tests.fixtures.daemon import run_daemon_until

BIG_FILE_MB = 200


def make_slow_source(root: Path) -> Path:
    """~200 MB of random data: incompressible, so zstd at a high level takes many seconds."""
    data = root / "data"
    data.mkdir()
    (data / "small.txt").write_text("hello\n")
    with open(data / "big.bin", "wb") as handle:
        for _ in range(BIG_FILE_MB):
            handle.write(os.urandom(1 << 20))
    return data


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*.tmp-*") if path.is_file()] if root.exists() else []


def test_sigterm_during_a_backup_records_no_snapshot(workspace: Workspace) -> None:
    data = make_slow_source(workspace.root)
    policy = workspace.base_policy(
        "nightly",
        [{"name": "files", "type": "files", "path": str(data)}],
        schedule="* * * * *",
        # ~9 MB/s on random data: the signal lands mid-backup, and a zstd job (16 MiB at this
        # level; a worker finishes its job before the process can exit) still ends quickly.
        compression={"level": 15, "threads": 1},
    )
    workspace.write_policy("nightly", policy)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "daemon", "--run-now", "--stop-timeout", "60s"],
        env={**os.environ, **workspace.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the backup streams into its temp file on the target.
        deadline = time.monotonic() + 60
        while not any(path.stat().st_size > 0 for path in temp_files(workspace.backups)):
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the daemon never started writing a backup"
            time.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, stderr
    assert time.monotonic() - signalled < 30, "the backup did not abort promptly"
    assert "policy nightly: backup started" in stderr
    assert "received SIGTERM: stopping" in stderr and "asking the running backup" in stderr
    assert "daemon stopped" in stderr and "had to be killed" not in stderr
    assert "policy nightly: backup (pid" in stderr  # its end was reaped and logged

    # No complete snapshot; the attempt is recorded as failed; nothing half-written is left.
    assert workspace.run_json("snapshots", "nightly") == []
    attempts = json.loads(workspace.run("snapshots", "nightly", "--all", "--json", check=True).stdout)
    assert [item["status"] for item in attempts] == ["failed"]
    # "interrupted" is what run_backup records for Terminated. While core/pipeline.encrypt_stream
    # lets pyrage wrap the Terminated raised in its read callback, it is "EncryptError: Terminated".
    assert attempts[0]["error"] == "interrupted" or "Terminated" in attempts[0]["error"]
    assert temp_files(workspace.backups) == []

    # The next backup works.
    (data / "big.bin").unlink()
    result = workspace.run_json("backup", "nightly")
    assert result["status"] == "complete"
    assert [item["id"] for item in workspace.run_json("snapshots", "nightly")] == [result["snapshot_id"]]


def test_daemon_runs_a_due_drill_after_the_backup_of_its_policy(workspace: Workspace) -> None:
    """Drill and backup of one policy never overlap: the drill due while the backup runs waits for
    it, then passes on the snapshot that backup made (the policy's default drill: a files source
    restored and tree-hashed)."""
    data = workspace.root / "data"
    data.mkdir()
    for index in range(20):
        (data / f"file-{index}.txt").write_text(f"content {index}\n" * 100)
    never_soon = "0 0 1 1 *"  # only --run-now/--drill-now start these jobs during the test
    workspace.write_policy(
        "nightly",
        workspace.base_policy(
            "nightly",
            [{"name": "files", "type": "files", "path": str(data)}],
            schedule=never_soon,
            drill_schedule=never_soon,
        ),
    )
    code, stderr = run_daemon_until(workspace, ["--run-now", "--drill-now"], "policy nightly: drill (pid")
    assert code == 0, stderr
    events = [
        line.split("policy nightly: ", 1)[1] for line in stderr.splitlines() if "policy nightly: " in line
    ]
    events = [event for event in events if not event.startswith("next ")]
    started = [index for index, event in enumerate(events) if " started (pid" in event]
    assert [events[index].split()[0] for index in started] == ["backup", "drill"], stderr
    backup_pid = events[started[0]].split("(pid ")[1].rstrip(")")
    assert any(f"drill waits for the running backup (pid {backup_pid})" in event for event in events), stderr
    backup_done = next(index for index, event in enumerate(events) if event.startswith("backup (pid"))
    assert "complete after" in events[backup_done] and backup_done < started[1], stderr
    assert any(event.startswith("drill (pid") and " passed after " in event for event in events), stderr
    assert "daemon stopped" in stderr and "had to be killed" not in stderr

    (drill,) = workspace.run_json("drills", "nightly")
    (snapshot_line,) = [line for line in stderr.splitlines() if "INFO backup nightly: snapshot " in line]
    assert drill["ok"] and drill["drill"] == "nightly-default"
    assert drill["snapshot_id"] == snapshot_line.rsplit(" ", 1)[1]
