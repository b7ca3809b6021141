"""Nothing orphaned (issue #13, item 3): a backup killed with SIGKILL in the middle leaves
artifacts (and a temporary file) on the local target; the next `prune` sweeps them and reports
the bytes reclaimed, and keeps every complete snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.core import Workspace


def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def test_prune_sweeps_what_a_killed_backup_left(workspace: Workspace, tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    (small / "a.txt").write_text("hello")
    for index in range(6):
        (big / f"blob{index}.bin").write_bytes(os.urandom(8 << 20))
    sources = [{"name": "small", "type": "files", "path": str(small)},
               {"name": "big", "type": "files", "path": str(big)}]  # fmt: skip
    workspace.write_policy("app", workspace.base_policy("app", sources))
    kept = workspace.run_json("backup", "app")["snapshot_id"]
    complete_bytes = _tree_bytes(workspace.backups)

    backup = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "app"],
        env={**os.environ, **workspace.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while True:  # the small artifact is stored and the big one is being written
            runs = [p for p in (workspace.backups / "app").iterdir() if p.name != kept]
            names = [f.name for run in runs for f in run.iterdir()] if runs else []
            if any(n.startswith("small.") for n in names) and any(".tmp-" in n for n in names):
                break
            assert backup.poll() is None, "the backup ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        backup.send_signal(signal.SIGKILL)
    finally:
        backup.wait()
    left = _tree_bytes(workspace.backups) - complete_bytes
    assert left > 0

    pruned = workspace.run_json("prune", "app")
    (swept,) = pruned["swept"]
    assert swept["target"] == "local" and len(swept["snapshots"]) == 1
    assert swept["bytes_reclaimed"] == left
    assert _tree_bytes(workspace.backups) == complete_bytes  # no orphaned byte remains
    assert [p.name for p in (workspace.backups / "app").iterdir()] == [kept]
    (verified,) = workspace.run_json("verify", "app", kept)
    assert verified["ok"]
    assert workspace.run_json("prune", "app")["swept"] == []  # nothing left the second time
