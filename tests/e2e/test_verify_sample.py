"""`verify --sample N%` reads about N% of the stored bytes per run, least recently read copies
first, so that every copy is read within ceil(100/N) runs (one cycle); restic targets rotate
`check --read-data-subset n/t`. A policy's `verify:` block schedules it like backups and drills."""

from __future__ import annotations

import os
from pathlib import Path

from tests.fixtures.core import Workspace


def test_sampled_verify_reads_every_copy_within_one_cycle(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    workspace.env["VS_RESTIC_PASSWORD"] = "verify-sample-password"
    workspace.write_policy("app", workspace.base_policy("app", [
        {"name": "files", "type": "files", "path": str(data)},
    ], [
        {"name": "local", "type": "local", "path": str(workspace.backups)},
        {"name": "dedup", "type": "restic", "repository": str(tmp_path / "restic"),
         "password": "env:VS_RESTIC_PASSWORD", "medium": "disk"},
    ], verify={"schedule": "30 4 * * *", "sample": "50%"}))  # fmt: skip
    workspace.run("target", "setup", "app", "dedup", check=True)
    snapshots = []
    for size in (66, 66, 64, 64):  # KiB, incompressible; the two oldest are the larger ones
        (data / "part.bin").write_bytes(os.urandom(size << 10))
        snapshots.append(workspace.run_json("backup", "app")["snapshot_id"])

    read: list[list[str]] = []
    subsets: list[str] = []
    progress: list[float] = []
    for _ in range(2):
        report = workspace.run_json("verify", "app", "--sample", "50%")
        assert report["schema"] == "backupctl.verify/1" and report["ok"], report
        local, dedup = report["targets"]
        assert local["method"] == "copies" and local["copies_total"] == 4
        assert local["cycle"]["runs"] == 2
        assert 0 < local["read_bytes"] < local["total_bytes"], local
        read.append([copy["snapshot_id"] for copy in local["copies_read"]])
        assert all(copy["ok"] and copy["artifacts"] for copy in local["copies_read"]), local
        subsets.append(dedup["subset"])
        progress.append(local["cycle"]["progress"])
    # Never read before: the oldest written first; every copy read once within the 2-run cycle.
    # Run 2 reads the two never-read copies, then tops up to 50% with the least recently read one.
    assert read == [snapshots[:2], [*snapshots[2:], snapshots[0]]], read
    assert 0.5 <= progress[0] < 0.52 and progress[1] == 1.0, progress
    assert subsets == ["1/2", "2/2"], subsets
    # The next run starts a new cycle with the least recently read copies; the restic slice wraps.
    again = workspace.run_json("verify", "app", "--sample", "50%")
    # (s1 + s2 hold about half the bytes: a third copy tops the run up when they fall just short)
    assert [c["snapshot_id"] for c in again["targets"][0]["copies_read"]][:2] == snapshots[1:3], again
    assert again["targets"][1]["subset"] == "1/2"
    assert 0.5 <= again["targets"][0]["cycle"]["progress"] < 1.0

    # Scheduled like the other jobs: schedule list names it with its command.
    entries = workspace.run_json("schedule", "list")
    assert any(entry["job"] == "verify" and entry["policy"] == "app" for entry in entries), entries
    cron = workspace.run("schedule", "install", "--cron", "--dry-run", check=True).stdout
    assert "verify app --sample 50\\%" in cron, cron  # crontab escapes %


def test_sampled_verify_reports_a_damaged_copy(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(os.urandom(32 << 10))
    files = [{"name": "files", "type": "files", "path": str(data)}]
    workspace.write_policy("app", workspace.base_policy("app", files))
    snapshot = workspace.run_json("backup", "app")["snapshot_id"]
    (artifact,) = (workspace.backups / "app" / snapshot).glob("*.zst.age")
    damaged = bytearray(artifact.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    artifact.write_bytes(bytes(damaged))
    done = workspace.run("verify", "app", "--sample", "100%")
    assert done.returncode == 1, done.stderr
    assert "sha256" in done.stderr or "digest" in done.stderr, done.stderr
