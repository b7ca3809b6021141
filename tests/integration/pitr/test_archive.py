"""The generic segment archive (backupctl.pitr) on a local directory and on S3 (moto's server):
push/fetch round trips, idempotent re-push, conflicts, identity, signed records, chain gaps and
retention. A toy naming scheme (`log.000001`, `log.000002`...) stands in for a real source."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backupctl.core.crypto import generate_keys, load_signing_key, parse_identities, parse_recipients
from backupctl.errors import IntegrityError
from backupctl.pitr.archive import (
    ArchiveIdentityMismatch,
    SegmentArchive,
    SegmentConflict,
    SegmentMissing,
    SegmentRecord,
    push_to_all,
)
from backupctl.pitr.chain import check_chain, first_gap_after, rpo_seconds
from backupctl.pitr.retention import prune_segments
from backupctl.policy.schema import LocalTarget
from backupctl.targets.base import BlobTarget, build_target


class ToyRules:
    """`log.NNNNNN` names in sequence; `*.side` files are not chain members."""

    def in_chain(self, record: SegmentRecord) -> bool:
        return record.kind == "log"

    def sort_key(self, name: str) -> tuple[int, str]:
        stem = name.split(".")[1]
        return int(stem), name

    def successor(self, name: str) -> str:
        return f"log.{int(name.split('.')[1]) + 1:06d}"

    def missing_between(self, previous: str, following: str, limit: int) -> list[str]:
        low, high = int(previous.split(".")[1]), int(following.split(".")[1])
        return [f"log.{n:06d}" for n in range(low + 1, min(high, low + 1 + limit))]


RULES = ToyRules()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pitr-keys")
    generate_keys(directory)
    return directory


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobTarget]:
    if request.param == "local":
        made = build_target(LocalTarget(name="nas", type="local", path=str(tmp_path / "nas")))
    else:
        config: Callable[..., Any] = request.getfixturevalue("s3_target_config")
        made = build_target(config(prefix="archive/"))
    yield made
    made.close()


def archive_on(target: BlobTarget, keys: Path, source: str = "db") -> SegmentArchive:
    return SegmentArchive(
        target,
        "shop",
        source,
        recipients=parse_recipients([f"file:{keys}/age-recipient.txt"]),
        signing_key=load_signing_key(keys),
    )


def trusted(keys: Path) -> list[str]:
    return [(keys / "signing-ed25519.pub").read_text().strip()]


def identities(keys: Path) -> list[Any]:
    return parse_identities((keys / "age-identity.txt").read_text())


def segment_file(tmp_path: Path, name: str, seed: int, size: int = 64 * 1024) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(8) * 0 + bytes([seed % 256]) * size + name.encode())
    return path


def test_push_fetch_round_trip_is_encrypted_and_signed(
    target: BlobTarget, keys: Path, tmp_path: Path
) -> None:
    archive = archive_on(target, keys)
    source = segment_file(tmp_path, "log.000001", 7)
    pushed = archive.push(source, "log.000001", "log", {"first": 1})
    assert not pushed.already and pushed.record.plain_bytes == source.stat().st_size
    assert pushed.record.plain_digest.startswith("blake3:")
    keys_on_target = [info.key for info in target.list_keys("shop/")]
    assert keys_on_target == [
        "shop/pitr/db/records/log.000001.rec",
        "shop/pitr/db/segments/log.000001.zst.age",
    ]
    with target.reader(archive.segment_key("log.000001")) as handle:
        stored = handle.read()
    assert stored.startswith(b"age-encryption.org/v1") and source.read_bytes()[:64] not in stored
    out = tmp_path / "restored" / "log.000001"
    out.parent.mkdir()
    record = archive.fetch_to("log.000001", out, identities(keys), trusted(keys))
    assert out.read_bytes() == source.read_bytes() and record.meta == {"first": 1}
    assert [r.name for r in archive.list_records(trusted(keys))] == ["log.000001"]


def test_stored_segment_decrypts_with_the_age_and_zstd_clis(
    target: BlobTarget, keys: Path, tmp_path: Path
) -> None:
    archive = archive_on(target, keys)
    source = segment_file(tmp_path, "log.000001", 3)
    archive.push(source, "log.000001", "log")
    with target.reader(archive.segment_key("log.000001")) as handle:
        stored = handle.read()
    age = subprocess.run(
        ["age", "-d", "-i", str(keys / "age-identity.txt")], input=stored, capture_output=True, check=True
    )
    plain = subprocess.run(["zstd", "-d"], input=age.stdout, capture_output=True, check=True)
    assert plain.stdout == source.read_bytes()


def test_repush_identical_is_ok_and_different_is_a_conflict(
    target: BlobTarget, keys: Path, tmp_path: Path
) -> None:
    archive = archive_on(target, keys)
    source = segment_file(tmp_path, "log.000001", 1)
    first = archive.push(source, "log.000001", "log")
    again = archive.push(source, "log.000001", "log")
    assert again.already and again.record == first.record
    source.write_bytes(source.read_bytes()[:-1] + b"X")
    with pytest.raises(SegmentConflict, match="DIFFERENT content"):
        archive.push(source, "log.000001", "log")
    assert archive.read_record("log.000001", trusted=trusted(keys)) == first.record


def test_identity_is_claimed_once(target: BlobTarget, keys: Path) -> None:
    archive = archive_on(target, keys)
    archive.claim_identity("7312", description="system identifier")
    archive.claim_identity("7312", description="system identifier")
    with pytest.raises(ArchiveIdentityMismatch, match="belongs to system identifier 7312"):
        archive.claim_identity("9999", description="system identifier")


def test_flipped_byte_is_caught_before_the_file_appears(
    target: BlobTarget, keys: Path, tmp_path: Path
) -> None:
    archive = archive_on(target, keys)
    archive.push(segment_file(tmp_path, "log.000001", 5), "log.000001", "log")
    key = archive.segment_key("log.000001")
    with target.reader(key) as handle:
        stored = bytearray(handle.read())
    stored[len(stored) // 2] ^= 0x01
    with target.writer(key) as out:
        out.write(bytes(stored))
    destination = tmp_path / "restored"
    with pytest.raises(IntegrityError):
        archive.fetch_to("log.000001", destination, identities(keys), trusted(keys))
    assert not destination.exists() and list(tmp_path.glob(".restored*")) == []


def test_forged_record_and_missing_segment(target: BlobTarget, keys: Path, tmp_path: Path) -> None:
    archive = archive_on(target, keys)
    archive.push(segment_file(tmp_path, "log.000001", 5), "log.000001", "log")
    other = tmp_path / "other-keys"
    generate_keys(other)
    with pytest.raises(IntegrityError, match="does not verify"):
        archive.list_records(trusted(other))
    with pytest.raises(SegmentMissing, match=r"log\.000002"):
        archive.fetch_to("log.000002", tmp_path / "x", identities(keys), trusted(keys))
    target.delete(archive.segment_key("log.000001"))
    with pytest.raises(SegmentMissing, match="record but no data"):
        archive.fetch_to("log.000001", tmp_path / "x", identities(keys), trusted(keys))


def test_push_to_all_needs_every_target(target: BlobTarget, keys: Path, tmp_path: Path) -> None:
    broken_root = tmp_path / "readonly"
    broken_root.mkdir()
    broken = build_target(LocalTarget(name="broken", type="local", path=str(broken_root / "missing" / "x")))
    broken_root.chmod(0o500)
    try:
        archives = [archive_on(target, keys), archive_on(broken, keys)]
        source = segment_file(tmp_path, "log.000001", 9)
        if os.geteuid() == 0:  # root ignores directory permissions: use a file where a directory must be
            (broken_root.chmod(0o700), (broken_root / "missing").write_text("not a directory"))
        with pytest.raises(Exception, match="broken"):
            push_to_all(archives, source, "log.000001", "log")
        # the working target holds it; a retry once the broken one is fixed completes everywhere
        assert archives[0].read_record("log.000001", trusted=trusted(keys)) is not None
        (broken_root / "missing").unlink(missing_ok=True)
        broken_root.chmod(0o700)
        results = push_to_all(archives, source, "log.000001", "log")
        assert [r.already for r in results] == [True, False]
    finally:
        broken_root.chmod(0o700)


def test_chain_gaps_rpo_and_retention(target: BlobTarget, keys: Path, tmp_path: Path) -> None:
    archive = archive_on(target, keys)
    for number in (1, 2, 3, 4, 6, 7, 10):
        name = f"log.{number:06d}"
        archive.push(segment_file(tmp_path, name, number, 1024), name, "log")
    archive.push(segment_file(tmp_path, "side.000003", 0, 10), "side.000003", "side")
    records = archive.list_records(trusted(keys))
    report = check_chain(records, RULES)
    assert (report.first, report.last, report.count) == ("log.000001", "log.000010", 7)
    assert [gap.missing for gap in report.gaps] == [["log.000005"], ["log.000008", "log.000009"]]
    assert "missing log.000005 (between log.000004 and log.000006)" in report.gaps[0].describe()
    assert first_gap_after(records, RULES, "log.000002") == "log.000005"
    assert first_gap_after(records, RULES, "log.000006") == "log.000008"
    assert check_chain(records, RULES, start="log.000005").start_missing == "log.000005"
    assert check_chain(records, RULES, start="log.000001", end="log.000004").ok
    rpo = rpo_seconds(records)
    assert rpo is not None and 0 <= rpo < 120

    planned = prune_segments(archive, records, RULES, "log.000004", dry_run=True)
    assert planned.doomed == ["log.000001", "log.000002", "log.000003"]
    assert len(archive.list_names()) == 8
    done = prune_segments(archive, records, RULES, "log.000004")
    assert done.doomed == ["log.000001", "log.000002", "log.000003"] and not done.retained_by_lock
    assert archive.list_names() == ["log.000004", "log.000006", "log.000007", "log.000010", "side.000003"]
    assert "log.000001" not in archive.stored_segment_names()


def test_prune_stops_at_the_first_locked_segment(
    s3_target_config: Callable[..., Any], s3_client: Any, keys: Path, tmp_path: Path
) -> None:
    from backupctl.targets.s3_posture import apply_setup
    from tests.fixtures.s3 import empty_and_delete_bucket, new_bucket_name

    bucket = new_bucket_name("locked")
    config = s3_target_config(bucket=bucket, object_lock={"mode": "COMPLIANCE", "days": 1})
    apply_setup(config)
    target = build_target(config)
    try:
        archive = archive_on(target, keys)
        for number in (1, 2, 3):
            name = f"log.{number:06d}"
            archive.push(segment_file(tmp_path, name, number, 256), name, "log")
        records = archive.list_records(trusted(keys))
        done = prune_segments(archive, records, RULES, "log.000003")
        # the oldest is locked: pruning stops there, nothing newer is touched (no hole)
        assert done.retained_by_lock == ["log.000001"] and done.doomed == []
        assert archive.list_names() == ["log.000001", "log.000002", "log.000003"]
        assert check_chain(archive.list_records(trusted(keys)), RULES).ok
    finally:
        target.close()
        empty_and_delete_bucket(s3_client, bucket)
