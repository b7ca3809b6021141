"""Dump + binlog replay to a point in time, with files copied straight from a real MariaDB."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupctl.pitr.mysql_chain import ArchivedBinlog, DumpPoint, plan_restore
from backupctl.pitr.mysql_replay import replay
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.sources.mysql import Endpoint, MysqlDumpSource
from tests.fixtures.mariadb import MariaDatabase, new_database
from tests.integration.pitr_mysql.load import WriteLoad
from tests.integration.pitr_mysql.test_binlog_server import server_for, source_config


def test_replay_to_a_time_between_two_commits_keeps_rows_before_and_none_after(
    binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = server_for(binlog_database)
    source = build_source(source_config(binlog_database, monkeypatch))
    assert isinstance(source, MysqlDumpSource)
    load = WriteLoad(binlog_database.server, binlog_database.name).start()
    time.sleep(0.5)
    with source.dump() as dump, open(tmp_path / "dump.sql", "wb") as out:
        while chunk := dump.stream.read(1 << 20):
            out.write(chunk)
        facts = dump.finish()
    finished = datetime.now(UTC)
    target = datetime.fromtimestamp(math.ceil(time.time()) + 1, UTC)  # a whole second, under the load
    time.sleep(max(0.0, target.timestamp() - time.time()) + 1.5)
    load.stop()
    server.flush()
    archived = []
    for name in server.binlogs().closed:
        _path, info = server.fetch(name, tmp_path)
        archived.append(ArchivedBinlog(name, info.as_dict()))
    position = facts["binlog_position"]
    plan = plan_restore([DumpPoint("s1", finished, position["file"], position["position"])], archived, target)
    into = new_database(binlog_database.server, prefix="pitr_into")
    root = Endpoint(
        "root", into, "127.0.0.1", binlog_database.server.port, None, binlog_database.server.password
    )
    with open(tmp_path / "dump.sql", "rb") as stream:
        source.restore(stream, RestoreRequest(to_db=binlog_database.server.url(into, "root"),
                                              password=binlog_database.server.password))  # fmt: skip
    done = replay(
        [tmp_path / name for name in plan.files], plan.start_position, plan.stop, binlog_database.name, root
    )
    assert done.sql_bytes > 0
    stamp = target.strftime("%Y-%m-%d %H:%M:%S")
    source_before = binlog_database.sql(
        f"SELECT COUNT(*), MAX(id) FROM orders WHERE placed < '{stamp}'"
    ).split()
    source_after = int(binlog_database.sql(f"SELECT COUNT(*) FROM orders WHERE placed >= '{stamp}'"))
    restored = binlog_database.server.sql("SELECT COUNT(*), MAX(id) FROM orders", into).split()
    assert source_after > 0, "the load must have written after the point"
    assert restored == source_before, "every row before T and none after"
    late = int(binlog_database.server.sql(f"SELECT COUNT(*) FROM orders WHERE placed >= '{stamp}'", into))
    assert late == 0
    binlog_database.server.drop_database(into)
