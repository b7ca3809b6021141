"""PostgreSQL WAL file names, LSNs and segment headers; the chain rules for WAL.

File kinds PostgreSQL hands to `archive_command` (and asks back from `restore_command`):
  `TTTTTTTTXXXXXXXXYYYYYYYY`            a WAL segment (timeline, then the segment number)
  `TTTTTTTTXXXXXXXXYYYYYYYY.partial`    the last, partial segment of an old timeline (promotion)
  `TTTTTTTT.history`                    a timeline history file
  `TTTTTTTTXXXXXXXXYYYYYYYY.XXXXXXXX.backup`  a backup history file (pg_basebackup / pg_backup_stop)

A segment's first page carries the long page header: magic, info, timeline, page address, then
the cluster's system identifier (uint64 at byte 24) and the segment size (uint32 at byte 32),
little-endian on every platform backupctl supports. `wal push` reads them to refuse a segment of
another cluster and to record the LSN range without asking the server.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupctl.errors import ConfigError
from backupctl.pitr.archive import SegmentRecord

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_BACKUP = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # magic, info, tli, pageaddr, rem_len, pad, sysid, seg, blck


@dataclass(frozen=True)
class WalName:
    """A parsed WAL file name."""

    name: str
    kind: str  # "wal", "partial", "history", "backup"
    timeline: int
    segno: int | None  # None for history files

    @property
    def is_segment(self) -> bool:
        return self.kind == "wal"


def segments_per_id(segment_size: int) -> int:
    return 0x1_0000_0000 // segment_size


def parse_wal_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalName:
    """Parse `name`; raise ConfigError for a name PostgreSQL would not archive."""
    if match := _SEGMENT.match(name):
        timeline, high, low = (int(part, 16) for part in match.groups())
        return WalName(name, "wal", timeline, high * segments_per_id(segment_size) + low)
    if match := _PARTIAL.match(name):
        inner = parse_wal_name(match.group(1), segment_size)
        return WalName(name, "partial", inner.timeline, inner.segno)
    if match := _HISTORY.match(name):
        return WalName(name, "history", int(match.group(1), 16), None)
    if match := _BACKUP.match(name):
        inner = parse_wal_name(match.group(1), segment_size)
        return WalName(name, "backup", inner.timeline, inner.segno)
    raise ConfigError(f"'{name}' is not a WAL, history or backup file name")


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_id(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_lsn(text: str) -> int:
    """`16/B374D848` → integer. Raises ConfigError."""
    high, separator, low = text.strip().partition("/")
    try:
        if not separator:
            raise ValueError
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ConfigError(f"'{text}' is not an LSN (like 0/3000060)") from None


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_of_lsn(timeline: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    return segment_name(timeline, lsn // segment_size, segment_size)


@dataclass(frozen=True)
class SegmentHeader:
    timeline: int
    page_address: int
    system_identifier: int
    segment_size: int


def read_segment_header(path: Path) -> SegmentHeader | None:
    """The long page header of a WAL segment file; None when the file is too short or has no
    long header (not a segment start)."""
    with path.open("rb") as handle:
        data = handle.read(_LONG_HEADER.size)
    if len(data) < _LONG_HEADER.size:
        return None
    _magic, info, timeline, address, _rem, sysid, segment_size, _block = _LONG_HEADER.unpack(data)
    if not info & 0x0002:  # XLP_LONG_HEADER
        return None
    return SegmentHeader(timeline, address, sysid, segment_size)


def parse_history(text: str) -> list[tuple[int, int]]:
    """(parent timeline, switch LSN) lines of a timeline history file, oldest first."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            entries.append((int(fields[0]), parse_lsn(fields[1])))
    return entries


def wal_meta(path: Path, name: str) -> tuple[str, dict[str, Any], int | None]:
    """(kind, meta, system identifier or None) for an archived file at `path` named `name`."""
    parsed = parse_wal_name(name)
    meta: dict[str, Any] = {"timeline": parsed.timeline}
    sysid: int | None = None
    if parsed.kind in ("wal", "partial"):
        header = read_segment_header(path)
        size = header.segment_size if header else DEFAULT_SEGMENT_SIZE
        parsed = parse_wal_name(name, size)
        assert parsed.segno is not None
        meta.update(
            segment_size=size,
            segno=parsed.segno,
            start_lsn=format_lsn(parsed.segno * size),
            end_lsn=format_lsn((parsed.segno + 1) * size),
        )
        if header is not None:
            sysid = header.system_identifier
            meta["system_identifier"] = str(sysid)
    elif parsed.kind == "history":
        try:
            meta["parents"] = [[tli, format_lsn(lsn)] for tli, lsn in parse_history(path.read_text())]
        except (UnicodeDecodeError, ConfigError):
            meta["parents"] = []
    elif parsed.kind == "backup":
        meta.update(_backup_label_fields(path))
    return parsed.kind, meta, sysid


def _backup_label_fields(path: Path) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().upper()
        if key == "START WAL LOCATION":
            fields["start_lsn"] = value.split()[0]
        elif key == "STOP WAL LOCATION":
            fields["stop_lsn"] = value.split()[0]
        elif key == "LABEL":
            fields["label"] = value.strip()
        elif key == "START TIMELINE":
            fields["start_timeline"] = int(value.strip() or 0)
        elif key == "START TIME":
            fields["start_time"] = value.strip()
        elif key == "STOP TIME":
            fields["stop_time"] = value.strip()
    return fields


class WalRules:
    """`ChainRules` for WAL: segments sort by (segment number, timeline); a timeline switch
    (the next segment number on a higher timeline, or the same number on it) is no gap."""

    def in_chain(self, record: SegmentRecord) -> bool:
        return record.kind == "wal"

    def sort_key(self, name: str) -> tuple[int, int, str]:
        try:
            parsed = parse_wal_name(name)
        except ConfigError:
            return (-1, -1, name)
        return (parsed.segno if parsed.segno is not None else -1, parsed.timeline, name)

    def successor(self, name: str) -> str:
        parsed = parse_wal_name(name)
        assert parsed.segno is not None
        return segment_name(parsed.timeline, parsed.segno + 1)

    def follows(self, previous: str, following: str) -> bool:
        before, after = parse_wal_name(previous), parse_wal_name(following)
        assert before.segno is not None and after.segno is not None
        return after.timeline > before.timeline and after.segno in (before.segno, before.segno + 1)

    def missing_between(self, previous: str, following: str, limit: int) -> list[str]:
        before, after = parse_wal_name(previous), parse_wal_name(following)
        assert before.segno is not None and after.segno is not None
        stop = min(after.segno, before.segno + 1 + limit)
        return [segment_name(after.timeline, segno) for segno in range(before.segno + 1, stop)]


def lineage(records: list[SegmentRecord]) -> list[SegmentRecord]:
    """The WAL segments of the newest timeline's history: for each segment number, the copy on
    the highest timeline of that lineage (older timelines' segments past a switch are dropped)."""
    wal = [r for r in records if r.kind == "wal"]
    if not wal:
        return []
    newest = max(int(r.meta.get("timeline", 1)) for r in wal)
    allowed = {newest}
    for record in records:
        if record.kind == "history" and int(record.meta.get("timeline", 0)) == newest:
            allowed.update(int(parent) for parent, _ in record.meta.get("parents", []))
    best: dict[int, SegmentRecord] = {}
    for record in wal:
        timeline = int(record.meta.get("timeline", 1))
        segno = int(record.meta.get("segno", -1))
        if timeline in allowed and (segno not in best or timeline > int(best[segno].meta["timeline"])):
            best[segno] = record
    return [best[segno] for segno in sorted(best)]
