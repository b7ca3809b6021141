"""The chain of archived binlogs: what to collect next, where it has holes, how to restore from it.

Pure logic over small records (no server, no target), so every rule is tested directly:
- `collect_plan`: which closed files on the server still need archiving, and which ones the
  server purged before they were archived (a hole that must be reported loudly).
- `chain_problems`: continuity of the archive from a starting file: file sequence numbers with
  no missing number, each file's GTID start state equal to the previous file's end state, and
  every file closed (a ROTATE or STOP at its end).
- `plan_restore`: the newest dump before the point asked for, then the archived files from the
  dump's binlog position up to the file covering that point; a hole names the missing file and
  the last time that can still be recovered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backupctl.errors import JobFailed
from backupctl.pitr.mysql_binlog import binlog_index, binlog_name


@dataclass(frozen=True)
class ArchivedBinlog:
    """One archived binlog file: its name and what its header pass found (BinlogInfo.as_dict)."""

    name: str
    facts: dict[str, Any]

    @property
    def index(self) -> int:
        return binlog_index(self.name)

    @property
    def basename(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def covered_until(self) -> int:
        return int(self.facts["covered_until"])

    @property
    def complete(self) -> bool:
        return bool(self.facts.get("complete"))


@dataclass(frozen=True)
class DumpPoint:
    """A dump of the source with the binlog position its snapshot is consistent with."""

    snapshot_id: str
    finished: datetime  # the snapshot point lies before this: a dump qualifies for T >= finished
    file: str
    position: int
    gtid: str = ""


@dataclass(frozen=True)
class Gap:
    """A hole in the chain: `missing` names the files (or what is wrong with one)."""

    after: str | None  # the last good file before the hole
    missing: list[str]
    reason: str
    last_recoverable: int | None  # Unix seconds: everything up to here is still restorable

    def describe(self) -> str:
        until = (
            datetime.fromtimestamp(self.last_recoverable, UTC).isoformat()
            if self.last_recoverable is not None
            else "nothing after the dump"
        )
        return f"{self.reason}: {', '.join(self.missing)} (last recoverable time: {until})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "after": self.after,
            "missing": self.missing,
            "reason": self.reason,
            "last_recoverable": self.last_recoverable,
        }


@dataclass
class CollectPlan:
    fetch: list[str]  # closed server files not yet archived, oldest first
    purged: list[str]  # files the server no longer has and the archive never got
    flush: bool  # transactions were written after the newest closed file: close it first


def collect_plan(
    archived: Sequence[str], server_files: Sequence[str], *, pending_writes: bool
) -> CollectPlan:
    """What one collection pass does.

    `archived`: names already in the archive; `server_files`: SHOW BINARY LOGS, oldest first,
    the last one still being written; `pending_writes`: the current file holds transactions
    (its GTID state differs from the newest closed file's end). Only names of the server's own
    basename count. Files between the newest archived one and the oldest the server still has
    were purged unarchived.
    """
    if not server_files:
        return CollectPlan([], [], False)
    basename = server_files[0].rpartition(".")[0]
    mine = {name for name in archived if name.rpartition(".")[0] == basename}
    fetch = [name for name in server_files[:-1] if name not in mine]
    purged: list[str] = []
    if mine:
        newest = max(binlog_index(name) for name in mine)
        oldest_on_server = binlog_index(server_files[0])
        purged = [binlog_name(basename, index) for index in range(newest + 1, oldest_on_server)]
    return CollectPlan(fetch, purged, pending_writes)


def chain_problems(chain: Sequence[ArchivedBinlog], start: str | None = None) -> list[Gap]:
    """Every hole in `chain` (any order) from file `start` (or its oldest file) to its newest.

    A missing sequence number, a GTID state that does not continue, and a file that is not
    closed are each a Gap. Files of another basename are ignored; `start` missing is a Gap.
    """
    ordered = sorted(chain, key=lambda item: item.index)
    if start is not None:
        basename = start.rpartition(".")[0]
        ordered = [
            item for item in ordered if item.basename == basename and item.index >= binlog_index(start)
        ]
        if not ordered or ordered[0].name != start:
            return [Gap(None, [start], "the binlog the dump starts from is not archived", None)]
    gaps: list[Gap] = []
    previous: ArchivedBinlog | None = None
    for item in ordered:
        if previous is not None:
            last = previous.covered_until
            if item.index != previous.index + 1:
                missing = [
                    binlog_name(item.basename, index) for index in range(previous.index + 1, item.index)
                ]
                gaps.append(Gap(previous.name, missing, "binlogs missing from the archive", last))
            elif item.facts.get("gtid_start", "") != previous.facts.get("gtid_end", ""):
                reason = (
                    f"GTID state jumps from {previous.facts.get('gtid_end') or '(none)'} to "
                    f"{item.facts.get('gtid_start') or '(none)'}"
                )
                gaps.append(Gap(previous.name, [item.name], reason, last))
        if not item.complete and item is not ordered[-1]:
            gaps.append(Gap(item.name, [item.name], "a binlog that was never closed", item.covered_until))
        previous = item
    return gaps


@dataclass
class RestorePlan:
    """A dump and the binlog files to replay after it, up to `stop` (None: to the newest)."""

    dump: DumpPoint
    files: list[str]
    start_position: int
    stop: datetime | None
    reached: int  # Unix seconds: the point the replay reaches
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dump": {**self.dump.__dict__, "finished": self.dump.finished.isoformat()},
            "binlogs": self.files,
            "start_position": self.start_position,
            "stop_datetime": self.stop.isoformat() if self.stop else None,
            "reached": datetime.fromtimestamp(self.reached, UTC).isoformat(),
            "notes": self.notes,
        }


class GapError(JobFailed):
    """A restore needs a binlog the archive does not hold (or holds damaged)."""

    def __init__(self, gap: Gap) -> None:
        super().__init__(f"cannot restore past a hole in the binlog archive: {gap.describe()}")
        self.gap = gap


def plan_restore(
    dumps: Sequence[DumpPoint], chain: Sequence[ArchivedBinlog], to_time: datetime | None
) -> RestorePlan:
    """The newest dump finished by `to_time` (the newest one for None) and the binlogs to replay.

    Raises JobFailed when no dump qualifies or the archive does not reach `to_time`, GapError
    naming the missing file and the last recoverable time when a hole lies on the way.
    """
    eligible = [dump for dump in dumps if to_time is None or dump.finished <= to_time]
    if not eligible:
        raise JobFailed(
            "no dump with a binlog position finished before "
            + (to_time.isoformat() if to_time else "now")
            + ": point-in-time restores start from such a dump"
        )
    dump = max(eligible, key=lambda item: item.finished)
    basename = dump.file.rpartition(".")[0]
    after = sorted(
        (item for item in chain if item.basename == basename and item.index >= binlog_index(dump.file)),
        key=lambda item: item.index,
    )
    gaps = chain_problems(after, dump.file)
    if any(gap.after is None for gap in gaps):
        raise GapError(gaps[0])
    wanted = None if to_time is None else to_time.timestamp()
    files: list[str] = []
    reached = int(dump.finished.timestamp())
    for item in after:
        files.append(item.name)
        reached = max(reached, item.covered_until)
        if wanted is not None and reached >= wanted:
            break
        if gap := next((gap for gap in gaps if gap.after == item.name), None):
            raise GapError(gap)
    if wanted is not None and reached < wanted:
        raise JobFailed(
            f"the binlog archive reaches {datetime.fromtimestamp(reached, UTC).isoformat()}, before the "
            f"point asked for ({datetime.fromtimestamp(wanted, UTC).isoformat()}): collect first, or pick "
            "an earlier time"
        )
    notes = []
    if to_time is None and after and not after[-1].complete:
        notes.append(f"{after[-1].name} was still being written when archived")
    point = reached if wanted is None else int(wanted)
    return RestorePlan(dump, files, dump.position, to_time, point, notes)
