"""Binlog archiving and point-in-time restores end to end, against a real MariaDB (local target)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from backupctl.actions.access import open_catalog
from backupctl.actions.binlog import binlog_status
from backupctl.actions.binlog_restore import run_point_in_time_restore
from backupctl.errors import IntegrityError
from backupctl.pitr.mysql_chain import GapError
from backupctl.sources.base import RestoreRequest
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase, new_database
from tests.integration.pitr_mysql.load import WriteLoad
from tests.integration.pitr_mysql.pitr import SOURCE, Pitr, make_pitr, server_stamp


def whole_second_ahead(seconds: float) -> datetime:
    return datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)


def restore_to(pitr: Pitr, moment: datetime | None, **options: object) -> tuple[str, object]:
    into = new_database(pitr.database.server, prefix="pitr_into")
    request = RestoreRequest(
        to_db=pitr.database.server.url(into, "root"), password=pitr.database.server.password
    )
    with pitr.archive() as archive:
        result = run_point_in_time_restore(
            pitr.settings, pitr.policy, SOURCE, archive, request, moment, **options
        )  # type: ignore[arg-type]
    return into, result


def rows(pitr: Pitr, database: str, where: str = "1") -> list[str]:
    return pitr.database.server.sql(
        f"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM orders WHERE {where}", database
    ).split()


def test_restore_to_a_time_under_load_keeps_rows_before_and_none_after(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    load = WriteLoad(binlog_database.server, binlog_database.name).start()
    time.sleep(0.3)
    snapshot = pitr.backup()
    first = pitr.collect()
    target = whole_second_ahead(1.5)
    time.sleep(max(0.0, target.timestamp() - time.time()) + 1.2)
    load.stop()
    second = pitr.collect()
    assert second.flushed and second.archived and not second.purged
    assert first.newest is not None and second.newest is not None and second.newest > first.newest
    stamp = server_stamp(target)
    before, after = (
        rows(pitr, binlog_database.name, f"placed < '{stamp}'"),
        rows(pitr, binlog_database.name, f"placed >= '{stamp}'"),
    )
    assert int(after[0]) > 0

    _into, plan = restore_to(pitr, target, dry_run=True)
    assert plan.dry_run and plan.plan.dump.snapshot_id == snapshot  # type: ignore[attr-defined]
    into, result = restore_to(pitr, target)
    assert result.reached == target.isoformat() and not result.mismatches  # type: ignore[attr-defined]
    assert rows(pitr, into) == before, "every row committed before T, none after"
    latest, _result = restore_to(pitr, None)
    assert rows(pitr, latest) == rows(pitr, binlog_database.name)
    with pitr.archive() as archive:
        status = binlog_status(pitr.policy, SOURCE, archive, open_catalog(pitr.settings))
    assert status.ok and status.rpo_seconds is not None and status.rpo_seconds < 60 and not status.gaps
    for name in (into, latest):
        binlog_database.server.drop_database(name)


def test_server_restart_and_killed_collector_leave_no_hole(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    pitr.backup()
    # Collectors killed mid-pass, at staggered moments: before, during or after a copy or an upload.
    env = {**os.environ, **workspace.env}
    argv = [sys.executable, "-m", "backupctl", "binlog", "collect", "shop", "--source", SOURCE]
    for delay in (0.9, 1.3, 1.7):
        binlog_database.sql("INSERT INTO orders (label) SELECT CONCAT('bulk ', seq) FROM seq_1_to_20000;")
        collector = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        collector.send_signal(signal.SIGKILL)
        collector.wait()
    binlog_database.sql("INSERT INTO orders (label) VALUES ('before restart');")
    binlog_database.server.stop()
    binlog_database.server.start()
    binlog_database.sql("INSERT INTO orders (label) VALUES ('after restart');")
    report = pitr.collect()
    assert not report.purged
    with pitr.archive() as archive:
        assert archive.verify() == []
        status = binlog_status(pitr.policy, SOURCE, archive, open_catalog(pitr.settings))
        closed_by = {item.facts["closed_by"] for item in archive.binlogs()}
    assert not status.gaps and "stop" in closed_by, "the restart closed a file with STOP: archived, no hole"
    into, _result = restore_to(pitr, None)
    assert rows(pitr, into) == rows(pitr, binlog_database.name)
    binlog_database.server.drop_database(into)


def test_purged_before_archiving_is_a_reported_gap(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    pitr.backup()
    pitr.collect()
    lost = []
    for label in ("lost 1", "lost 2"):
        binlog_database.sql(f"INSERT INTO orders (label) VALUES ('{label}');")
        lost.append(binlog_database.server.sql("SHOW MASTER STATUS").split("\t")[0])
        binlog_database.server.sql("FLUSH BINARY LOGS")
    current = binlog_database.server.sql("SHOW MASTER STATUS").split("\t")[0]
    # The server keeps a file until InnoDB's log is flushed past it (once a second here).
    deadline = time.monotonic() + 30
    while binlog_database.server.sql("SHOW BINARY LOGS").split("\t")[0] != current:
        assert time.monotonic() < deadline, "the server did not purge its binlogs"
        binlog_database.server.sql(f"PURGE BINARY LOGS TO '{current}'")
        time.sleep(0.3)
    report = pitr.collect()
    assert report.purged == lost, "the collector names the files the server purged"
    with pitr.archive() as archive:
        status = binlog_status(pitr.policy, SOURCE, archive, open_catalog(pitr.settings))
    assert not status.ok and [gap.missing for gap in status.gaps] == [lost]
    done = workspace.run("binlog", "verify", "shop", "--source", SOURCE)
    assert done.returncode == 1 and lost[0] in done.stdout
    with pytest.raises(GapError, match=lost[0]):
        restore_to(pitr, None, dry_run=True)


def test_deleted_or_flipped_binlog_is_detected_and_restore_past_it_fails_naming_it(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    pitr.backup()
    names = []
    for label in ("one", "two", "three"):
        binlog_database.sql(f"INSERT INTO orders (label) VALUES ('{label}');")
        names += [item["name"] for item in pitr.collect().archived]
    flipped, deleted = names[-2], names[-1]
    data = bytearray(pitr.archived_path(flipped).read_bytes())
    data[len(data) // 2] ^= 0x40
    pitr.archived_path(flipped).write_bytes(bytes(data))
    pitr.archived_path(deleted).unlink()
    with pitr.archive() as archive:
        problems = archive.verify()
    assert any(flipped in problem and "differs from its signed digest" in problem for problem in problems)
    assert any(deleted in problem and "missing" in problem for problem in problems)
    with pytest.raises(IntegrityError, match=flipped):
        restore_to(pitr, None)
    done = workspace.run("binlog", "verify", "shop", "--source", SOURCE)
    assert done.returncode == 1 and flipped in done.stdout and deleted in done.stdout
