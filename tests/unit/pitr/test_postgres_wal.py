"""WAL names, LSNs, segment headers and the WAL chain rules (backupctl.pitr.postgres_wal)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from backupctl.errors import ConfigError
from backupctl.pitr.archive import SegmentRecord
from backupctl.pitr.chain import check_chain
from backupctl.pitr.postgres_wal import (
    WalRules,
    format_lsn,
    lineage,
    parse_history,
    parse_lsn,
    parse_wal_name,
    read_segment_header,
    segment_name,
    segment_of_lsn,
    wal_meta,
)


def test_names_and_lsns() -> None:
    parsed = parse_wal_name("00000002000000010000003F")
    assert (parsed.kind, parsed.timeline, parsed.segno) == ("wal", 2, 256 + 63)
    assert segment_name(2, 256 + 63) == "00000002000000010000003F"
    assert parse_wal_name("00000002.history").kind == "history"
    assert parse_wal_name("000000010000000000000002.00000028.backup").segno == 2
    assert parse_wal_name("000000010000000000000005.partial").kind == "partial"
    with pytest.raises(ConfigError):
        parse_wal_name("pg_wal/../etc")
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("0/3000060")) == "0/3000060"
    assert segment_of_lsn(1, parse_lsn("1/3F000060")) == "00000001000000010000003F"
    with pytest.raises(ConfigError):
        parse_lsn("nonsense")


def test_segment_header_and_meta(tmp_path: Path) -> None:
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, 3 * 2**24, 0, 7312345678901234567, 2**24, 8192)
    path = tmp_path / "000000010000000000000003"
    path.write_bytes(header + bytes(100))
    found = read_segment_header(path)
    assert found is not None and found.system_identifier == 7312345678901234567
    assert found.segment_size == 2**24
    kind, meta, sysid = wal_meta(path, path.name)
    assert kind == "wal" and sysid == 7312345678901234567
    assert meta["start_lsn"] == "0/3000000" and meta["end_lsn"] == "0/4000000" and meta["timeline"] == 1
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/5000098\tbefore 2026-12-06 06:00:00+00\n")
    assert parse_history(history.read_text()) == [(1, parse_lsn("0/5000098"))]
    assert wal_meta(history, history.name)[1]["parents"] == [[1, "0/5000098"]]


def record(name: str, kind: str = "wal", **meta: object) -> SegmentRecord:
    parsed = parse_wal_name(name)
    full = {"timeline": parsed.timeline, "segno": parsed.segno, **meta}
    return SegmentRecord(name, kind, "blake3:00", 1, 1, "00", "2026-12-06T06:00:00+00:00", "h", full)


def test_chain_follows_a_timeline_switch_and_names_gaps() -> None:
    records = [record(segment_name(1, n)) for n in (1, 2, 3, 4, 5, 6)]
    records += [record(segment_name(2, n)) for n in (5, 6, 8)]
    records.append(record("00000002.history", "history", parents=[[1, "0/5000098"]]))
    chain = lineage(records)
    # timeline 2 replaces timeline 1 from segment 5 on; old timeline 1 segments past the switch drop out
    assert [r.name for r in chain] == [segment_name(1, 1), segment_name(1, 2), segment_name(1, 3),
                                       segment_name(1, 4), segment_name(2, 5), segment_name(2, 6),
                                       segment_name(2, 8)]  # fmt: skip
    report = check_chain(chain, WalRules())
    assert [gap.missing for gap in report.gaps] == [[segment_name(2, 7)]]
    assert check_chain(chain, WalRules(), end=segment_name(2, 6)).ok
