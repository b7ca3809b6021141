"""The binlog chain rules: collection plan, holes, restore plans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupctl.errors import JobFailed
from backupctl.pitr.mysql_chain import (
    ArchivedBinlog,
    DumpPoint,
    GapError,
    chain_problems,
    collect_plan,
    plan_restore,
)

T0 = 1_800_000_000


def binlog(
    index: int, *, start: int | None = None, complete: bool = True, jump: bool = False
) -> ArchivedBinlog:
    """File `index` covering [T0 + 100 * (index - 1), T0 + 100 * index), GTIDs 0-1-index."""
    begin = T0 + 100 * (index - 1)
    return ArchivedBinlog(
        f"bin.{index:06d}",
        {
            "covered_until": begin + 100 if complete else begin + 50,
            "complete": complete,
            "gtid_start": f"0-1-{(start if start is not None else index - 1) + (5 if jump else 0)}",
            "gtid_end": f"0-1-{index}",
        },
    )


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


DUMP = DumpPoint("snap1", at(150), "bin.000002", 4000)


def test_collect_plan_fetches_closed_files_and_names_purged_ones() -> None:
    server = ["bin.000005", "bin.000006", "bin.000007"]
    plan = collect_plan(["bin.000001", "bin.000002", "other.000009"], server, pending_writes=True)
    assert plan.fetch == ["bin.000005", "bin.000006"], "the file being written is never collected"
    assert plan.purged == ["bin.000003", "bin.000004"]
    assert plan.flush
    assert collect_plan([], server, pending_writes=False).purged == [], "a first pass has nothing to miss"
    assert collect_plan(["bin.000006"], server, pending_writes=False).fetch == ["bin.000005"]


def test_chain_problems_name_missing_files_gtid_jumps_and_open_files() -> None:
    assert chain_problems([binlog(1), binlog(2), binlog(3)]) == []
    (missing,) = chain_problems([binlog(1), binlog(4)])
    assert missing.missing == ["bin.000002", "bin.000003"] and missing.last_recoverable == T0 + 100
    (jump,) = chain_problems([binlog(1), binlog(2, jump=True)])
    assert "GTID state jumps from 0-1-1 to 0-1-6" in jump.reason and jump.missing == ["bin.000002"]
    (open_file,) = chain_problems([binlog(1, complete=False), binlog(2)])
    assert open_file.reason == "a binlog that was never closed"
    assert chain_problems([binlog(1), binlog(2, complete=False)]) == [], "only the newest may be open"
    (absent,) = chain_problems([binlog(3)], start="bin.000002")
    assert absent.missing == ["bin.000002"]


def test_plan_restore_picks_the_newest_dump_before_the_point_and_the_files_up_to_it() -> None:
    chain = [binlog(index) for index in range(1, 6)]
    later = DumpPoint("snap2", at(320), "bin.000004", 900)
    plan = plan_restore([DUMP, later], chain, at(250))
    assert (plan.dump.snapshot_id, plan.files, plan.start_position) == (
        "snap1",
        ["bin.000002", "bin.000003"],
        4000,
    )
    assert plan.reached == T0 + 250
    newest = plan_restore([DUMP, later], chain, None)
    assert newest.dump.snapshot_id == "snap2" and newest.files == ["bin.000004", "bin.000005"]
    assert newest.reached == T0 + 500
    with pytest.raises(JobFailed, match=r"reaches .* before the point asked for"):
        plan_restore([DUMP], chain, at(900))
    with pytest.raises(JobFailed, match="no dump with a binlog position"):
        plan_restore([DUMP], chain, at(100))


def test_plan_restore_stops_at_a_hole_naming_it_but_restores_before_it() -> None:
    chain = [binlog(1), binlog(2), binlog(3), binlog(5)]
    assert plan_restore([DUMP], chain, at(290)).files == ["bin.000002", "bin.000003"]
    with pytest.raises(GapError) as raised:
        plan_restore([DUMP], chain, at(450))
    assert raised.value.gap.missing == ["bin.000004"]
    assert "bin.000004" in str(raised.value) and "last recoverable time: " + at(300).isoformat() in str(
        raised.value
    )
    with pytest.raises(GapError, match=r"the binlog the dump starts from is not archived: bin\.000002"):
        plan_restore([DUMP], [binlog(1), binlog(3)], None)
