"""The local target against a real file system (and a real full one: a 1 MiB tmpfs)."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupctl.core import writebehind
from backupctl.errors import TargetError
from backupctl.policy.schema import LocalTarget
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.local import LocalBlobTarget, temp_name
from tests.integration.targets.contract import BlobTargetContract, payload, read, write


class FileTreeChecks:
    """Checks for targets that keep one file per object under a root directory (local, SFTP):
    a subclass provides `target` and `stored_names()`, every name physically under the root."""

    def stored_names(self, target: BlobTarget, directories: bool = False) -> list[str]:
        raise NotImplementedError

    def test_temp_file_is_never_listed(self, target: BlobTarget) -> None:
        write(target, "shop/s1/a", b"a")
        with target.writer("shop/s1/b") as out:
            out.write(b"half")
            assert any(".tmp-" in name for name in self.stored_names(target))
            assert [info.key for info in target.list_keys("")] == ["shop/s1/a"]

    def test_failed_writer_removes_its_temp_file(self, target: BlobTarget) -> None:
        with pytest.raises(RuntimeError, match="source died"), target.writer("shop/s1/db.age") as out:
            out.write(payload(3 * 1024 * 1024))
            raise RuntimeError("source died")
        assert [name for name in self.stored_names(target) if "db.age" in name] == []

    def test_delete_prunes_empty_directories(self, target: BlobTarget) -> None:
        write(target, "shop/s1/a", b"a")
        write(target, "shop/s2/b", b"b")
        target.delete("shop/s1/a")
        assert not any(name.startswith("shop/s1") for name in self.stored_names(target, directories=True))
        target.delete("shop/s2/b")
        assert self.stored_names(target, directories=True) == []

    @pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/.b.tmp-0123456789ab"])
    def test_invalid_keys_are_refused(self, target: BlobTarget, key: str) -> None:
        with pytest.raises(TargetError, match="invalid object key"), target.writer(key):
            pass

    def test_posture_reports_free_space(self, target: BlobTarget) -> None:
        write(target, "shop/s1/a", b"a")
        posture = target.posture()
        assert posture.free_bytes is not None and posture.free_bytes > 0


# --------------------------------------------------------------------------- local
def local_target(path: Path, **extra: object) -> LocalBlobTarget:
    config = LocalTarget.model_validate({"name": "nas", "type": "local", "path": str(path), **extra})
    target = build_target(config)
    assert isinstance(target, LocalBlobTarget)
    return target


def tree(root: Path, directories: bool = False) -> list[str]:
    if not root.exists():
        return []
    return sorted(
        path.relative_to(root).as_posix() for path in root.rglob("*") if directories or not path.is_dir()
    )


class TestLocalContract(BlobTargetContract, FileTreeChecks):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Iterator[LocalBlobTarget]:
        target = local_target(tmp_path / "store")
        yield target
        target.close()

    def stored_names(self, target: BlobTarget, directories: bool = False) -> list[str]:
        assert isinstance(target, LocalBlobTarget)
        return tree(target.root, directories)


def test_root_and_directories_are_private(tmp_path: Path) -> None:
    target = local_target(tmp_path / "a" / "store")
    write(target, "shop/s1/manifest.json", b"{}")
    assert (target.root.stat().st_mode & 0o777) == 0o700
    assert ((target.root / "shop").stat().st_mode & 0o777) == 0o700
    assert ((target.root / "shop/s1/manifest.json").stat().st_mode & 0o777) == 0o600


def test_posture_of_a_missing_root_that_can_be_created(tmp_path: Path) -> None:
    posture = local_target(tmp_path / "not-yet").posture()
    assert posture.reachable and posture.details["created_on_first_write"]


def test_posture_flags_an_unmounted_nas(tmp_path: Path) -> None:
    # tmp_path is on the container's root file system, as an unmounted share's mount point is.
    if Path(str(tmp_path)).resolve().is_mount() or os.path.ismount("/tmp"):
        pytest.skip("tmp_path is on its own mount here; the check needs the root file system")
    posture = local_target(tmp_path, medium="nas").posture()
    assert any("is the share mounted" in problem for problem in posture.problems)


def test_stale_temp_files_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    target = local_target(tmp_path / "store")
    write(target, "shop/s1/manifest.json", b"{}")
    directory = target.root / "shop" / "s1"
    stale = directory / temp_name("db.age")
    fresh = directory / temp_name("db2.age")
    lonely = target.root / "shop" / "s0" / temp_name("x")  # the only file of a killed snapshot
    lonely.parent.mkdir()
    for path in (stale, fresh, lonely):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(lonely, (two_hours_ago, two_hours_ago))
    assert [info.key for info in target.list_keys("")] == ["shop/s1/manifest.json"]
    removed = target.sweep_temp_files("shop/")
    assert removed == [f"shop/s0/{lonely.name}", f"shop/s1/{stale.name}"]
    assert fresh.exists() and not stale.exists() and not lonely.parent.exists()


# --------------------------------------------------------------------------- full disk
@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system, so ENOSPC comes from the kernel and not from a mock."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root with CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_is_a_clear_error_and_leaves_no_temp_file(tiny_tmpfs: Path) -> None:
    target = local_target(tiny_tmpfs / "store")
    with pytest.raises(TargetError, match=r"target nas: disk full at .*store/shop/s1/db\.age \(") as caught:
        write(target, "shop/s1/db.age", payload(3 * 1024 * 1024), chunk=64 * 1024)
    assert "bytes free" in str(caught.value) and not caught.value.transient
    assert tree(target.root) == []
    assert target.list_keys("") == []
    write(target, "shop/s1/small", b"fits")  # the space is back: the temp file is gone
    assert read(target, "shop/s1/small") == b"fits"


def test_errors_on_commit_are_mapped_and_clean_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fsync is where a network file system (or a thin-provisioned volume) reports ENOSPC/EIO.
    target = local_target(tmp_path / "store")

    def failing(error: int) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            raise OSError(error, os.strerror(error))

        return fsync

    monkeypatch.setattr(os, "fsync", failing(errno.ENOSPC))
    with pytest.raises(TargetError, match="disk full"):
        write(target, "shop/s1/a", b"data")
    monkeypatch.setattr(os, "fsync", failing(errno.EACCES))
    with pytest.raises(TargetError, match="permission denied"):
        write(target, "shop/s1/a", b"data")
    monkeypatch.setattr(os, "fsync", failing(errno.ESTALE))
    with pytest.raises(TargetError) as caught:
        write(target, "shop/s1/a", b"data")
    assert caught.value.transient
    monkeypatch.undo()
    assert tree(target.root) == []


def test_a_large_object_is_written_back_while_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer starts the kernel's writeback every 8 MiB (core.writebehind.WriteBehind), so the
    # fsync before the rename has little left to do; the object is the same either way.
    handed: list[tuple[int, int]] = []
    real = writebehind._start_writeback

    def recording(fd: int, offset: int, length: int) -> bool:
        handed.append((offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(writebehind, "_start_writeback", recording)
    target = local_target(tmp_path / "store")
    data = payload(20 * 1024 * 1024)
    write(target, "shop/s1/db.age", data)
    assert read(target, "shop/s1/db.age") == data
    assert [offset for offset, _ in handed] == [0, handed[0][1]]  # at 8 and at 16 MiB
    assert handed[0][1] >= 7 * 1024 * 1024
