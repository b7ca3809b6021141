"""A files source with what a real tree holds (Debian's wp-content): absolute and relative
symlinks, names with `..` in them, device files. The backup says what it could not take,
verify and restore agree, and nothing lands outside the restore root."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.fixtures.core import Workspace


def hostile_tree(root: Path, outside: Path) -> None:
    (root / "plugins").mkdir(parents=True)
    (root / "plugins" / "hello.php").write_text("<?php // hello\n")
    (root / "plugins" / "akismet").symlink_to("/usr/share/wordpress/wp-content/plugins/akismet")
    (root / "plugins" / "escape").symlink_to("../../outside")
    (root / "uploads").mkdir()
    (root / "uploads" / "..hidden").write_text("dots first\n")
    (root / "uploads" / "a..b.jpg").write_bytes(b"\xff\xd8jpeg")
    (root / "uploads" / "latest.jpg").symlink_to("a..b.jpg")
    outside.mkdir()
    (outside / "secret").write_text("not in the tree\n")
    if os.geteuid() == 0:
        os.mknod(root / "null-device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(root / "pipe")


@pytest.mark.parametrize("mode", ["keep", "skip"])
def test_symlinks_devices_and_dot_names_round_trip(workspace: Workspace, mode: str) -> None:
    content = workspace.root / "site" / "wp-content"
    hostile_tree(content, workspace.root / "outside")
    policy = workspace.base_policy(
        "wp", [{"name": "content", "type": "files", "path": str(content), "symlinks": mode}]
    )
    workspace.write_policy("wp", policy)

    done = workspace.run("backup", "wp")
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    if mode == "keep":
        assert "plugins/akismet: symlink to /usr/share/wordpress" in said
        assert "plugins/escape: symlink to ../../outside leads outside the tree" in said
    else:
        assert "plugins/akismet: symlink to /usr/share/wordpress/wp-content/plugins/akismet outside" in said
    assert "pipe: fifo not archived" in said
    if os.geteuid() == 0:
        assert "null-device: device not archived" in said
    snapshot = workspace.run_json("snapshots", "wp")[0]["id"]
    manifest = json.loads((workspace.backups / "wp" / snapshot / "manifest.json").read_text())
    facts = manifest["artifacts"][0]["facts"]
    assert any("pipe" in line for line in facts["skipped"])
    assert facts["symlink_count"] == (3 if mode == "keep" else 1)

    verified = workspace.run("verify", "wp", snapshot, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    checks = json.loads(verified.stdout)[0]["artifacts"][0]["checks"]
    assert checks["restorable"] == "ok"

    restored = workspace.root / "restored"
    done = workspace.run("restore", "wp", snapshot, "--source", "content", "--to-dir", str(restored))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (restored / "uploads" / "..hidden").read_text() == "dots first\n"
    assert os.readlink(restored / "uploads" / "latest.jpg") == "a..b.jpg"
    if mode == "keep":
        # Kept verbatim as links, never followed: nothing was written where they point.
        akismet = "/usr/share/wordpress/wp-content/plugins/akismet"
        assert os.readlink(restored / "plugins" / "akismet") == akismet
        assert os.readlink(restored / "plugins" / "escape") == "../../outside"
    else:
        assert not (restored / "plugins" / "akismet").is_symlink()
    assert not (restored / "null-device").exists() and not (restored / "pipe").exists()
    assert sorted(p.name for p in (workspace.root / "outside").iterdir()) == ["secret"]
    assert sorted(p.name for p in workspace.root.iterdir() if p.name.startswith(".restored")) == []


def test_refuse_fails_the_backup_and_names_the_link(workspace: Workspace) -> None:
    content = workspace.root / "wp-content"
    hostile_tree(content, workspace.root / "outside")
    workspace.write_policy(
        "wp",
        workspace.base_policy(
            "wp", [{"name": "content", "type": "files", "path": str(content), "symlinks": "refuse"}]
        ),
    )
    done = workspace.run("backup", "wp")
    assert done.returncode != 0
    assert "plugins/akismet is a symlink to /usr/share/wordpress" in done.stdout + done.stderr
