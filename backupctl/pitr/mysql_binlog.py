"""Reading a MariaDB/MySQL binary log file's headers: what it covers, and whether it is closed.

The binlog format (v4) is documented by MariaDB ("Binary Log Format", "Log Event Header") and
MySQL (libbinlogevents). A file is `0xFE 'bin'` followed by events; every event starts with a
19-byte header: timestamp (uint32, Unix seconds), type (uint8), server_id (uint32), event size
(uint32, header included), position of the next event (uint32), flags (uint16). All little-endian.

What this module takes from a file, in one sequential pass (no event body is decoded beyond
what is listed):
- FORMAT_DESCRIPTION (15): the server version and the checksum algorithm (CRC32 or none). With
  CRC32, every event's checksum is verified: a flipped bit anywhere is an error here.
- GTID_LIST (163, MariaDB): the GTID state at the start of the file (`gtid_start`).
- GTID (162, MariaDB): each transaction's GTID; the highest per domain gives `gtid_end`, the
  state at the end of the file, which must equal the next file's `gtid_start`.
- ROTATE (4) / STOP (3) as the last event: the file is closed (the server moved on to the next
  file, or shut down). A file without one is still growing, or was left by a crash.

Times are the event headers' Unix seconds: the binlog has no finer resolution, so neither has a
restore to a point in time (mariadb-binlog's --stop-datetime compares these seconds).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from backupctl.errors import IntegrityError

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, size, next position, flags
ROTATE, FORMAT_DESCRIPTION, STOP = 4, 15, 3
BINLOG_CHECKPOINT, GTID, GTID_LIST = 161, 162, 163
QUERY, XID = 2, 16
TRANSACTION_EVENTS = frozenset({QUERY, XID, GTID})
ARTIFICIAL = 0x20  # LOG_EVENT_ARTIFICIAL_F: made up by a reader, not written by the server
IN_USE = 0x01  # LOG_EVENT_BINLOG_IN_USE_F on the format description: the server has it open
CHECKSUM_CRC32 = 1
MAX_EVENT = 1 << 30  # the server's max_allowed_packet ceiling: a bigger size is corruption


@dataclass
class BinlogInfo:
    """What one binlog file covers. Times are Unix seconds; GTIDs are MariaDB's `d-s-n` lists."""

    name: str
    size: int
    server_version: str
    server_id: int
    created: int  # the format description's time: when the server opened the file
    first_event: int | None  # the first transaction's time; None when the file holds none
    last_event: int | None  # the last transaction's time
    closed_at: int | None  # time of the closing ROTATE/STOP event; None: still open or crashed
    closed_by: str | None  # "rotate" (next file named in `next_file`), "stop", or None
    next_file: str | None
    gtid_start: str  # GTID state when the file was opened ("" without GTIDs)
    gtid_end: str  # GTID state after the file's last transaction
    transactions: int
    end_position: int  # the position after the last event
    checksum: str  # "crc32" or "none"
    in_use_flag: bool = False  # the server's own "open" mark was still set in this copy
    gtids: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def complete(self) -> bool:
        """Whether the file ends with ROTATE or STOP: nothing more will ever be appended to it."""
        return self.closed_by is not None

    @property
    def covered_until(self) -> int:
        """Every transaction committed before this time (Unix seconds) is in this file or earlier.

        For a closed file: when it was closed. For an open one: its last transaction (or the
        time it was created): a transaction later than that may still be on its way.
        """
        if self.closed_at is not None:
            return self.closed_at
        return self.last_event if self.last_event is not None else self.created

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("gtids")
        data["complete"] = self.complete
        data["covered_until"] = self.covered_until
        return data


def parse_gtid_state(text: str) -> dict[int, tuple[int, int]]:
    """`0-1-5,1-2-9` -> {domain: (server_id, seq_no)}. Raises ValueError on a malformed list."""
    state: dict[int, tuple[int, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        domain, server, sequence = (int(value) for value in item.split("-"))
        state[domain] = (server, sequence)
    return state


def format_gtid_state(state: dict[int, tuple[int, int]]) -> str:
    """{domain: (server_id, seq_no)} -> `d-s-n,...` sorted by domain (MariaDB's own order)."""
    return ",".join(f"{domain}-{server}-{sequence}" for domain, (server, sequence) in sorted(state.items()))


def _read_exact(stream: BinaryIO, size: int, name: str, position: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise _Truncated(f"{name}: the file ends inside the event at position {position}")
    return data


class _Truncated(Exception):
    pass


def parse_binlog(stream: BinaryIO, name: str, *, allow_truncated_tail: bool = False) -> BinlogInfo:
    """Read a whole binlog file from `stream`; return what it covers.

    `allow_truncated_tail` accepts a last event cut short (a copy of a file still being
    written); the result is then never `complete`. Raises IntegrityError for a file that is not
    a binlog, a checksum mismatch, an impossible event size, or (without the allowance) a file
    that ends inside an event.
    """
    if stream.read(4) != MAGIC:
        raise IntegrityError(f"{name} is not a binary log (no 0xFE 'bin' magic)")
    position, checksum = 4, "none"
    info = BinlogInfo(name, 0, "", 0, 0, None, None, None, None, None, "", "", 0, 4, "none")
    state: dict[int, tuple[int, int]] = {}
    last_type = -1
    while True:
        head = stream.read(HEADER.size)
        if not head:
            break
        try:
            if len(head) != HEADER.size:
                raise _Truncated(f"{name}: the file ends inside the event header at position {position}")
            timestamp, kind, server_id, size, next_position, flags = HEADER.unpack(head)
            if size < HEADER.size or size > MAX_EVENT:
                raise IntegrityError(f"{name}: impossible event size {size} at position {position}")
            body = _read_exact(stream, size - HEADER.size, name, position)
        except _Truncated as error:
            if not allow_truncated_tail:
                raise IntegrityError(str(error)) from None
            last_type = -1
            break
        if kind == FORMAT_DESCRIPTION and position == 4:
            info.server_version = body[2:52].split(b"\0", 1)[0].decode("ascii", "replace")
            info.created = timestamp or struct.unpack_from("<I", body, 52)[0]
            info.server_id = server_id
            info.in_use_flag = bool(flags & IN_USE)
            # Checksum-aware servers end the description with the algorithm byte + 4 CRC bytes.
            checksum = "crc32" if len(body) >= 5 and body[-5] == CHECKSUM_CRC32 else "none"
            info.checksum = checksum
        if checksum == "crc32":
            stored = struct.unpack_from("<I", body, len(body) - 4)[0]
            # The server sets the in-use flag after computing the description's checksum.
            summed = (
                HEADER.pack(timestamp, kind, server_id, size, next_position, flags & ~IN_USE)
                if (kind == FORMAT_DESCRIPTION)
                else head
            )
            if zlib.crc32(body[:-4], zlib.crc32(summed)) != stored:
                raise IntegrityError(f"{name}: checksum mismatch in the event at position {position}")
        payload = body[:-4] if checksum == "crc32" else body
        if flags & ARTIFICIAL or timestamp == 0:
            position += size
            continue
        if kind == GTID_LIST:
            count = struct.unpack_from("<I", payload, 0)[0] & 0x0FFFFFFF
            for index in range(count):
                domain, server, sequence = struct.unpack_from("<IIQ", payload, 4 + 16 * index)
                state[domain] = (server, sequence)
            info.gtid_start = format_gtid_state(state)
        elif kind == GTID:
            sequence, domain = struct.unpack_from("<QI", payload, 0)
            state[domain] = (server_id, sequence)
            info.transactions += 1
        elif kind == ROTATE:
            info.next_file = payload[8:].decode("utf-8", "replace")
        if kind in TRANSACTION_EVENTS:
            info.first_event = timestamp if info.first_event is None else info.first_event
            info.last_event = timestamp
        if kind in (ROTATE, STOP):
            info.closed_at = timestamp
        last_type = kind
        position += size
    info.size = position
    info.end_position = position
    info.gtid_end = format_gtid_state(state)
    info.gtids = state
    if last_type in (ROTATE, STOP):
        info.closed_by = "rotate" if last_type == ROTATE else "stop"
    else:
        info.closed_at, info.next_file = None, None
    return info


def parse_binlog_file(path: Path, *, allow_truncated_tail: bool = False) -> BinlogInfo:
    """`parse_binlog` of a file on disk, named by its base name."""
    with path.open("rb") as stream:
        return parse_binlog(stream, path.name, allow_truncated_tail=allow_truncated_tail)


def binlog_index(name: str) -> int:
    """The sequence number of a binlog file name (`mariadb-bin.000042` -> 42). Raises ValueError."""
    stem, _, suffix = name.rpartition(".")
    if not stem or not suffix.isdigit():
        raise ValueError(f"{name} is not a binlog file name (BASENAME.NNNNNN)")
    return int(suffix)


def binlog_name(basename: str, index: int) -> str:
    """`binlog_name("mariadb-bin", 42)` -> `mariadb-bin.000042` (six digits, as the server names them)."""
    return f"{basename}.{index:06d}"
