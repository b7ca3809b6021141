"""`backupctl binlog collect|status|verify`: archiving a MySQL/MariaDB source's binary logs.

collect (one pass; `--watch` repeats it every interval, for the daemon or a systemd service):
1. read the server's binlog list and GTID position;
2. close the current file (FLUSH BINARY LOGS) when it holds transactions the archive lacks, or
   when the archive has not moved for half the RPO (an idle server still proves it is current);
3. copy every closed file not yet archived (replication protocol), check it is whole and closed,
   push it (zstd + age, its header facts signed) to every binlog target;
4. name, loudly, files the server purged before they were archived (a hole: exit 1).
A killed pass leaves no half file behind (fetch and push both write under temporary names) and
the next pass copies what is missing; a server restart closes the file with a STOP event and
opens a new one, so it needs nothing special.

status: the achieved RPO (now - the time the newest archived file covers), against the
objective; verify: the chain's continuity (file numbers and GTID states) from the oldest kept
dump's binlog position to the newest archived file.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from backupctl.catalog.models import ArtifactRow, SnapshotRow
from backupctl.catalog.store import Catalog
from backupctl.errors import ConfigError, SourceError
from backupctl.pitr.mysql_archive import BinlogArchiveStore, BinlogChainRules
from backupctl.pitr.mysql_chain import ArchivedBinlog, DumpPoint, Gap, chain_problems, collect_plan
from backupctl.pitr.mysql_server import BinlogServer
from backupctl.pitr.retention import prune_segments
from backupctl.policy.schema import MysqlPitr, MysqlSource, Policy, PostgresSource
from backupctl.sources.mysql import Endpoint


def binlog_source(policy: Policy, name: str) -> tuple[MysqlSource, MysqlPitr]:
    """The source `name` and its binlog settings; ConfigError when it does not archive binlogs."""
    source = policy.source(name)
    if isinstance(source, PostgresSource):
        raise ConfigError(
            f"source '{name}' is a PostgreSQL source: its point-in-time restore is `backupctl wal restore`"
        )
    if not isinstance(source, MysqlSource) or source.pitr is None:
        raise ConfigError(
            f"source '{name}' of policy '{policy.name}' has no pitr: block (docs/pitr-mysql.md)"
        )
    if source.via:
        raise ConfigError(f"source '{name}': binlog archiving connects to the server directly, not via SSH")
    return source, source.pitr


def source_endpoint(source: MysqlSource) -> Endpoint:
    password = source.password.resolve() if source.password else None
    return Endpoint(source.user, source.database, source.host, source.port, source.socket, password)


def dump_points(catalog: Catalog, policy: str, source: str) -> list[DumpPoint]:
    """Complete snapshots of `source` whose facts carry a binlog position, oldest first."""
    query = (
        select(SnapshotRow.id, SnapshotRow.finished_at, ArtifactRow.facts)
        .join(ArtifactRow, ArtifactRow.snapshot_id == SnapshotRow.id)
        .where(SnapshotRow.policy == policy, SnapshotRow.status.in_(("complete", "partial")))
        .where(ArtifactRow.source == source)
        .order_by(SnapshotRow.started_at)
    )
    points = []
    with catalog.session() as session:
        for snapshot_id, finished, facts in session.execute(query):
            position = (facts or {}).get("binlog_position")
            if finished is None or not isinstance(position, dict) or "file" not in position:
                continue
            finished = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
            points.append(
                DumpPoint(
                    snapshot_id,
                    finished,
                    str(position["file"]),
                    int(position["position"]),
                    str(position.get("gtid", "")),
                )
            )
    return points


# --------------------------------------------------------------------------- collect
@dataclass
class CollectReport:
    policy: str
    source: str
    archived: list[dict[str, Any]] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    flushed: bool = False
    newest: str | None = None
    covered_until: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "covered_until": _iso(self.covered_until),
            "seconds": round(self.seconds, 3),
            "ok": not self.purged,
        }


def run_collect(
    policy: Policy, source_name: str, archive: BinlogArchiveStore, *, now: float | None = None
) -> CollectReport:
    """One collection pass for `source_name` into `archive` (see the module docstring).

    `archive` is the source's binlog archive (`mysql_archive.BinlogArchiveStore`). Raises
    ConfigError/SourceError; a purge hole is reported in the result, not raised (the files after
    it are archived all the same).
    """
    started = time.monotonic()
    source, settings = binlog_source(policy, source_name)
    server = BinlogServer(source_endpoint(source))
    report = CollectReport(policy.name, source_name)
    archived = archive.binlogs()
    newest = max(archived, key=lambda item: item.index) if archived else None
    state = server.binlogs()
    stale = newest is None or (now or time.time()) - newest.covered_until >= settings.rpo.total_seconds() / 2
    pending = newest is None or newest.facts.get("gtid_end", "") != state.gtid_binlog_pos or stale
    plan = collect_plan(
        [item.name for item in archived], [name for name, _ in state.files], pending_writes=pending
    )
    if plan.flush:
        server.flush()
        report.flushed = True
        state = server.binlogs()
        plan = collect_plan(
            [item.name for item in archived], [name for name, _ in state.files], pending_writes=False
        )
    report.purged = plan.purged
    with tempfile.TemporaryDirectory(prefix="backupctl-binlog-") as scratch:
        sizes = dict(state.files)
        for name in plan.fetch:
            path, info = server.fetch(name, Path(scratch))
            if info.size != sizes[name]:
                # A copy cut short (a dropped connection) must never be archived as the file.
                raise SourceError(
                    f"the copy of binlog {name} is {info.size} bytes, the server's file {sizes[name]}: "
                    "nothing archived, the next pass copies it again"
                )
            if not info.complete and info.closed_at is None:
                # A closed file without ROTATE/STOP: left by a crash. Archived as it is (the server
                # will never add to it) and marked, so verify shows it.
                info.closed_by = "crash"
            archive.push(name, path, info.as_dict())
            path.unlink()
            report.archived.append(
                {"name": name, "size": info.size, "covered_until": _iso(info.covered_until)}
            )
    after = archive.binlogs()
    if after:
        last = max(after, key=lambda item: item.index)
        report.newest, report.covered_until = last.name, last.covered_until
    report.seconds = time.monotonic() - started
    return report


# --------------------------------------------------------------------------- status and verify
@dataclass
class BinlogStatus:
    policy: str
    source: str
    objective_seconds: int
    newest: str | None
    covered_until: int | None
    rpo_seconds: float | None
    files: int
    stored_bytes: int
    gaps: list[Gap]
    oldest_dump: str | None
    restorable_from: int | None = None  # the oldest kept dump's finish (epoch seconds)

    @property
    def continuous(self) -> bool:
        """A dump to start from and no hole from its position to the newest archived file."""
        return self.restorable_from is not None and self.newest is not None and not self.gaps

    @property
    def ok(self) -> bool:
        return self.rpo_seconds is not None and self.rpo_seconds <= self.objective_seconds and not self.gaps

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "objective_seconds": self.objective_seconds,
            "newest": self.newest,
            "covered_until": _iso(self.covered_until),
            "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 1),
            "files": self.files,
            "stored_bytes": self.stored_bytes,
            "gaps": [gap.as_dict() | {"detail": gap.describe()} for gap in self.gaps],
            "oldest_dump": self.oldest_dump,
            "restorable_from": _iso(self.restorable_from),
            "continuous": self.continuous,
            "ok": self.ok,
        }


def binlog_status(
    policy: Policy,
    source_name: str,
    archive: BinlogArchiveStore,
    catalog: Catalog,
    *,
    now: datetime | None = None,
) -> BinlogStatus:
    """The archive's RPO and its holes from the oldest kept dump's position (verify = this, strict)."""
    _source, settings = binlog_source(policy, source_name)
    chain: list[ArchivedBinlog] = archive.binlogs()
    dumps = dump_points(catalog, policy.name, source_name)
    start = dumps[0].file if dumps else None
    gaps = chain_problems(chain, start) if chain or start else []
    newest = max(chain, key=lambda item: item.index) if chain else None
    moment = (now or datetime.now(UTC)).timestamp()
    return BinlogStatus(
        policy.name,
        source_name,
        int(settings.rpo.total_seconds()),
        newest.name if newest else None,
        newest.covered_until if newest else None,
        None if newest is None else max(0.0, moment - newest.covered_until),
        len(chain),
        sum(int(item.facts.get("stored_bytes", 0)) for item in chain),
        gaps,
        dumps[0].snapshot_id if dumps else None,
        math.ceil(dumps[0].finished.timestamp()) if dumps else None,
    )


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def interval_of(policy: Policy, source_name: str) -> timedelta:
    """The collection interval of a source (for `--watch` and the generated timer)."""
    return binlog_source(policy, source_name)[1].effective_interval()


# --------------------------------------------------------------------------- retention
@dataclass
class BinlogPruneReport:
    policy: str
    source: str
    oldest_dump: str | None
    keep_from: str | None  # the oldest kept dump's binlog file: it and every later file stay
    removed: dict[str, list[str]] = field(default_factory=dict)  # target -> names
    retained_by_lock: dict[str, list[str]] = field(default_factory=dict)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_binlog_prune(
    policy: Policy, source_name: str, archive: BinlogArchiveStore, catalog: Catalog, *, dry_run: bool = False
) -> BinlogPruneReport:
    """Remove, from every binlog target, the binlogs older than the oldest kept dump's file.

    The shared segment retention (pitr.retention) does the work: oldest first, stopping at the
    first object-locked file so what stays is one contiguous window. Without a dump with a binlog
    position nothing is removed. Run after `backupctl prune`, which decides the dumps.
    """
    binlog_source(policy, source_name)
    dumps = dump_points(catalog, policy.name, source_name)
    report = BinlogPruneReport(policy.name, source_name, None, None, dry_run=dry_run)
    if not dumps:
        return report
    report.oldest_dump, report.keep_from = dumps[0].snapshot_id, dumps[0].file
    for target in archive.targets:
        segments = archive.archive_on(target)
        records = segments.list_records(archive.trusted)
        result = prune_segments(segments, records, BinlogChainRules(), report.keep_from, dry_run=dry_run)
        if result.doomed:
            report.removed[target.name] = result.doomed
        if result.retained_by_lock:
            report.retained_by_lock[target.name] = result.retained_by_lock
    return report
