"""The BlobTarget contract, as reusable checks any target implementation must pass.

What every blob target (local, S3, SFTP, ...) must do, whatever it stores on:
- atomic writes: an object is invisible (to `list_keys` and `reader`) while its writer is open,
  appears when the writer context exits cleanly, and never appears when an exception leaves the
  context (nothing of it is listed afterwards);
- byte-exact streaming round trips for sizes 0, 1, 5 MiB + 1 and 40 MiB (several parts for
  multipart writers), written in odd-sized chunks and read back in odd-sized chunks;
- overwrite replaces an object;
- `list_keys(prefix)`: complete objects only, sorted by key, filtered by plain string prefix
  (`"shop"` also matches `"shopping/..."`), keys relative to the target root, sizes exact;
- `delete`: the object is gone; deleting a missing object is not an error; others stay;
- reading a missing object raises a permanent TargetError;
- `posture()` of a working target: reachable, with the target's medium and offsite flag.

Two ways to use it:

1. pytest style, one test per check: subclass `BlobTargetContract` (the name must not start with
   `Test`; the subclass's must) and provide a `target` fixture yielding a fresh, empty target:

       class TestS3Contract(BlobTargetContract):
           @pytest.fixture
           def target(self, s3_target_config):
               target = build_target(s3_target_config())
               yield target
               target.close()

   Target-specific extras (temp files on disk, lock behaviour) go in the subclass as more tests.

2. one call: `run_contract(factory)` runs every check, each on a fresh target from `factory()`
   (closed afterwards), and raises AssertionError naming the failed check.

The checks are also plain functions (`check_*`) taking a target, for ad-hoc use.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pytest

from backupctl.errors import TargetError
from backupctl.targets.base import BlobTarget

MiB = 1024 * 1024
SIZES = [0, 1, 5 * MiB + 1, 40 * MiB]
WRITE_CHUNK = MiB + 7  # odd sizes: part boundaries never line up with write calls
READ_CHUNK = 256 * 1024 + 3


# --------------------------------------------------------------------------- helpers
def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-periodic bytes: swapped or repeated parts show up as a mismatch."""
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def chunks(data: bytes, size: int = WRITE_CHUNK) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def write(target: BlobTarget, key: str, data: bytes, chunk: int = WRITE_CHUNK) -> None:
    """Write `data` through the target's writer in `chunk`-sized calls."""
    with target.writer(key) as out:
        for piece in chunks(data, chunk):
            out.write(piece)


def read(target: BlobTarget, key: str, chunk: int = READ_CHUNK) -> bytes:
    """Read an object back through the target's reader in `chunk`-sized calls."""
    with target.reader(key) as stream:
        return drain(stream, chunk)


def drain(stream: BinaryIO, chunk: int = READ_CHUNK) -> bytes:
    parts = []
    while block := stream.read(chunk):
        parts.append(block)
    return b"".join(parts)


def keys(target: BlobTarget, prefix: str = "") -> list[str]:
    return [info.key for info in target.list_keys(prefix)]


def assert_missing(target: BlobTarget, key: str) -> None:
    """`key` is neither listed nor readable (reading raises a permanent TargetError)."""
    assert key not in keys(target), f"{key} is listed"
    with pytest.raises(TargetError) as caught, target.reader(key):
        pass
    assert not caught.value.transient, caught.value


# --------------------------------------------------------------------------- the checks
def check_round_trip(target: BlobTarget, size: int) -> None:
    """The bytes read back are the bytes written; the listed size is exact."""
    data = payload(size)
    key = f"shop/s{size}/db.pgdump.zst.age"
    write(target, key, data)
    back = read(target, key)
    assert len(back) == size, f"read {len(back)} bytes of {size}"
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest(), "content differs"
    [info] = target.list_keys(f"shop/s{size}/")
    assert (info.key, info.size) == (key, size)


def check_invisible_until_committed(target: BlobTarget) -> None:
    """While the writer is open, after some data (more than one 5 MiB part), nothing shows."""
    key = "shop/s1/db.pgdump.zst.age"
    data = payload(6 * MiB + 3)
    with target.writer(key) as out:
        for piece in chunks(data):
            out.write(piece)
        assert keys(target) == []
        assert_missing(target, key)
    assert keys(target) == [key]
    assert read(target, key) == data


def check_failed_writer_leaves_nothing(target: BlobTarget) -> None:
    """An exception inside the writer context discards the object (small and multi-part)."""
    for size in (100, 11 * MiB):
        key = f"shop/s{size}/db.pgdump.zst.age"
        with pytest.raises(RuntimeError, match="source died"), target.writer(key) as out:
            for piece in chunks(payload(size)):
                out.write(piece)
            raise RuntimeError("source died")
        assert_missing(target, key)
    assert keys(target) == []


def check_overwrite_replaces(target: BlobTarget) -> None:
    write(target, "shop/s1/manifest.json", b"old")
    write(target, "shop/s1/manifest.json", b"new contents")
    assert read(target, "shop/s1/manifest.json") == b"new contents"
    assert [info.size for info in target.list_keys("shop/s1/")] == [len(b"new contents")]


def check_list_sorted_and_filtered(target: BlobTarget) -> None:
    for key in ["shop/s2/b", "shop/s1/c", "shop/s1/a", "shopping/s1/a", "other/s1/a"]:
        write(target, key, key.encode())
    with target.writer("shop/s3/partial") as out:
        out.write(b"half written")
        assert keys(target, "shop/") == ["shop/s1/a", "shop/s1/c", "shop/s2/b"]
    assert keys(target, "shop/s1/") == ["shop/s1/a", "shop/s1/c"]
    assert keys(target, "shop") == ["shop/s1/a", "shop/s1/c", "shop/s2/b", "shop/s3/partial", "shopping/s1/a"]
    assert keys(target) == sorted(keys(target))
    assert keys(target, "missing/") == []
    assert {info.key: info.size for info in target.list_keys("other/")} == {"other/s1/a": len(b"other/s1/a")}


def check_delete(target: BlobTarget) -> None:
    write(target, "shop/s1/a", b"a")
    write(target, "shop/s2/b", b"b")
    target.delete("shop/s1/a")
    target.delete("shop/s1/a")  # a second delete is not an error
    target.delete("shop/never/written")
    assert keys(target) == ["shop/s2/b"]
    assert_missing(target, "shop/s1/a")
    assert read(target, "shop/s2/b") == b"b"


def check_missing_object(target: BlobTarget) -> None:
    assert_missing(target, "shop/none/x")


def check_posture_reachable(target: BlobTarget) -> None:
    posture = target.posture()
    assert posture.reachable, posture.problems
    assert (posture.medium, posture.offsite) == (target.medium, target.offsite)


CHECKS: list[tuple[str, Callable[[BlobTarget], None]]] = [
    *[(f"round_trip_{size}B", lambda target, size=size: check_round_trip(target, size)) for size in SIZES],
    ("invisible_until_committed", check_invisible_until_committed),
    ("failed_writer_leaves_nothing", check_failed_writer_leaves_nothing),
    ("overwrite_replaces", check_overwrite_replaces),
    ("list_sorted_and_filtered", check_list_sorted_and_filtered),
    ("delete", check_delete),
    ("missing_object", check_missing_object),
    ("posture_reachable", check_posture_reachable),
]


def run_contract(factory: Callable[[], BlobTarget]) -> None:
    """Run every check, each on a fresh target from `factory()`; raise AssertionError naming
    the first failing check."""
    for name, check in CHECKS:
        target = factory()
        try:
            check(target)
        except AssertionError as error:
            raise AssertionError(f"contract check '{name}' failed: {error}") from error
        finally:
            target.close()


# --------------------------------------------------------------------------- pytest style
class BlobTargetContract:
    """Mix-in: every contract check as its own test. Subclasses provide a `target` fixture
    (a fresh, empty target, closed after the test)."""

    @pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size}B")
    def test_round_trip_keeps_bytes(self, target: BlobTarget, size: int) -> None:
        check_round_trip(target, size)

    def test_object_invisible_until_writer_exits(self, target: BlobTarget) -> None:
        check_invisible_until_committed(target)

    def test_failed_writer_leaves_nothing(self, target: BlobTarget) -> None:
        check_failed_writer_leaves_nothing(target)

    def test_overwrite_replaces_the_object(self, target: BlobTarget) -> None:
        check_overwrite_replaces(target)

    def test_list_is_sorted_filtered_and_complete_only(self, target: BlobTarget) -> None:
        check_list_sorted_and_filtered(target)

    def test_delete_removes_the_object(self, target: BlobTarget) -> None:
        check_delete(target)

    def test_missing_object_is_a_permanent_error(self, target: BlobTarget) -> None:
        check_missing_object(target)

    def test_posture_is_reachable(self, target: BlobTarget) -> None:
        check_posture_reachable(target)
