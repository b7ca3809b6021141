"""Files source: tar round trips, the tree hash, excludes, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backupctl.errors import ConfigError, IntegrityError, SourceError
from backupctl.policy.schema import FilesSource
from backupctl.sources import files as files_module
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.sources.files import FilesTarSource, tree_facts


def make_source(root: Path, exclude: list[str] | None = None) -> FilesTarSource:
    source = build_source(FilesSource(name="uploads", type="files", path=str(root), exclude=exclude or []))
    assert isinstance(source, FilesTarSource)
    return source


def dump_to_file(source: FilesTarSource, path: Path) -> dict[str, Any]:
    with source.dump() as dump, open(path, "wb") as out:
        assert (dump.format, dump.extension) == ("tar", "tar")
        shutil.copyfileobj(dump.stream, out, 1 << 20)
        return dump.finish()


def build_tree(root: Path) -> None:
    """A tree with the awkward cases: ordering traps, big and empty files, links, a fifo."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "deep.txt").write_text("deep\n")
    (root / "a-c").write_text("sorts between 'a' and 'a/b' as a path\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # crosses the 1 MiB chunks
    (root / "empty").write_bytes(b"")
    (root / "empty-dir").mkdir()
    (root / "ünïcode näme.txt").write_text("unicode\n")
    (root / "link-to-deep").symlink_to("a/b/deep.txt")
    (root / "dangling").symlink_to("does-not-exist")
    os.link(root / "a-c", root / "hardlink-to-a-c")
    os.mkfifo(root / "pipe")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)


def test_round_trip_preserves_the_tree_hash(tmp_path: Path) -> None:
    root = tmp_path / "src"
    build_tree(root)
    source = make_source(root)
    facts = dump_to_file(source, tmp_path / "tree.tar")

    regular = ["a/b/deep.txt", "a-c", "big.bin", "empty", "ünïcode näme.txt", "hardlink-to-a-c", "run.sh"]
    assert facts["file_count"] == len(regular)  # a hard link counts once per path
    assert facts["symlink_count"] == 2
    assert facts["total_bytes"] == sum((root / name).stat().st_size for name in regular)
    assert facts["skipped"] == ["pipe: fifo not archived"]
    assert facts["tree_sha256"] == tree_facts(root)["tree_sha256"]

    # The archive is a standard tar that GNU tar lists.
    listing = subprocess.run(
        ["tar", "-tf", str(tmp_path / "tree.tar")], capture_output=True, text=True, check=True
    )
    assert "a/b/deep.txt" in listing.stdout.splitlines()

    destination = tmp_path / "restored"
    with open(tmp_path / "tree.tar", "rb") as artifact:
        outcome = source.restore(artifact, RestoreRequest(to_dir=destination))
    assert outcome.facts["tree_sha256"] == facts["tree_sha256"]
    assert source.compare(facts, outcome.facts) == []
    assert os.readlink(destination / "link-to-deep") == "a/b/deep.txt"
    assert (destination / "big.bin").read_bytes() == (root / "big.bin").read_bytes()
    assert (destination / "hardlink-to-a-c").stat().st_ino == (destination / "a-c").stat().st_ino
    assert (destination / "run.sh").stat().st_mode & 0o100
    assert (destination / "empty-dir").is_dir()


def test_file_count_and_tree_hash_follow_the_documented_definition(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "d" / "x").write_bytes(b"x")
    (root / "d-y").write_bytes(b"yy")
    (root / "l").symlink_to("d/x")
    lines = [
        f"d-y\0{hashlib.sha256(b'yy').hexdigest()}\n",  # "d-y" < "d/x" as paths
        f"d/x\0{hashlib.sha256(b'x').hexdigest()}\n",
        "l\0->d/x\n",
    ]
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    facts = dump_to_file(make_source(root), tmp_path / "t.tar")
    assert facts["tree_sha256"] == expected == tree_facts(root)["tree_sha256"]
    assert (facts["file_count"], facts["symlink_count"], facts["total_bytes"]) == (2, 1, 3)


def test_excludes_match_paths_and_base_names_and_prune_directories(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "cache" / "sub").mkdir(parents=True)
    (root / "cache" / "sub" / "blob").write_text("cached")
    (root / "logs").mkdir()
    (root / "logs" / "app.log").write_text("log")
    (root / "logs" / "keep.txt").write_text("keep")
    (root / "x.tmp").write_text("tmp")
    (root / "nested").mkdir()
    (root / "nested" / "y.tmp").write_text("tmp")
    (root / "kept.txt").write_text("kept")
    source = make_source(root, exclude=["cache", "*.tmp", "logs/*.log"])
    dump_to_file(source, tmp_path / "t.tar")
    with tarfile.open(tmp_path / "t.tar") as archive:
        names = archive.getnames()
    assert names == ["kept.txt", "logs", "logs/keep.txt", "nested"]


def test_restore_refuses_a_non_empty_destination_unless_forced(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "f").write_text("new")
    source = make_source(root)
    dump_to_file(source, tmp_path / "t.tar")
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "existing").write_text("old")
    with open(tmp_path / "t.tar", "rb") as artifact, pytest.raises(ConfigError, match="not empty"):
        source.restore(artifact, RestoreRequest(to_dir=destination))
    assert sorted(p.name for p in destination.iterdir()) == ["existing"]  # nothing written
    with open(tmp_path / "t.tar", "rb") as artifact:
        source.restore(artifact, RestoreRequest(to_dir=destination, force=True))
    assert (destination / "f").read_text() == "new"


def crafted_tar(*members: tuple[str, bytes | str, str | None]) -> io.BytesIO:
    """(name, kind or content, link target) -> a tar in memory. kind: b"..." file, "sym", "dir"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content, target in members:
            info = tarfile.TarInfo(name)
            if content == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target or ""
                archive.addfile(info)
            elif content == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, target or ""
                archive.addfile(info)
            elif content == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                assert isinstance(content, bytes)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ([("ok", b"fine", None), ("../evil", b"pwned", None)], "../evil"),
        ([("/tmp/backupctl-evil-absolute", b"pwned", None)], "/tmp/backupctl-evil-absolute"),
        ([("sub/../../evil", b"pwned", None)], "sub/../../evil"),
        ([("escape", "sym", "/etc"), ("escape/passwd", b"through an absolute link", None)], "escape/passwd"),
        ([("up", "sym", "../.."), ("up/evil", b"through an escaping link", None)], "up/evil"),
        ([("hard", "hard", "../outside")], "hard"),
        ([("link", "sym", "/etc/passwd"), ("hard", "hard", "link")], "hard"),
        (
            [("dir", "dir", None), ("inner", "sym", "dir"), ("inner/file", b"through a link", None)],
            "inner/file",
        ),
    ],
)
def test_restore_refuses_hostile_members(
    tmp_path: Path, members: list[tuple[str, bytes | str, str | None]], named: str
) -> None:
    destination = tmp_path / "a" / "dest"
    source = make_source(tmp_path)
    with pytest.raises(IntegrityError, match=f"refusing tar member '{named}'"):
        source.restore(crafted_tar(*members), RestoreRequest(to_dir=destination))
    assert not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/backupctl-evil-absolute").exists()
    assert not (destination / "dir" / "file").exists()


def test_producer_errors_surface_in_finish_without_deadlock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "a").write_bytes(os.urandom(2 * 1024 * 1024))
    (root / "b-unreadable").write_text("secret")
    real = files_module._TarProducer._add_file

    def failing(self: Any, tar: Any, entry: files_module.Entry) -> None:
        if entry.relpath == "b-unreadable":  # root can read anything: simulate EACCES
            raise PermissionError(13, "Permission denied", entry.path)
        real(self, tar, entry)

    monkeypatch.setattr(files_module._TarProducer, "_add_file", failing)
    with make_source(root).dump() as dump:
        data = dump.stream.read()  # EOF arrives: the producer closed the pipe on its error
        with pytest.raises(SourceError, match="Permission denied"):
            dump.finish()
    assert len(data) >= 2 * 1024 * 1024


def test_vanished_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"), make_source(tmp_path / "gone").dump():
        pytest.fail("dump should not start")


def test_consumer_giving_up_unblocks_and_joins_the_producer(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    for index in range(4):
        (root / f"f{index}").write_bytes(os.urandom(2 * 1024 * 1024))  # far more than the pipe holds
    before = threading.active_count()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="downstream"), make_source(root).dump() as dump:
        dump.stream.read(1000)
        raise RuntimeError("downstream failure")
    assert time.monotonic() - started < 10
    assert threading.active_count() == before

    with make_source(root).dump() as dump:
        dump.stream.read(1000)
        with pytest.raises(SourceError, match="not read to its end"):
            dump.finish()


def test_verify_check_agrees_with_restore_on_hostile_members(tmp_path: Path) -> None:
    """The shared guard: every archive restore refuses, check_tar_stream reports."""
    from backupctl.sources.targuard import check_tar_stream

    hostile = crafted_tar(("dir", "dir", None), ("inner", "sym", "dir"), ("inner/file", b"x", None))
    problems = check_tar_stream(hostile)
    assert len(problems) == 1 and "refusing tar member 'inner/file'" in problems[0]
    fine = crafted_tar(("abs", "sym", "/usr/share/wordpress"), ("rel", "sym", "../up"), ("f", b"ok", None))
    assert check_tar_stream(fine) == []
    fine.seek(0)
    source = make_source(tmp_path)
    source.restore(fine, RestoreRequest(to_dir=tmp_path / "out"))
    assert os.readlink(tmp_path / "out" / "abs") == "/usr/share/wordpress"
    assert os.readlink(tmp_path / "out" / "rel") == "../up"


def test_failed_restore_leaves_nothing_half_written(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    destination = tmp_path / "restored"
    hostile = crafted_tar(("good", b"written first", None), ("../evil", b"pwned", None))
    with pytest.raises(IntegrityError, match="refusing tar member"):
        source.restore(hostile, RestoreRequest(to_dir=destination))
    assert not destination.exists()
    assert not any(p.name.startswith(".restored.restoring-") for p in tmp_path.iterdir())
