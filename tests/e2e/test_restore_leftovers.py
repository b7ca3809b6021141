"""`restore --no-precheck` after a failed stream (issue #13, item 8): a directory restore goes
through a temporary sibling, so a failure leaves nothing; an in-place restore says what it left."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.core import Workspace


def _backup(space: Workspace, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for index in range(40):  # enough that a corrupted middle is reached after files were written
        (data / "sub" / f"f{index}.bin").write_bytes(bytes([index]) * 50_000)
    space.write_policy(
        "app", space.base_policy("app", [{"name": "files", "type": "files", "path": str(data)}])
    )
    space.run("backup", "app", check=True)
    (artifact,) = space.backups.rglob("files.*.age")
    return artifact


def _corrupt(artifact: Path) -> None:
    raw = bytearray(artifact.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0xFF
    artifact.write_bytes(bytes(raw))


def test_failed_stream_leaves_no_half_tree(workspace: Workspace, tmp_path: Path) -> None:
    artifact = _backup(workspace, tmp_path)
    good = tmp_path / "good"
    done = workspace.run("restore", "app", "--source", "files", "--to-dir", str(good), "--no-precheck")
    assert done.returncode == 0, done.stderr
    assert len(list((good / "sub").iterdir())) == 40
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left

    _corrupt(artifact)
    fresh = tmp_path / "fresh"
    done = workspace.run("restore", "app", "--source", "files", "--to-dir", str(fresh), "--no-precheck")
    assert done.returncode == 1, done.stderr
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert f"nothing was written to {fresh}" in done.stderr, done.stderr

    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("older content")
    done = workspace.run(
        "restore", "app", "--source", "files", "--to-dir", str(old), "--no-precheck", "--force"
    )
    assert done.returncode == 1, done.stderr
    assert f"{old} was restored into in place" in done.stderr, done.stderr
    assert "old and partially restored ones mixed" in done.stderr
