"""The target contracts, as reusable checks: BlobTarget (below) and SnapshotStore (at the end).

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
- `posture()` of a working target: reachable, with the target's medium and offsite flag;
- `sweep_partial(prefix, before=...)`: the partial write of a writer that never finished (a
  killed process) is listed with its bytes and removed; nothing complete is touched, and a
  partial write begun after `before` is left alone.

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
import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from backupctl.core.crypto import SigningKey
from backupctl.core.manifest import ArtifactRecord, Manifest, new_snapshot_id, utc_now_text
from backupctl.errors import IntegrityError, TargetError
from backupctl.targets.base import BlobTarget
from backupctl.targets.registry import traits_of
from backupctl.targets.store import SnapshotStore, open_store

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


def check_sweep_partial(target: BlobTarget, times_reported: bool = True) -> None:
    """`times_reported=False`: the service reports no real start time of a partial write
    (moto lists every multipart upload as initiated on 2010-11-10), so "begun after `before`"
    cannot be checked."""
    import time

    write(target, "shop/s1/a", b"complete")
    # A writer that never exits its context: what a killed process leaves (6 MiB: S3 has begun
    # a multipart upload, local and SFTP a temporary file).
    abandoned = target.writer("shop/s2/big")
    out = abandoned.__enter__()
    out.write(payload(6 * MiB, seed=3))
    out.flush()
    try:
        if times_reported:
            assert target.sweep_partial("shop/", before=time.time() - 3600) == []  # begun later: kept
        found = target.sweep_partial("shop/", before=time.time() + 1, dry_run=True)
        deadline = time.monotonic() + 10
        while found and found[0].size == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # S3: the first part is still uploading in the writer's thread
            found = target.sweep_partial("shop/", before=time.time() + 1, dry_run=True)
        assert [info.key.split("/")[:2] for info in found] == [["shop", "s2"]] and found[0].size > 0
        removed = target.sweep_partial("shop/", before=time.time() + 1)
        assert [info.key for info in removed] == [info.key for info in found]
        assert target.sweep_partial("shop/", before=time.time() + 1) == []
        assert keys(target) == ["shop/s1/a"]
    finally:
        try:
            abandoned.__exit__(RuntimeError, RuntimeError("killed"), None)
        except Exception:
            pass  # its upload or temporary file is gone already


CHECKS: list[tuple[str, Callable[[BlobTarget], None]]] = [
    *[(f"round_trip_{size}B", lambda target, size=size: check_round_trip(target, size)) for size in SIZES],
    ("invisible_until_committed", check_invisible_until_committed),
    ("failed_writer_leaves_nothing", check_failed_writer_leaves_nothing),
    ("overwrite_replaces", check_overwrite_replaces),
    ("list_sorted_and_filtered", check_list_sorted_and_filtered),
    ("delete", check_delete),
    ("missing_object", check_missing_object),
    ("posture_reachable", check_posture_reachable),
    ("sweep_partial", check_sweep_partial),
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

    times_reported = True  # see check_sweep_partial

    def test_sweep_partial_removes_what_a_dead_writer_left(self, target: BlobTarget) -> None:
        check_sweep_partial(target, self.times_reported)


# =========================================================================== snapshot level
# The SnapshotStore contract (backupctl.targets.store; docs/targets.md, "The target contract"),
# for every kind, restic included:
# - round trip: a stored plain stream plus its signed manifest is listed, its manifest
#   authenticates, `open_plain` gives back the same bytes and `check_artifacts` finds nothing;
# - atomicity: a stream that fails while being stored, or stored without a manifest, leaves
#   no snapshot listed;
# - tamper detection: a manifest signed by an untrusted key is refused; a manifest whose digest
#   differs from what the store holds is reported by `check_artifacts`;
# - deletion: a deleted snapshot is no longer listed (each kind's test file adds deletion under
#   its lock: S3 object lock, restic's repository lock);
# - posture: reachable, with the target's offsite flag and the registry's traits.
# Subclass `SnapshotStoreContract` (name not starting with `Test`) and provide a `store`
# fixture yielding a fresh, empty, ready store.


@dataclass
class SnapshotKeys:
    signing: SigningKey
    trusted: list[str]
    identity: x25519.Identity

    @property
    def recipients(self) -> list[x25519.Recipient]:
        return [self.identity.to_public()]


def snapshot_keys() -> SnapshotKeys:
    signing = SigningKey(Ed25519PrivateKey.generate())
    return SnapshotKeys(signing, [signing.public_b64], x25519.Identity.generate())


class FailingStream(io.RawIOBase):
    """Gives `limit` bytes of `data`, then raises: a dump that dies half-way."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__()
        self.data, self.offset, self.limit = data, 0, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.offset >= self.limit:
            raise RuntimeError("source died")
        view = memoryview(buffer).cast("B")
        piece = self.data[self.offset : min(self.offset + len(view), self.limit)]
        view[: len(piece)] = piece
        self.offset += len(piece)
        return len(piece)


def store_snapshot(
    store: SnapshotStore, keys: SnapshotKeys, data: bytes, *, policy: str = "shop", tamper: bool = False
) -> tuple[str, Manifest]:
    """Store `data` as source `shop-db` of a new snapshot, then its signed manifest (whose plain
    digest lies when `tamper`). The snapshot id and the manifest."""
    snapshot_id = new_snapshot_id()
    stored = store.store_stream(policy, snapshot_id, "shop-db", "pgdump", io.BytesIO(data), keys.recipients)
    digest = stored.plain_digest
    if tamper:
        algorithm, _, hexdigest = digest.partition(":")
        digest = f"{algorithm}:{'0' * len(hexdigest)}"
    record = ArtifactRecord(
        source="shop-db", source_type="postgres", file=stored.file, format="pgdump",
        plain_bytes=stored.plain_bytes, plain_digest=digest, stored_bytes=stored.stored_bytes,
        stored_sha256=stored.stored_sha256,
    )  # fmt: skip
    manifest = Manifest(
        snapshot_id=snapshot_id, policy=policy, policy_sha256="0" * 64, host="contract",
        backupctl_version="test", started_at=utc_now_text(), finished_at=utc_now_text(),
        recipients=[str(r) for r in keys.recipients], signing_public_key=keys.signing.public_b64,
        artifacts=[record],
    )  # fmt: skip
    store.write_manifest(manifest, keys.signing)
    return snapshot_id, manifest


SNAPSHOT_DATA = payload(300 * 1024 + 7, seed=11)


class SnapshotStoreContract:
    @pytest.fixture
    def keys(self) -> SnapshotKeys:
        return snapshot_keys()

    def test_round_trip(self, store: SnapshotStore, keys: SnapshotKeys) -> None:
        snapshot_id, manifest = store_snapshot(store, keys, SNAPSHOT_DATA)
        assert store.snapshot_ids("shop") == [snapshot_id]
        assert store.snapshot_ids("other") == []
        signed = store.read_manifest("shop", snapshot_id, keys.trusted)
        assert signed is not None and signed.manifest.artifacts == manifest.artifacts
        artifact = signed.manifest.artifacts[0]
        assert artifact.plain_bytes == len(SNAPSHOT_DATA)
        with store.open_plain("shop", snapshot_id, artifact, [keys.identity]) as stream:
            assert drain(stream) == SNAPSHOT_DATA
        checks, problems = store.check_artifacts(
            "shop", snapshot_id, signed.manifest, {"shop-db"}, [keys.identity]
        )
        assert problems == [] and checks and all(check.ok for check in checks)

    def test_failed_store_leaves_no_snapshot(self, store: SnapshotStore, keys: SnapshotKeys) -> None:
        snapshot_id = new_snapshot_id()
        with pytest.raises(RuntimeError, match="source died"):
            store.store_stream(
                "shop",
                snapshot_id,
                "shop-db",
                "pgdump",
                FailingStream(SNAPSHOT_DATA, 100_000),
                keys.recipients,
            )
        # A stream stored completely but never given its manifest is no snapshot either.
        store.store_stream("shop", snapshot_id, "shop-db", "pgdump", io.BytesIO(b"x" * 1000), keys.recipients)
        assert store.snapshot_ids("shop") == []

    def test_untrusted_manifest_is_refused(self, store: SnapshotStore, keys: SnapshotKeys) -> None:
        snapshot_id, _ = store_snapshot(store, keys, SNAPSHOT_DATA)
        with pytest.raises(IntegrityError):
            store.read_manifest("shop", snapshot_id, snapshot_keys().trusted)

    def test_copy_differing_from_its_manifest_is_reported(
        self, store: SnapshotStore, keys: SnapshotKeys
    ) -> None:
        snapshot_id, _ = store_snapshot(store, keys, SNAPSHOT_DATA, tamper=True)
        signed = store.read_manifest("shop", snapshot_id, keys.trusted)
        assert signed is not None
        checks, problems = store.check_artifacts(
            "shop", snapshot_id, signed.manifest, {"shop-db"}, [keys.identity]
        )
        assert problems and not all(check.ok for check in checks)

    def test_deleted_snapshot_is_no_longer_listed(self, store: SnapshotStore, keys: SnapshotKeys) -> None:
        kept, _ = store_snapshot(store, keys, SNAPSHOT_DATA)
        doomed, _ = store_snapshot(store, keys, SNAPSHOT_DATA[:1000])
        deletion = store.delete_snapshots("shop", [doomed], set())
        assert deletion.removed == [doomed] and deletion.errors == [] and deletion.locked == []
        assert store.snapshot_ids("shop") == [kept]

    def test_discard_removes_a_snapshot_that_did_not_complete(
        self, store: SnapshotStore, keys: SnapshotKeys
    ) -> None:
        import time

        kept, _ = store_snapshot(store, keys, SNAPSHOT_DATA)
        # Complete here, signed manifest included, but its run failed: discard removes it all.
        doomed, _ = store_snapshot(store, keys, payload(200 * 1024, seed=12))
        never = new_snapshot_id()  # nothing stored: nothing to do, and not an error
        dry = store.discard_snapshots("shop", [doomed, never], before=time.time(), dry_run=True)
        assert dry[0].objects > 0 and set(store.snapshot_ids("shop")) == {kept, doomed}
        first, second = store.discard_snapshots("shop", [doomed, never], before=time.time())
        assert (first.snapshot_id, second.snapshot_id) == (doomed, never)
        assert first.clean and first.objects == dry[0].objects and first.bytes_reclaimed > 0, first
        assert second.clean and second.objects == 0, second
        assert store.snapshot_ids("shop") == [kept]
        (again,) = store.discard_snapshots("shop", [doomed], before=time.time())
        assert again.clean and again.objects == 0

    def test_posture_is_reachable_with_the_registry_traits(self, store: SnapshotStore, config: Any) -> None:
        posture = store.posture()
        assert posture.reachable, posture.problems
        assert posture.offsite == store.offsite == config.offsite
        assert store.traits == traits_of(config)
        assert open_store(config).traits == store.traits  # what actions get for this config
