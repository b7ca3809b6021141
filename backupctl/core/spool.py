"""A private spool file for tools that need to seek in a stream (pg_restore --jobs).

Parallel pg_restore reads its archive's table of contents and then seeks to each table's data:
it needs a file, not a pipe. Spooling costs one sequential write + read of the plain dump, which
the parallel restore wins back several times on any machine with two or more cores (measured in
docs/benchmarks.md). The spool:

- lives in a fresh 0700 directory (`tempfile.mkdtemp`) as a 0600 file, so no other user can read
  the plain dump while it exists, and is removed when the context exits, also on errors;
- is only started when the file system has room for the expected size plus a reserve
  (`SpoolPlan.decide`); with no room the caller streams instead and says why;
- stops by itself if free space falls under the reserve while writing (another process filling
  the disk): `Spool.fill` then returns False and the caller replays what was spooled followed by
  the rest of the stream (`Spool.replay`), so nothing is lost and the restore still completes.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

log = logging.getLogger("backupctl.spool")

CHUNK = 1 << 20
RESERVE_BYTES = 256 << 20  # never fill a file system to the last byte: leave room for the database
RESERVE_FRACTION = 0.05  # ... and at least 5 % of it
FREE_CHECK_EVERY = 64 << 20  # statvfs once per 64 MiB written: cheap, and bounds the overshoot


def default_jobs() -> int:
    """Parallel jobs for a restore: one per CPU this process may use, at most 8.

    Beyond 8, pg_restore's workers mostly wait on the same disk; the cap keeps a restore on a
    large host from starving the server it restores into.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def spool_directory() -> Path:
    """Where spools go: $BACKUPCTL_SPOOL_DIR, else the system temporary directory."""
    configured = os.environ.get("BACKUPCTL_SPOOL_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir())


def reserve_bytes(directory: Path) -> int:
    """Free space a spool must leave on the file system of `directory`."""
    total = shutil.disk_usage(directory).total
    return max(RESERVE_BYTES, int(total * RESERVE_FRACTION))


@dataclass(frozen=True)
class SpoolPlan:
    """Whether a stream of `expected_bytes` can be spooled under `directory`, and why not."""

    directory: Path
    possible: bool
    reason: str

    @classmethod
    def decide(cls, expected_bytes: int | None, directory: Path | None = None) -> SpoolPlan:
        """Check the free space before anything is written.

        `expected_bytes` is the plain size the manifest recorded; None when unknown (then only the
        running check in `Spool.fill` protects the file system).
        """
        where = directory or spool_directory()
        try:
            usage = shutil.disk_usage(where)
        except OSError as error:
            return cls(where, False, f"cannot use {where} for a spool file: {error.strerror or error}")
        reason = lack_of_room(str(where), expected_bytes, usage.free, usage.total)
        if reason:
            return cls(where, False, f"{reason} (set BACKUPCTL_SPOOL_DIR to a larger file system)")
        return cls(where, True, "")


def lack_of_room(where: str, expected_bytes: int | None, free: int, total: int) -> str:
    """Why a file system with `free` of `total` bytes cannot take a spool of `expected_bytes`
    and keep its reserve; "" when it can. (Shared by host spools and staging containers'.)"""
    needed = (expected_bytes or 0) + max(RESERVE_BYTES, int(total * RESERVE_FRACTION))
    if free < needed:
        return f"{where} has {_gib(free)} free; spooling {_gib(expected_bytes or 0)} needs {_gib(needed)}"
    return ""


class HeadPatch(Protocol):
    """Sees the spooled bytes in order; then may rewrite the start of the spool in place (same
    length), e.g. sources/pg_toc.py's DataOffsets: the data positions of a pg_dump archive."""

    def feed(self, chunk: bytes) -> None: ...

    def patched_head(self) -> bytes | None: ...


def restore_with_spool(
    stream: BinaryIO,
    jobs: int,
    size_hint: int | None,
    serial: Callable[[BinaryIO], None],
    parallel: Callable[[Path, int], None],
    notes: list[str],
    patch: HeadPatch | None = None,
) -> int:
    """Restore `stream` with `parallel(spool_path, jobs)` when `jobs` > 1 and it can be spooled,
    else with `serial(stream)`; returns the jobs used, and appends to `notes` why a parallel
    restore fell back to one job (no room, or the disk filled while spooling: then what was
    spooled is replayed followed by the rest, so nothing is lost). `patch` sees the spooled
    bytes and, when it has a patched head for them, that is written over the spool's start."""
    if jobs <= 1:
        serial(stream)
        return 1
    plan = SpoolPlan.decide(size_hint)
    if not plan.possible:
        notes.append(f"restored with one job: {plan.reason}")
        serial(stream)
        return 1
    with private_spool(plan.directory, suffix=".pgdump") as spool:
        if not spool.fill(stream, patch.feed if patch else None):
            notes.append(spool.stopped_reason)
            serial(spool.replay(stream))
            return 1
        head = patch.patched_head() if patch else None
        if head:
            spool.overwrite_head(head)
            log.debug("spool head rewritten (%d bytes)", len(head))
        parallel(spool.path, jobs)
    return jobs


class Spool:
    """A private file being filled from a stream; see the module docstring."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file = file
        self.path = path
        self.written = 0
        self.stopped_reason = ""

    def fill(self, stream: BinaryIO, observe: Callable[[bytes], None] | None = None) -> bool:
        """Copy `stream` into the spool (each chunk also to `observe`). True when the whole stream
        is spooled; False when free space ran under the reserve first (see `stopped_reason`; the
        stream is left positioned after the spooled part)."""
        reserve = reserve_bytes(self.path.parent)
        since_check = 0
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            self.file.write(chunk)
            if observe is not None:
                observe(chunk)
            self.written += len(chunk)
            since_check += len(chunk)
            if since_check >= FREE_CHECK_EVERY:
                since_check = 0
                free = shutil.disk_usage(self.path.parent).free
                if free < reserve:
                    self.stopped_reason = (
                        f"free space on {self.path.parent} fell to {_gib(free)} while spooling; "
                        "continued as a stream with one job"
                    )
                    self.file.flush()
                    return False
        self.file.flush()
        return True

    def overwrite_head(self, head: bytes) -> None:
        """Write `head` over the start of the filled spool (it must not be longer than it)."""
        if len(head) > self.written:
            raise ValueError("a spool's head cannot grow it")
        self.file.flush()
        os.pwrite(self.file.fileno(), head, 0)

    def replay(self, rest: BinaryIO) -> BinaryIO:
        """A stream of what was spooled followed by the unread rest of the original stream."""
        self.file.seek(0)
        return typing.cast(BinaryIO, io.BufferedReader(_Concatenated(self.file, rest), CHUNK))


@contextmanager
def private_directory(directory: Path) -> Iterator[Path]:
    """A fresh 0700 directory under `directory` (files made in it with a 0077 umask stay
    private), removed with everything in it on exit."""
    private_dir = Path(tempfile.mkdtemp(prefix="backupctl-spool-", dir=directory))
    try:
        yield private_dir
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)


@contextmanager
def private_spool(directory: Path, suffix: str = "") -> Iterator[Spool]:
    """A 0600 file in a fresh 0700 directory under `directory`; both removed on exit."""
    with private_directory(directory) as private_dir:
        path = private_dir / f"spool{suffix}"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w+b") as file:
            yield Spool(file, path)


class _Concatenated(io.RawIOBase):
    """Read `first` to its end, then `second`."""

    def __init__(self, first: BinaryIO, second: BinaryIO) -> None:
        self._parts = [first, second]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._parts:
            data = self._parts[0].read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._parts.pop(0)
        return 0


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.2f} GiB"
