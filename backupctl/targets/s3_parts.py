"""Where the S3 writer keeps the parts of a multipart upload until S3 has acknowledged them.

A part must stay readable until its UploadPart succeeds: botocore hashes the body (SigV4 payload
hash over HTTP, CRC32 header or aws-chunked trailer) and rewinds it for every retry, so the bytes
of every part in flight are held somewhere. With `max_concurrency` parts in flight and one being
filled that is (max_concurrency + 1) x part size: 80 MiB at the defaults.

- `SpooledParts` (the default) keeps them in one private temporary file in the spool directory
  (backupctl.core.spool: $BACKUPCTL_SPOOL_DIR, else the system temp directory): opened 0600 and
  already unlinked, so no other user can read it and nothing is left behind even after a kill;
  its blocks are reserved up front (posix_fallocate), so a disk filling later cannot fail an
  upload midway. Measured (docs/benchmarks.md, "Off-site"): a 1 GiB upload peaked at 163 MiB RSS
  with the parts in memory against 72 MiB for boto3's `upload_file`; with the file the process
  stays at boto3's level, the page cache holds the parts.
- `MemoryParts` is the fallback when the spool directory has no room for the slots plus the
  spool's reserve (`SpoolPlan.decide`) or cannot be written: preallocated part-sized buffers,
  filled in place, never grown or copied.

Either way botocore gets a `PartBody`: a seekable, read-only view of one slot that reads the
bytes where they are (no copy of the part; botocore would copy a bytearray body into a BytesIO
for the aws-chunked CRC32 trailer it uses over HTTPS). A slot is reused only after its upload
has finished, so a retry re-sends exactly the same bytes.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from backupctl.core.spool import SpoolPlan

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger("backupctl.targets.s3")


class PartSlots(Protocol):
    """`count` slots of `part_size` bytes each; slots are written by one thread, read by many."""

    count: int
    part_size: int
    where: str  # for logs: the spool file's directory, or "memory"

    def write(self, slot: int, offset: int, data: ReadableBuffer) -> None: ...

    def read(self, slot: int, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class SpooledParts:
    """Slots in one private, unlinked, preallocated temporary file."""

    def __init__(self, file: io.BufferedRandom, directory: Path, count: int, part_size: int) -> None:
        self._file = file
        self._descriptor = file.fileno()
        self.count = count
        self.part_size = part_size
        self.where = str(directory)

    def write(self, slot: int, offset: int, data: ReadableBuffer) -> None:
        view = memoryview(data).cast("B")
        position = slot * self.part_size + offset
        while len(view):  # pwrite may write less than asked (signals, very large writes)
            written = os.pwrite(self._descriptor, view, position)
            view, position = view[written:], position + written

    def read(self, slot: int, offset: int, size: int) -> bytes:
        # pread: positional, so part threads read their own slots without sharing a file offset.
        return os.pread(self._descriptor, size, slot * self.part_size + offset)

    def close(self) -> None:
        self._file.close()


class MemoryParts:
    """Slots in part-sized buffers, allocated on first use and filled in place."""

    where = "memory"

    def __init__(self, count: int, part_size: int) -> None:
        self.count = count
        self.part_size = part_size
        self._buffers: dict[int, bytearray] = {}

    def write(self, slot: int, offset: int, data: ReadableBuffer) -> None:
        view = memoryview(data).cast("B")
        buffer = self._buffers.get(slot)
        if buffer is None:
            buffer = self._buffers[slot] = bytearray(self.part_size)
        buffer[offset : offset + len(view)] = view

    def read(self, slot: int, offset: int, size: int) -> bytes:
        buffer = self._buffers.get(slot)
        if buffer is None:
            return b""
        with memoryview(buffer) as view:
            return bytes(view[offset : offset + size])

    def close(self) -> None:
        self._buffers.clear()


def open_part_slots(count: int, part_size: int, directory: Path | None = None) -> PartSlots:
    """A spool file for `count` slots when its directory has room (plus the spool reserve),
    else memory; the reason for memory is logged."""
    size = count * part_size
    plan = SpoolPlan.decide(size, directory)
    if not plan.possible:
        log.info("S3 upload parts held in memory (%d MiB): %s", size >> 20, plan.reason)
        return MemoryParts(count, part_size)
    file: io.BufferedRandom | None = None
    try:
        # TemporaryFile: created 0600 and unlinked at once (O_TMPFILE where available).
        file = tempfile.TemporaryFile(prefix="backupctl-s3-parts-", dir=plan.directory)  # noqa: SIM115 (kept by SpooledParts)
        os.posix_fallocate(file.fileno(), 0, size)
    except OSError as error:
        if file is not None:
            file.close()
        log.info(
            "S3 upload parts held in memory (%d MiB): cannot reserve them in %s: %s",
            size >> 20,
            plan.directory,
            error.strerror or error,
        )
        return MemoryParts(count, part_size)
    return SpooledParts(file, plan.directory, count, part_size)


class PartBody(io.RawIOBase):
    """The body botocore sends for one part: `length` bytes of a slot, seekable, read in place."""

    def __init__(self, slots: PartSlots, slot: int, length: int) -> None:
        super().__init__()
        self._slots = slots
        self._slot = slot
        self._length = length
        self._position = 0

    def __len__(self) -> int:  # botocore's determine_content_length asks len() first
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._position
        wanted = remaining if size is None or size < 0 else min(size, remaining)
        if wanted <= 0:
            return b""
        data = self._slots.read(self._slot, self._position, wanted)
        self._position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
