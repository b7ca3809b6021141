"""A backup that fills its target's disk (issue #13, item 3): it fails with a message naming the
path (exit 1), and frees what it wrote there — the first source's complete artifact and the
second's partial one — before it exits, so the disk is as free as before the run.

The small disk is a real 6 MiB tmpfs mounted in the test's temp directory (root is needed:
skipped, saying so, when the mount is refused) and unmounted afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.core import Workspace


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 6 MiB tmpfs at {mount} (root is needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_fails_naming_the_path_and_frees_what_the_run_wrote(
    workspace: Workspace, tmp_path: Path, small_disk: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.bin").write_bytes(os.urandom(3 << 20))  # fits
    (second / "b.bin").write_bytes(os.urandom(8 << 20))  # does not fit beside it
    backups = small_disk / "backups"
    workspace.write_policy("app", workspace.base_policy("app", [
        {"name": "first", "type": "files", "path": str(first)},
        {"name": "second", "type": "files", "path": str(second)},
    ], [{"name": "local", "type": "local", "path": str(backups)}]))  # fmt: skip
    free_before = os.statvfs(small_disk).f_bavail

    done = workspace.run("backup", "app")

    assert done.returncode == 1, done.stderr
    final = done.stderr.strip().splitlines()[-1]
    assert "disk full" in final and str(backups / "app") in final, final
    assert "removed" in done.stderr and "this run had written" in done.stderr, done.stderr
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []  # no byte of the run is left
    assert os.statvfs(small_disk).f_bavail == free_before
    (run,) = workspace.run_json("snapshots", "app", "--all")
    assert run["status"] == "failed" and run["targets"] == {"local": "deleted"}, run
