"""Nothing orphaned (issue #13, item 3): a backup killed with SIGKILL at ten points, then the
next backup and prune, leave on every target exactly what the kept snapshots' manifests name
(local, S3 — no incomplete multipart upload either —, SFTP, restic), and every kept snapshot
verifies. A backup stopped with SIGTERM removes what it wrote itself before it exits.

Each point is reached by waiting for what it leaves on a target (a temporary file, a multipart
upload, a restic process) or, where nothing shows, by the test-only pause point
(backupctl/core/killpoints.py). The policy: a 12 MiB source (3 parts on S3) then a small one,
to local, S3, SFTP and restic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.core import Workspace
from tests.fixtures.processes import descendants
from tests.fixtures.s3 import new_bucket_name
from tests.fixtures.sshd import SshdServer

RESTIC_PASSWORD = "kill-points-restic"
Observer = Callable[["Setup"], bool]


class Setup:
    """The policy's data and targets, and how to look at each."""

    def __init__(
        self, space: Workspace, root: Path, s3_server: str, s3_client: Any, sshd: SshdServer
    ) -> None:
        self.space, self.s3 = space, s3_client
        self.big, self.small = root / "big", root / "small"
        self.big.mkdir()
        self.small.mkdir()
        for index in range(3):
            (self.big / f"blob{index}.bin").write_bytes(os.urandom(4 << 20))
        (self.small / "a.txt").write_text("small")
        self.bucket = new_bucket_name("kill")
        s3_client.create_bucket(Bucket=self.bucket)
        self.remote = sshd.root / f"kill-{root.name}"
        self.remote.mkdir()
        self.repository = root / "restic"
        space.env["KP_RESTIC_PASSWORD"] = RESTIC_PASSWORD
        space.write_policy("app", space.base_policy("app", [
            {"name": "big", "type": "files", "path": str(self.big)},
            {"name": "small", "type": "files", "path": str(self.small)},
        ], [
            {"name": "local", "type": "local", "path": str(space.backups)},
            {"name": "offsite", "type": "s3", "bucket": self.bucket, "endpoint_url": s3_server,
             "region": "us-east-1", "part_size_mb": 5, "max_concurrency": 1},
            {"name": "remote", "type": "sftp", "host": sshd.host, "port": sshd.port, "user": sshd.user,
             "key_file": sshd.key_file, "known_hosts": sshd.known_hosts, "path": str(self.remote)},
            {"name": "dedup", "type": "restic", "repository": str(self.repository),
             "password": "env:KP_RESTIC_PASSWORD", "medium": "disk"},
        ]))  # fmt: skip
        space.run("target", "setup", "app", "dedup", check=True)
        space.run("target", "setup", "app", "offsite", check=True)

    # ----------------------------------------------------------------- what the targets hold
    def local_files(self) -> dict[str, int]:
        return _files(self.space.backups)

    def sftp_files(self) -> dict[str, int]:
        return _files(self.remote)

    def s3_objects(self) -> dict[str, int]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def s3_uploads(self) -> list[dict[str, Any]]:
        return list(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def restic_snapshot_ids(self) -> list[str]:
        env = {**os.environ, "RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_REPOSITORY": str(self.repository)}
        listed = json.loads(subprocess.run(["restic", "snapshots", "--json", "--no-lock"], env=env,
                                           check=True, capture_output=True, text=True).stdout)  # fmt: skip
        return [tag.removeprefix("snapshot=") for item in listed for tag in item.get("tags", [])
                if tag.startswith("snapshot=")]  # fmt: skip

    def expected(self, snapshot_ids: list[str]) -> dict[str, int]:
        """Every key the manifests of `snapshot_ids` name, with its size (the manifest's own
        files as stored on the local target)."""
        wanted: dict[str, int] = {}
        for snapshot_id in snapshot_ids:
            directory = self.space.backups / "app" / snapshot_id
            for name in ("manifest.json", "manifest.json.sig"):
                wanted[f"app/{snapshot_id}/{name}"] = (directory / name).stat().st_size
            manifest = json.loads((directory / "manifest.json").read_text())
            for artifact in manifest["artifacts"]:
                wanted[f"app/{snapshot_id}/{artifact['file']}"] = artifact["stored_bytes"]
        return wanted


def _files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _temp_with_bytes(files: dict[str, int]) -> bool:
    return any(".tmp-" in key and size > 0 for key, size in files.items())


def _multipart_with_parts(setup: Setup) -> bool:
    for upload in setup.s3_uploads():
        parts = setup.s3.list_parts(Bucket=setup.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if parts.get("Parts"):
            return True
    return False



def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _restic_tree_backup(process: subprocess.Popen[bytes], setup: Setup) -> bool:
    return any(
        "restic" in (line := _cmdline(child)) and " backup " in line and str(setup.big) in line
        for child in descendants(process.pid)
    )


# (point, how it is reached: an observation of the targets, or None for the pause point)
POINTS: list[tuple[str, Callable[[subprocess.Popen[bytes], Setup], bool] | None]] = [
    ("run-started", None),  # the first dump started, nothing written yet
    ("local-mid-upload", lambda _, s: _temp_with_bytes(s.local_files())),  # the big artifact
    ("primary-stored", None),  # the big artifact complete on local only
    ("s3-multipart", lambda _, s: _multipart_with_parts(s)),  # copying it to S3
    ("sftp-mid-upload", lambda _, s: _temp_with_bytes(s.sftp_files())),  # copying it to SFTP
    ("restic-tree", _restic_tree_backup),  # `restic backup` of the big tree running
    ("source-stored", None),  # the first artifact everywhere, the second not yet
    ("manifest-written", None),  # a manifest on local, not yet on the next target
    ("manifests-written", None),  # complete on every target, the catalog not committed
    ("committed", None),  # recorded complete; killed before its own sweep
]


def _start(space: Workspace, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "app"],
        env={**os.environ, **space.env, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _wait_for(process: subprocess.Popen[bytes], reached: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120
    while not reached():
        if process.poll() is not None:
            raise AssertionError(f"the backup ended before the point: {process.stderr.read()!r}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the point was never reached"
        time.sleep(0.01)


def _kill_at(space: Workspace, setup: Setup, point: str, observe: Any, tmp_path: Path) -> None:
    """Run a backup, SIGKILL it at `point`, and wait for what it started (restic) to end."""
    marker = tmp_path / f"reached-{point}"
    env = {"BACKUPCTL_TEST_PAUSE_AT": f"{point}:{marker}"} if observe is None else {}
    process = _start(space, env)
    try:
        reached = (lambda: marker.exists()) if observe is None else (lambda: observe(process, setup))
        _wait_for(process, reached)
        children = descendants(process.pid)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    deadline = time.monotonic() + 60  # restic goes on without its parent: it commits what it read
    while any(Path(f"/proc/{pid}").exists() and _cmdline(pid) for pid in children):
        assert time.monotonic() < deadline, [_cmdline(pid) for pid in children]
        time.sleep(0.05)


@pytest.fixture
def setup(
    workspace: Workspace, tmp_path: Path, s3_server: str, s3_client: Any, sshd_server: SshdServer
) -> Setup:
    return Setup(workspace, tmp_path, s3_server, s3_client, sshd_server)


@pytest.mark.parametrize(("point", "observe"), POINTS, ids=[point for point, _ in POINTS])
def test_kill_nine_then_backup_and_prune_leave_nothing_orphaned(
    workspace: Workspace, setup: Setup, tmp_path: Path, point: str, observe: Any
) -> None:
    _kill_at(workspace, setup, point, observe, tmp_path)
    (killed,) = [s["id"] for s in workspace.run_json("snapshots", "app", "--all")]

    after = workspace.run_json("backup", "app")
    assert after["status"] == "complete", after
    if point != "committed":  # every other point left something the next run swept
        assert sum(target["bytes_reclaimed"] for target in after["swept"]) > 0 or point == "run-started"
        assert all(target["errors"] == [] for target in after["swept"]), after["swept"]
    workspace.run_json("prune", "app")

    listed = {s["id"]: s["status"] for s in workspace.run_json("snapshots", "app", "--all")}
    kept = sorted(s for s, status in listed.items() if status == "complete")
    if point == "committed":
        assert kept == sorted([killed, after["snapshot_id"]])
    else:  # complete on the targets or not, the catalog says failed: the sweep removed it
        assert kept == [after["snapshot_id"]] and listed[killed] == "failed", listed
    wanted = setup.expected(kept)
    assert setup.local_files() == wanted
    assert setup.sftp_files() == wanted
    assert setup.s3_objects() == wanted and setup.s3_uploads() == []
    assert sorted(set(setup.restic_snapshot_ids())) == kept
    for snapshot_id in kept:
        results = workspace.run_json("verify", "app", snapshot_id)
        assert len(results) == 4 and all(result["ok"] for result in results), results


def test_sigterm_mid_upload_removes_what_the_run_wrote(workspace: Workspace, setup: Setup) -> None:
    process = _start(workspace)
    try:
        _wait_for(process, lambda: _multipart_with_parts(setup))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr  # SIGTERM: the documented exit code (docs/json.md)
    (run,) = workspace.run_json("snapshots", "app", "--all")
    assert run["status"] == "failed"
    # Before any other run: the run removed its artifact on local and its upload on S3.
    assert setup.local_files() == {} and setup.sftp_files() == {}
    assert setup.s3_objects() == {} and setup.s3_uploads() == []
    assert setup.restic_snapshot_ids() == []
    assert run["targets"]["local"] == "deleted", run
    assert workspace.run_json("backup", "app")["swept"] == []  # nothing left to sweep
