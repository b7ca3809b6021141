"""Data offsets for a pg_dump custom-format archive that was written to a pipe.

pg_dump writes each table's data position into the archive's table of contents (TOC) only when
its output is a seekable file; backupctl's dumps go through a pipe, so every TABLE DATA entry
says "position not set". A parallel `pg_restore --jobs N` of such a file makes each worker scan
the data blocks before the one it wants (with `-Z0` one block header per row): on the 1 GiB shop
database pg_restore took 3.7 CPU-s instead of 0.7 (docs/benchmarks.md, issue #17, session 10).
`DataOffsets` watches the plain archive while it is spooled, finds where each data block starts,
and gives back the header + TOC with the positions filled in (same length: it is written over
the start of the spool in place).

It only ever patches what it fully understands, and otherwise returns None (the spool is then
restored as it is, as before):

- archive versions 1.12-1.16 (pg_dump 9.0 to 17; the tests run the installed pg_dump, 15:
  1.14), integers of 4 bytes, offsets of 8;
- no compression: uncompressed COPY or INSERT text is a C string and holds no NUL byte, and a
  chunk's non-zero length (a sign byte and 4 bytes) holds at most 4 zero bytes, between text
  bytes; so in a data block the first run of `1 + intSize` zero bytes after the block header is
  the block's end marker (a zero length). Compressed data, or any entry with data other than
  TABLE DATA (large objects are binary), and nothing is patched;
- every data block found must be announced by a TOC entry whose position is unset, in order,
  each exactly once, and the stream must end right after the last block's end marker.
pg_restore checks the block id it finds at each position as well ("found unexpected block ID").
"""

from __future__ import annotations

import io
import typing
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
OFFSET_NOT_SET = 1  # K_OFFSET_POS_NOT_SET in pg_backup_archiver.h
OFFSET_SET = 2  # K_OFFSET_POS_SET
BLOCK_DATA = 1  # BLK_DATA in pg_backup_custom.c
MIN_VERSION = (1, 12)
MAX_VERSION = (1, 16)
HEAD_LIMIT = 64 << 20  # a TOC larger than this is not worth holding in memory: do not patch


class _Incomplete(Exception):
    """More bytes are needed to parse the header and TOC."""


class _Unsupported(Exception):
    """Something this module does not fully understand: leave the archive as it is."""


@dataclass(frozen=True)
class _Toc:
    end: int  # where the data blocks start
    int_size: int
    offset_size: int
    unset: dict[int, int]  # dump id -> position of its offset field (flag byte) in the TOC
    order: list[int]  # dump ids with unset positions, in TOC order


class _Reader:
    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data
        self.pos = 0
        self.int_size = 4

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise _Incomplete
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        if sign not in (0, 1):
            raise _Unsupported(f"integer sign byte {sign}")
        return -value if sign else value

    def string(self) -> bytes | None:
        length = self.integer()
        if length < 0:
            return None
        if length > HEAD_LIMIT:
            raise _Unsupported("string longer than the TOC limit")
        return self.take(length)


def _parse_toc(data: bytes | bytearray) -> _Toc:
    """Parse the header and TOC of a custom-format archive (ReadHead, ReadToc and the custom
    format's ReadExtraToc in PostgreSQL's pg_dump sources)."""
    reader = _Reader(data)
    if reader.take(5) != MAGIC:
        raise _Unsupported("not a custom-format archive")
    version = (reader.byte(), reader.byte())
    reader.byte()  # revision
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise _Unsupported(f"archive version {version}")
    reader.int_size = reader.byte()
    offset_size = reader.byte()
    if reader.int_size != 4 or offset_size != 8:
        raise _Unsupported(f"integer size {reader.int_size}, offset size {offset_size}")
    if reader.byte() != FORMAT_CUSTOM:
        raise _Unsupported("not the custom format")
    compressed = reader.byte() != 0 if version >= (1, 15) else reader.integer() != 0
    if compressed:
        raise _Unsupported("compressed data")
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.integer()
    for _ in range(3):  # database name, server version, pg_dump version
        reader.string()
    count = reader.integer()
    if count < 0:
        raise _Unsupported("negative TOC count")
    unset: dict[int, int] = {}
    order: list[int] = []
    for _ in range(count):
        dump_id = reader.integer()
        if dump_id <= 0:
            raise _Unsupported(f"dump id {dump_id}")
        reader.integer()  # hadDumper
        reader.string()  # table oid
        reader.string()  # oid
        reader.string()  # tag
        desc = reader.string()
        reader.integer()  # section
        for _ in range(6):  # defn, dropStmt, copyStmt, namespace, tablespace, tableam
            reader.string()
        if version >= (1, 16):
            reader.integer()  # relkind
        reader.string()  # owner
        reader.string()  # "false": tables WITH OIDS are gone
        while reader.string() is not None:  # dependencies, ended by a NULL string
            pass
        flag_at = reader.pos
        flag = reader.byte()
        reader.take(offset_size)
        if flag == OFFSET_NOT_SET:
            if desc != b"TABLE DATA":
                raise _Unsupported(f"data of a {desc!r} entry")
            if dump_id in unset:
                raise _Unsupported(f"dump id {dump_id} twice")
            unset[dump_id] = flag_at
            order.append(dump_id)
        elif flag == OFFSET_SET:
            raise _Unsupported("positions already set (written to a file)")
    return _Toc(reader.pos, reader.int_size, offset_size, unset, order)


class DataOffsets:
    """Feed the plain archive in order (`feed`), then `patched_head()`: the header + TOC with each
    data block's position set, or None when the archive is not one this module patches."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._toc: _Toc | None = None
        self._failed = False
        self._position = 0  # bytes fed so far
        self._found: dict[int, int] = {}
        # Scanning state: either expecting a block header at `_next_header`, or inside a block,
        # looking for its end marker from `_scan_from`.
        self._next_header = 0
        self._in_block = False
        self._scan_from = 0
        self._pending = bytearray()  # fed bytes at or after min(_next_header, _scan_from)
        self._pending_start = 0
        self._parse_at = 0  # head length at which to try parsing the TOC again

    def feed(self, chunk: bytes) -> None:
        if self._failed or not chunk:
            return
        try:
            self._feed(chunk)
        except Exception:  # an optimisation never fails a restore: leave it as is
            self._fail()

    def patched_head(self) -> bytes | None:
        """The header + TOC with every data position set; None when nothing can be patched."""
        try:
            if self._toc is None and not self._failed:
                self._try_parse(final=True)
            return self._patched_head()
        except Exception:  # as in feed()
            self._fail()
            return None

    def _patched_head(self) -> bytes | None:
        toc = self._toc
        if self._failed or toc is None:
            return None
        if self._in_block or self._next_header != self._position or self._pending:
            return None  # the stream did not end right after a block's end marker
        if sorted(self._found) != sorted(toc.unset) or not toc.unset:
            return None
        head = bytearray(self._head[: toc.end])
        for dump_id, flag_at in toc.unset.items():
            head[flag_at] = OFFSET_SET
            head[flag_at + 1 : flag_at + 1 + toc.offset_size] = self._found[dump_id].to_bytes(
                toc.offset_size, "little"
            )
        return bytes(head)

    # ------------------------------------------------------------------ internals
    def _fail(self) -> None:
        self._failed = True
        self._head = bytearray()
        self._pending = bytearray()

    def _feed(self, chunk: bytes) -> None:
        start = self._position
        self._position += len(chunk)
        if self._toc is None:
            self._head += chunk
            self._try_parse(final=False)
            return
        if not self._pending:
            self._pending_start = start
        self._pending += chunk
        self._scan()

    def _try_parse(self, final: bool) -> None:
        """Parse the header and TOC once enough has arrived. A failed attempt waits for the head
        to grow by half before the next (small chunks must not make this quadratic)."""
        if not final and len(self._head) < self._parse_at:
            return
        try:
            toc = _parse_toc(self._head)
        except _Incomplete:
            if final or len(self._head) > HEAD_LIMIT:
                raise _Unsupported("the header and TOC are incomplete or too large") from None
            self._parse_at = len(self._head) + len(self._head) // 2
            return
        self._toc = toc
        self._next_header = toc.end
        self._pending = bytearray(self._head[toc.end :])
        self._pending_start = toc.end
        del self._head[toc.end :]
        self._scan()

    def _scan(self) -> None:
        toc = self._toc
        assert toc is not None
        header_size = 1 + 1 + toc.int_size
        marker = bytes(1 + toc.int_size)  # a zero length: the end of a block's chunks
        while True:
            if not self._in_block:
                offset = self._next_header - self._pending_start
                if len(self._pending) - offset < header_size:
                    self._trim(self._next_header)
                    return
                header = _Reader(self._pending[offset : offset + header_size])
                header.int_size = toc.int_size
                if header.byte() != BLOCK_DATA:
                    raise _Unsupported("a block that is not table data")
                dump_id = header.integer()
                expected = len(self._found)
                if expected >= len(toc.order) or toc.order[expected] != dump_id:
                    raise _Unsupported(f"data block {dump_id} out of the TOC's order")
                self._found[dump_id] = self._next_header
                self._in_block = True
                self._scan_from = self._next_header + header_size
            offset = self._scan_from - self._pending_start
            at = self._pending.find(marker, offset)
            if at < 0:
                # Keep the last bytes: the marker may straddle this chunk and the next.
                keep_from = max(self._scan_from, self._pending_start + len(self._pending) - len(marker) + 1)
                self._scan_from = keep_from
                self._trim(keep_from)
                return
            self._in_block = False
            self._next_header = self._pending_start + at + len(marker)

    def _trim(self, keep_from: int) -> None:
        drop = keep_from - self._pending_start
        if drop > 0:
            del self._pending[:drop]
            self._pending_start = keep_from


class _Observed(io.RawIOBase):
    """`stream`, with every byte read also fed to `offsets`."""

    def __init__(self, stream: BinaryIO, offsets: DataOffsets) -> None:
        self._stream = stream
        self._offsets = offsets

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        chunk = self._stream.read(size)
        self._offsets.feed(chunk)
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def observed(stream: BinaryIO, offsets: DataOffsets) -> BinaryIO:
    """A stream that reads `stream` and feeds what it reads to `offsets` (for spools written by
    another process, e.g. `cat > FILE` in a staging container)."""
    return typing.cast(BinaryIO, _Observed(stream, offsets))
