"""Read-only restic repositories (issue #13, item 7): verify and drill work against a repository
on a read-only bind mount (as root, file modes would not stop writes; a read-only mount does),
and restic's errors reach the operator without Go stack traces."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupctl.targets.restic_errors import lock_free, summarise
from tests.fixtures.core import Workspace


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Mount `directory` over itself read-only for the block."""
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_verify_and_drill_against_a_read_only_repository(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("hello " * 100)
    repository = tmp_path / "restic"
    workspace.env["RESTIC_RO_PASSWORD"] = "restic-read-only-test"
    workspace.write_policy(
        "app",
        workspace.base_policy(
            "app",
            [{"name": "files", "type": "files", "path": str(data)}],
            [
                {
                    "name": "dedup",
                    "type": "restic",
                    "repository": str(repository),
                    "password": "env:RESTIC_RO_PASSWORD",
                }
            ],
        ),
    )
    workspace.run("target", "setup", "app", "dedup", check=True)
    workspace.run("backup", "app", check=True)

    with read_only(repository):
        probe = subprocess.run(["touch", str(repository / "locks" / "probe")], capture_output=True)
        assert probe.returncode != 0, "the repository must be read-only for this test"

        (verified,) = workspace.run_json("verify", "app")
        assert verified["ok"], verified
        assert verified["signature"].startswith("ok"), verified

        done = workspace.run("drill", "app", "--runtime", "local", "--json", timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["ok"] and outcome["target"] == "dedup", outcome
        assert "goroutine" not in done.stderr and "github.com/restic" not in done.stderr


def test_errors_are_summarised_without_go_stack_traces() -> None:
    # stderr of restic 0.14.0 `snapshots` on a read-only repository without --no-lock (shortened).
    stderr = """\
create exclusive lock for repository
Save(<lock/fcf9f3c974>) returned error, retrying after 552ms: open /r/locks/fc-tmp-3833: read-only file system
Save(<lock/fcf9f3c974>) returned error, retrying after 1.08s: open /r/locks/fc-tmp-9769: read-only file system
open /r/locks/fc-tmp-2889030039: read-only file system
github.com/restic/restic/internal/backend/local.(*Local).Save
\tgithub.com/restic/restic/internal/backend/local/local.go:153
github.com/restic/restic/internal/backend.(*RetryBackend).Save.func1
\tgithub.com/restic/restic/internal/backend/backend_retry.go:66
main.main
\tgithub.com/restic/restic/cmd/restic/main.go:98
runtime.main
\truntime/proc.go:250
runtime.goexit
\truntime/asm_amd64.s:1594
unable to create lock in backend
"""
    assert summarise(stderr) == (
        "open /r/locks/fc-tmp-2889030039: read-only file system | unable to create lock in backend"
    )
    assert lock_free(["snapshots", "--json"]) == ["--no-lock", "snapshots", "--json"]
    assert lock_free(["backup", "--stdin"]) == ["backup", "--stdin"]
