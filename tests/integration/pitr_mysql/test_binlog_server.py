"""Binlog parsing, the dump's binlog position and the doctor checks, against a real MariaDB."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from backupctl.actions.binlog_doctor import check_binlog, privilege_findings, setting_findings
from backupctl.errors import IntegrityError
from backupctl.pitr.mysql_binlog import parse_binlog, parse_binlog_file, parse_gtid_state
from backupctl.pitr.mysql_server import BinlogServer
from backupctl.policy.schema import MysqlSource, Policy
from backupctl.sources.base import build_source
from backupctl.sources.mysql import Endpoint, MysqlDumpSource
from tests.fixtures.mariadb import MariaDatabase

PASSWORD_ENV = "BACKUPCTL_TEST_BINLOG_PASSWORD"


def source_config(database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, **binlog: Any) -> MysqlSource:
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    return MysqlSource.model_validate({
        "name": "shop-db", "type": "mysql", "host": "127.0.0.1", "port": database.server.port,
        "user": database.user, "password": f"env:{PASSWORD_ENV}", "database": database.name,
        "pitr": {"rpo": "15m", **binlog},
    })  # fmt: skip


def server_for(database: MariaDatabase) -> BinlogServer:
    return BinlogServer(
        Endpoint(database.user, database.name, "127.0.0.1", database.server.port, None, database.password)
    )


def test_closed_binlogs_chain_by_gtid_and_record_their_times(
    binlog_database: MariaDatabase, tmp_path: Path
) -> None:
    server = server_for(binlog_database)
    server.flush()
    binlog_database.sql(
        "INSERT INTO orders (label) VALUES ('a'), ('b'); INSERT INTO orders (label) VALUES ('c');"
    )
    first = server.binlogs().current
    assert first is not None
    server.flush()
    binlog_database.sql("INSERT INTO orders (label) VALUES ('d');")
    state = server.binlogs()
    assert first in state.closed
    _path, closed = server.fetch(first, tmp_path)
    _path, growing = server.fetch(state.current or "", tmp_path)
    assert closed.complete and closed.closed_by == "rotate" and closed.next_file == state.current
    assert closed.transactions == 2 and closed.checksum == "crc32"
    assert closed.first_event is not None and closed.last_event is not None
    assert closed.created <= closed.first_event <= closed.last_event <= closed.covered_until
    assert not growing.complete, "the file being written is never presented as complete"
    assert growing.gtid_start == closed.gtid_end, "the next file starts where the closed one ended"
    assert parse_gtid_state(growing.gtid_end) == parse_gtid_state(state.gtid_binlog_pos)


def test_flipped_and_truncated_binlogs_are_rejected(binlog_database: MariaDatabase, tmp_path: Path) -> None:
    server = server_for(binlog_database)
    binlog_database.sql("INSERT INTO orders (label) VALUES ('x');")
    name = server.binlogs().current or ""
    server.flush()
    path, info = server.fetch(name, tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x01
    flipped = tmp_path / "flipped"
    flipped.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        parse_binlog_file(flipped)
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[: info.size - 7])
    with pytest.raises(IntegrityError, match="ends inside"):
        parse_binlog_file(cut)
    partial = parse_binlog_file(cut, allow_truncated_tail=True)
    assert not partial.complete and partial.gtid_end == info.gtid_end
    with open(os.devnull, "rb") as empty, pytest.raises(IntegrityError, match="not a binary log"):
        parse_binlog(empty, "empty")


def test_dump_records_the_binlog_position_of_its_snapshot(
    binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = build_source(source_config(binlog_database, monkeypatch))
    assert isinstance(source, MysqlDumpSource)
    binlog_database.sql("INSERT INTO orders (label) VALUES ('before the dump');")
    status = binlog_database.server.sql("SHOW MASTER STATUS; SELECT @@gtid_binlog_pos;").split("\n")
    with source.dump() as dump:
        while dump.stream.read(1 << 20):
            pass
        facts = dump.finish()
    file, position = status[0].split("\t")[:2]
    assert facts["binlog_position"] == {"file": file, "position": int(position), "gtid": status[1]}
    assert facts["row_counts"] == {"orders": 21}


def test_doctor_reports_settings_and_missing_privileges(
    binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = source_config(binlog_database, monkeypatch)
    policy = Policy.model_validate({
        "name": "shop", "objectives": {"rpo": "24h", "rto": "1h"},
        "encryption": {"recipients": ["age1n3apkaaz7y5qsrs9l4z2akmel0gpz9m2astxq4jgzl2zheeex33s8kpzju"]},
        "sources": [config.model_dump(mode="json")],
        "targets": [{"name": "nas", "type": "local", "path": "/tmp/unused"}],
    })  # fmt: skip
    findings = check_binlog(policy, config)
    assert findings and all(finding.ok for finding in findings), [f.detail for f in findings if not f.ok]
    binlog_database.server.sql(f"REVOKE RELOAD ON *.* FROM '{binlog_database.user}'@'localhost';")
    failed = [finding for finding in check_binlog(policy, config) if not finding.ok]
    assert [finding.detail for finding in failed] == [f"{binlog_database.user} lacks RELOAD on *.*"]
    assert failed[0].fix == "GRANT RELOAD ON *.* TO the backup user"


def test_doctor_settings_findings_name_each_fix() -> None:
    config = MysqlSource.model_validate(
        {
            "name": "db",
            "type": "mysql",
            "user": "u",
            "database": "d",
            "pitr": {"rpo": "15m", "interval": "1h"},
        }
    )
    assert config.pitr is not None
    bad = {"log_bin": "OFF", "binlog_format": "MIXED", "server_id": "0", "binlog_expire_logs_seconds": "3600",
           "expire_logs_days": "0"}  # fmt: skip
    findings = setting_findings("c", bad, config.pitr)
    assert [finding.ok for finding in findings] == [False, False, False, False]
    assert "log_bin = mariadb-bin" in findings[0].fix and "binlog_format = ROW" in findings[1].fix
    assert "server_id = 1" in findings[2].fix and "604800" in findings[3].fix
    assert "at least 1d needed" in findings[3].detail  # the one-day floor beats ten 1h intervals
    good = {
        **bad,
        "log_bin": "ON",
        "binlog_format": "ROW",
        "server_id": "3",
        "binlog_expire_logs_seconds": "0",
    }
    assert all(finding.ok for finding in setting_findings("c", good, config.pitr))
    assert [
        f.ok for f in privilege_findings("c", "u", ["GRANT REPLICATION CLIENT, RELOAD ON *.* TO `u`@`%`"])
    ] == [
        False,
        True,
        True,
    ]
