"""The archiver's spool: acks written atomically and read back strictly, locks, pruning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from backupctl.pitr import spool


def _ack(root: Path, name: str, data: bytes) -> tuple[Path, spool.Ack]:
    segment = root / name
    segment.write_bytes(data)
    digest, size = spool.plain_digest(segment)
    return segment, spool.Ack(name, digest, size, ("nas", "offsite"), time.time())


def test_an_ack_round_trips_and_matches_only_its_content(tmp_path: Path) -> None:
    acks = spool.prepare(tmp_path / "spool", "shop", "db")
    assert spool.private(acks) and spool.private(tmp_path / "spool")
    segment, ack = _ack(tmp_path, "000000010000000000000007", b"wal" * 1000)
    path = spool.write_ack(tmp_path / "spool", "shop", "db", ack)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p for p in os.listdir(acks) if p.startswith(".")] == []  # no temporary left
    read = spool.read_ack(tmp_path / "spool", "shop", "db", segment.name)
    assert read is not None and read.digest == ack.digest and read.targets == ("nas", "offsite")
    assert spool.matches(read, segment)
    segment.write_bytes(b"wal" * 999 + b"waL")  # same size, other content
    assert not spool.matches(read, segment)
    assert spool.read_ack(tmp_path / "spool", "shop", "db", "000000010000000000000008") is None


def test_a_truncated_or_foreign_ack_is_no_ack(tmp_path: Path) -> None:
    spool.prepare(tmp_path, "shop", "db")
    _, ack = _ack(tmp_path, "000000010000000000000009", b"x")
    path = Path(spool.write_ack(tmp_path, "shop", "db", ack))
    full = path.read_bytes()
    for damaged in (full[: len(full) // 2], b"", full.replace(b"name 0000", b"name 1111")):
        path.write_bytes(damaged)
        assert spool.read_ack(tmp_path, "shop", "db", "000000010000000000000009") is None


def test_a_segment_lock_excludes_another_process_and_dies_with_it(tmp_path: Path) -> None:
    spool.prepare(tmp_path, "shop", "db")
    where = spool.lock_path(tmp_path, "shop", "db", "000000010000000000000001")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl, os, time; fd = os.open({where!r}, os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not spool.SegmentLock(where).try_acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = spool.SegmentLock(where)
    assert lock.try_acquire()
    lock.release()


def test_the_archiver_lock_names_the_running_archiver(tmp_path: Path) -> None:
    spool.prepare(tmp_path, "shop", "db")
    assert spool.archiver_running(tmp_path, "shop", "db") is None
    fd = spool.hold_archiver_lock(tmp_path, "shop", "db")
    try:
        assert spool.archiver_running(tmp_path, "shop", "db") == os.getpid()
    finally:
        os.close(fd)
    assert spool.archiver_running(tmp_path, "shop", "db") is None


def test_prune_keeps_ready_and_recent_acks(tmp_path: Path) -> None:
    spool.prepare(tmp_path, "shop", "db")
    names = ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"]
    for name in names:
        _, ack = _ack(tmp_path, name, name.encode())
        spool.write_ack(tmp_path, "shop", "db", ack)
    old = time.time() - 7200
    for name in names[:2]:
        os.utime(spool.ack_path(tmp_path, "shop", "db", name), (old, old))
    removed = spool.prune(tmp_path, "shop", "db", still_ready={names[1]}, older_than=3600)
    assert removed == [names[0]]
    assert [spool.read_ack(tmp_path, "shop", "db", n) is not None for n in names] == [False, True, True]


def test_an_identity_is_recorded_only_for_a_file_that_stayed_the_same(tmp_path: Path) -> None:
    segment = tmp_path / "000000010000000000000004"
    segment.write_bytes(b"wal" * 100)
    time.sleep(0.05)
    started = time.time_ns()
    before = os.stat(segment)
    identity = spool.stable_identity(before, os.stat(segment), started)
    assert identity is not None
    command = ["stat", "-c", "%d %i %s %.9Y %.9Z", str(segment)]
    printed = subprocess.run(command, capture_output=True, text=True)
    assert identity == printed.stdout.strip()  # what archive_command's shell line compares with
    with segment.open("r+b") as handle:  # written while "read": ctime moves
        handle.write(b"W")
    assert spool.stable_identity(before, os.stat(segment), started) is None
    fresh = os.stat(segment)  # changed within a clock tick of the read's start: not vouched for
    assert spool.stable_identity(fresh, fresh, fresh.st_ctime_ns + spool.TICK_NS // 2) is None
    assert spool.stable_identity(fresh, fresh, fresh.st_ctime_ns + spool.TICK_NS + 1) is not None
    ack = spool.Ack(segment.name, "blake3:00", 300, ("nas",), time.time(), identity)
    assert ack.to_bytes().decode().splitlines()[1] == f"identity {identity}"
    read = spool.Ack.from_bytes(ack.to_bytes())
    assert read is not None and read.identity == identity
    old = spool.Ack.from_bytes(ack.to_bytes().replace(f"identity {identity}\n".encode(), b""))
    assert old is not None and old.identity is None  # acks written before identities still read
