"""`keys rotate`: new backups are encrypted to the new key only (checked with the age CLI), old
snapshots still verify (old signing key kept trusted) and restore (old identity kept)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.core import Workspace


def age_decrypts(identity: Path, artifact: Path) -> bool:
    done = subprocess.run(["age", "-d", "-i", str(identity), "-o", "/dev/null", str(artifact)],
                          capture_output=True, timeout=60, check=False)  # fmt: skip
    return done.returncode == 0


def test_rotate_then_backup(workspace: Workspace, tmp_path: Path) -> None:
    if shutil.which("age") is None:
        pytest.skip("the age CLI is not installed")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("before rotation")
    workspace.write_policy("app", workspace.base_policy(
        "app", [{"name": "files", "type": "files", "path": str(tree)}],
        [{"name": "local", "type": "local", "path": str(workspace.backups)}]))  # fmt: skip
    old = workspace.run_json("backup", "app")["snapshot_id"]
    old_identity = tmp_path / "old-identity.txt"
    shutil.copy(workspace.keys / "age-identity.txt", old_identity)
    old_signing = (workspace.keys / "signing-ed25519.pub").read_text().strip()

    rotated = workspace.run_json("keys", "rotate")
    assert rotated["new_recipient"] != rotated["old_recipient"]
    assert rotated["old_signing_public_key"] == old_signing != rotated["new_signing_public_key"]
    new = workspace.run_json("backup", "app")["snapshot_id"]

    old_artifact = workspace.backups / "app" / old / "files.tar.zst.age"
    new_artifact = workspace.backups / "app" / new / "files.tar.zst.age"
    assert age_decrypts(old_identity, old_artifact)
    assert not age_decrypts(old_identity, new_artifact)  # encrypted to the new key only
    assert age_decrypts(workspace.keys / "age-identity.txt", new_artifact)
    assert age_decrypts(workspace.keys / "age-identity.txt", old_artifact)

    for snapshot in (old, new):
        verified = workspace.run_json("verify", "app", snapshot)
        assert verified[0]["ok"], verified
    restored = tmp_path / "restored"
    done = workspace.run("restore", "app", old, "--source", "files", "--to-dir", str(restored))
    assert done.returncode == 0, done.stderr
    assert (restored / "a.txt").read_text() == "before rotation"
    # Without the retired-key file the old manifest no longer verifies: the trust is what keeps it.
    (workspace.keys / "signing-trusted.pub").unlink()
    assert workspace.run("verify", "app", old).returncode == 1
