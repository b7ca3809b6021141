"""The local target against a real file system (and a real full one: a 1 MiB tmpfs)."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupctl.errors import TargetError
from backupctl.policy.schema import LocalTarget
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.local import LocalBlobTarget, temp_name

SIZES = [0, 1, 5 * 1024 * 1024 + 1]


def payload(size: int) -> bytes:
    """Deterministic, incompressible-looking bytes (so a short read shows up as a mismatch)."""
    block = os.urandom(4096) if size else b""
    return (block * (size // 4096 + 1))[:size]


def write(target: BlobTarget, key: str, data: bytes, chunk: int = 1024 * 1024) -> None:
    with target.writer(key) as out:
        for start in range(0, len(data), chunk):
            out.write(data[start : start + chunk])


def read(target: BlobTarget, key: str) -> bytes:
    parts = []
    with target.reader(key) as stream:
        while block := stream.read(1024 * 1024):
            parts.append(block)
    return b"".join(parts)


class BlobTargetContract:
    """Checks every blob target must pass; a subclass provides the `target` fixture and
    `stored_names()` (every file name physically under the target root, temp files included).

    Written here until tests/integration/targets/contract.py (the shared helper) takes over.
    """

    def stored_names(self, target: BlobTarget, directories: bool = False) -> list[str]:
        raise NotImplementedError

    @pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size}B")
    def test_round_trip_keeps_bytes(self, target: BlobTarget, size: int) -> None:
        data = payload(size)
        write(target, f"shop/s{size}/db.dump.zst.age", data)
        assert read(target, f"shop/s{size}/db.dump.zst.age") == data
        [info] = target.list_keys(f"shop/s{size}/")
        assert (info.key, info.size) == (f"shop/s{size}/db.dump.zst.age", size)

    def test_object_appears_only_after_a_clean_exit(self, target: BlobTarget) -> None:
        with target.writer("shop/s1/manifest.json") as out:
            out.write(b"{}")
            assert target.list_keys("") == []
            with pytest.raises(TargetError, match="not found"), target.reader("shop/s1/manifest.json"):
                pass
        assert [info.key for info in target.list_keys("")] == ["shop/s1/manifest.json"]

    def test_failed_writer_leaves_nothing(self, target: BlobTarget) -> None:
        with pytest.raises(RuntimeError, match="source died"), target.writer("shop/s1/db.age") as out:
            out.write(b"x" * 100_000)
            raise RuntimeError("source died")
        assert target.list_keys("") == []
        assert [name for name in self.stored_names(target) if "db.age" in name] == []

    def test_overwrite_replaces_the_object(self, target: BlobTarget) -> None:
        write(target, "shop/s1/manifest.json", b"old")
        write(target, "shop/s1/manifest.json", b"new contents")
        assert read(target, "shop/s1/manifest.json") == b"new contents"

    def test_list_is_sorted_filtered_and_never_shows_temp_files(self, target: BlobTarget) -> None:
        for key in ["shop/s2/b", "shop/s1/a", "shop/s1/c", "shopping/s1/a", "other/s1/a"]:
            write(target, key, key.encode())
        with target.writer("shop/s3/partial") as out:
            out.write(b"half")
            assert [info.key for info in target.list_keys("shop/")] == ["shop/s1/a", "shop/s1/c", "shop/s2/b"]
            assert any(".tmp-" in name for name in self.stored_names(target))
        assert [info.key for info in target.list_keys("shop/s1/")] == ["shop/s1/a", "shop/s1/c"]
        assert [info.key for info in target.list_keys("shop")][-1] == "shopping/s1/a"
        assert target.list_keys("missing/") == []

    def test_delete_removes_the_object_and_prunes_empty_directories(self, target: BlobTarget) -> None:
        write(target, "shop/s1/a", b"a")
        write(target, "shop/s2/b", b"b")
        target.delete("shop/s1/a")
        target.delete("shop/s1/a")  # deleting twice is not an error
        assert [info.key for info in target.list_keys("")] == ["shop/s2/b"]
        assert not any(name.startswith("shop/s1") for name in self.stored_names(target, directories=True))
        target.delete("shop/s2/b")
        assert self.stored_names(target, directories=True) == []

    def test_missing_object_is_a_clear_error(self, target: BlobTarget) -> None:
        with (
            pytest.raises(TargetError, match=r"'shop/none/x' not found") as caught,
            target.reader("shop/none/x"),
        ):
            pass
        assert not caught.value.transient

    @pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/.b.tmp-0123456789ab"])
    def test_invalid_keys_are_refused(self, target: BlobTarget, key: str) -> None:
        with pytest.raises(TargetError, match="invalid object key"), target.writer(key):
            pass

    def test_posture_reports_reachable_with_free_space(self, target: BlobTarget) -> None:
        write(target, "shop/s1/a", b"a")
        posture = target.posture()
        assert posture.reachable, posture.problems
        assert posture.medium == target.medium and posture.offsite == target.offsite
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


class TestLocalContract(BlobTargetContract):
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
    with pytest.raises(
        TargetError, match=r"target nas: disk full at .*store/shop/s1/\.db\.age\.tmp-"
    ) as caught:
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
