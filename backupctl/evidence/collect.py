"""Read what the controls need for a period from the catalog, in a few flat queries."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, TypeVar

from sqlalchemy import select

from backupctl.catalog.ledger import Audit, audit, stamp
from backupctl.catalog.models import (
    ArchiveObservationRow,
    ArtifactRow,
    CopyRow,
    DrillRow,
    RunRecordRow,
    SnapshotRow,
    VerificationRow,
)
from backupctl.catalog.store import Catalog
from backupctl.evidence.period import Period

T = TypeVar("T")

# How far before the period runs are read: the restorable point before it (RPO), and drills
# within 90 days of its end.
LOOKBACK = timedelta(days=120)
DRILL_WINDOW = timedelta(days=90)
ARCHIVE_AFTER = timedelta(days=7)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# slots: ~57k of them for a 50-policy quarter and its lookback; no field nothing reads (a list of
# artifact formats per run, read by no control, held ~4 MB of the export's peak, evidence benchmark).
@dataclass(slots=True)
class Run:
    """One snapshot run as the evidence shows it."""

    id: str
    policy: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    host: str
    stored_bytes: int
    error: str | None
    trigger: str = "unknown"
    copies: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)  # target -> (status, when)
    encrypted: bool | None = None  # every artifact age-encrypted (restic: encrypted by restic)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy": self.policy,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "host": self.host,
            "stored_bytes": self.stored_bytes,
            "error": self.error,
            "trigger": self.trigger,
            "copies": {t: s for t, (s, _) in sorted(self.copies.items())},
            "encrypted": self.encrypted,
        }


@dataclass(frozen=True)
class ArchiveReading:
    """One row of archive_observations (see backupctl.catalog.models.ArchiveObservationRow)."""

    id: int
    archive: str
    via: str
    observed_at: datetime
    newest_at: datetime | None
    restorable_from: datetime | None
    continuous: bool
    problems: tuple[str, ...]


@dataclass
class CatalogData:
    """Everything read for one period (all policies asked for)."""

    period: Period
    # policy -> runs started in [start - LOOKBACK, end), oldest first: the policy whose controls
    # are being evaluated (document.build, from policy_runs)
    runs: dict[str, list[Run]]
    verifications: list[dict[str, Any]]
    drills: list[dict[str, Any]]
    failed_copies: list[dict[str, Any]]  # ledger copy records with status failed, since the lookback
    observations: list[dict[str, Any]]
    audit: Audit
    catalog_policies: list[str]
    hosts: list[str]
    # (policy, source) -> what was read of its point-in-time archive, oldest first: from the
    # lookback before the period to ARCHIVE_AFTER past its end (a later reading can show the
    # chain continuous across the end).
    archives: dict[tuple[str, str], list[ArchiveReading]] = field(default_factory=dict)


def collect(
    catalog: Catalog, period: Period, policies: Iterable[str] | None = None, *, audited: bool = True
) -> CatalogData:
    """Read the period's verifications, drills, failed copies, observations and archive readings,
    and audit the ledger. `policies`: only these (None: every policy in the catalog). The runs
    are read policy by policy (`policy_runs`) and set in `runs` by the caller, one policy at a
    time; `hosts` too.
    `audited=False`: no audit (`audit` is an empty Audit): the caller audits elsewhere (the
    bundle writer, in a second process) and sets it."""
    wanted = set(policies) if policies is not None else None
    since = period.start - LOOKBACK
    with catalog.engine.connect() as base:
        # Rows fetched 5000 at a time (fetchmany): without it SQLAlchemy reads a SQLite result a
        # row at a time, 336k fetchone calls for a 50-policy quarter (evidence benchmark).
        connection = base.execution_options(yield_per=5000)
        # The audit first: its per-record digests are freed before the runs are loaded (the two
        # together were the export's peak RSS, evidence benchmark).
        result = audit(connection) if audited else Audit()
        names = sorted(
            str(name) for name in connection.execute(select(SnapshotRow.policy).distinct()).scalars()
        )
        names = sorted(
            set(names) | {str(n) for n in connection.execute(select(DrillRow.policy).distinct()).scalars()}
        )
        verifications = [
            {
                "id": r[0],
                "snapshot_id": r[1],
                "target": r[2],
                "at": _utc(r[3]),
                "ok": bool(r[4]),
                "problems": list(r[5] or []),
                "policy": r[6],
            }
            for r in connection.execute(
                select(
                    VerificationRow.id,
                    VerificationRow.snapshot_id,
                    VerificationRow.target,
                    VerificationRow.at,
                    VerificationRow.ok,
                    VerificationRow.problems,
                    SnapshotRow.policy,
                )
                .join(SnapshotRow, SnapshotRow.id == VerificationRow.snapshot_id)
                .where(VerificationRow.at >= period.start, VerificationRow.at < period.end)
                .order_by(VerificationRow.at)
            )
            if wanted is None or r[6] in wanted
        ]
        drills = [
            {
                "id": r.id,
                "policy": r.policy,
                "drill": r.drill,
                "snapshot_id": r.snapshot_id,
                "target": r.target,
                "started_at": _utc(r.started_at),
                "finished_at": _utc(r.finished_at),
                "ok": bool(r.ok),
                "reason": r.reason,
                "rto_seconds": r.rto_seconds,
                "rto_objective_seconds": r.rto_objective_seconds,
                "rpo_seconds": r.rpo_seconds,
                "report_paths": dict(r.report_paths or {}),
            }
            for r in connection.execute(
                select(DrillRow.__table__)
                .where(
                    DrillRow.finished_at >= period.end - DRILL_WINDOW - (period.end - period.start),
                    DrillRow.finished_at < period.end,
                )
                .order_by(DrillRow.finished_at)
            )
            if wanted is None or r.policy in wanted
        ]
        failed_copies: list[dict[str, Any]] = []
        observations: list[dict[str, Any]] = []
        records = connection.execute(
            select(
                RunRecordRow.kind,
                RunRecordRow.subject,
                RunRecordRow.at,
                RunRecordRow.payload,
                RunRecordRow.seq,
            )
            .where(RunRecordRow.kind.in_(("copy", "observation")))
            .where(RunRecordRow.at >= stamp(since))
            .where((RunRecordRow.kind != "copy") | RunRecordRow.payload.contains('"status":"failed"'))
            .where(
                (RunRecordRow.kind != "observation")
                | ((RunRecordRow.at >= stamp(period.start)) & (RunRecordRow.at < stamp(period.end)))
            )
            .order_by(RunRecordRow.seq)
        )
        for kind, subject, at, payload, seq in records:
            if kind == "copy":
                # Every failed copy since the lookback's start: copies_replicated matches each
                # with its policy's runs (the runs are read policy by policy, see policy_runs).
                failed_copies.append({"seq": seq, "at": at, "subject": subject, **json.loads(payload)})
            else:
                data = json.loads(payload)
                policy = subject.split(":", 1)[1] if ":" in subject else subject
                if wanted is None or policy in wanted:
                    observations.append({"seq": seq, "at": at, "subject": subject, "policy": policy, **data})
        archives: dict[tuple[str, str], list[ArchiveReading]] = {}
        table = ArchiveObservationRow.__table__.c
        readings = (
            select(
                table.policy,
                table.source,
                table.id,
                table.archive,
                table.via,
                table.observed_at,
                table.newest_at,
                table.restorable_from,
                table.continuous,
                table.problems,
            )
            .where(table.observed_at >= since, table.observed_at < period.end + ARCHIVE_AFTER)
            .order_by(table.observed_at, table.id)
        )
        for (
            policy,
            source,
            ident,
            archive,
            via,
            observed,
            newest,
            start,
            continuous,
            problems,
        ) in connection.execute(readings):
            if wanted is not None and policy not in wanted:
                continue
            archives.setdefault((policy, source), []).append(
                ArchiveReading(
                    int(ident),
                    archive,
                    via,
                    _utc(observed) or period.start,
                    _utc(newest),
                    _utc(start),
                    bool(continuous),
                    tuple(problems or ()),
                )
            )
    return CatalogData(
        period, {}, verifications, drills, failed_copies, observations, result, names, [], archives
    )


def policy_runs(
    catalog: Catalog, period: Period, policies: Iterable[str] | None = None
) -> Iterator[list[Run]]:
    """Each policy's runs started in [start - LOOKBACK, end), oldest first, with their copies,
    encryption and trigger: one list per policy (none for a policy without runs), policy by
    policy. `policies`: only these (None: every policy in the catalog).

    Four queries ordered by policy, read side by side: a caller that evaluates and drops each
    policy's lookback runs before asking for the next holds one policy's instead of every
    policy's (a 50-policy quarter read 58k runs at once: ~25 MB of the export's peak, evidence
    benchmark). The streams are matched by equal policy names only (never compared with `<`:
    the database's collation orders them, which need not be Python's)."""
    since = period.start - LOOKBACK
    in_range = (SnapshotRow.started_at >= since, SnapshotRow.started_at < period.end)
    wanted = (SnapshotRow.policy.in_(sorted(set(policies))),) if policies is not None else ()
    runs_query = (
        select(
            SnapshotRow.policy,
            SnapshotRow.id,
            SnapshotRow.status,
            SnapshotRow.started_at,
            SnapshotRow.finished_at,
            SnapshotRow.host,
            SnapshotRow.stored_bytes,
            SnapshotRow.error,
        )
        .where(*in_range, *wanted)
        .order_by(SnapshotRow.policy, SnapshotRow.started_at, SnapshotRow.id)
    )
    copies_query = (
        select(SnapshotRow.policy, CopyRow.snapshot_id, CopyRow.target, CopyRow.status, CopyRow.updated_at)
        .join(SnapshotRow, SnapshotRow.id == CopyRow.snapshot_id)
        .where(*in_range, *wanted)
        .order_by(SnapshotRow.policy, SnapshotRow.started_at, SnapshotRow.id, CopyRow.target)
    )
    artifacts_query = (
        select(SnapshotRow.policy, ArtifactRow.snapshot_id, ArtifactRow.file, ArtifactRow.format)
        .join(SnapshotRow, SnapshotRow.id == ArtifactRow.snapshot_id)
        .where(SnapshotRow.started_at >= period.start, SnapshotRow.started_at < period.end, *wanted)
        .order_by(SnapshotRow.policy)
    )
    # Who started each run: its first snapshot record (no payload read). A run's records are
    # written from its start on, by the clock that stamped started_at: none of these runs has
    # one before `since` (the index on `at` skips them).
    starters_query = (
        select(SnapshotRow.policy, RunRecordRow.subject, RunRecordRow.trigger)
        .join(SnapshotRow, SnapshotRow.id == RunRecordRow.subject)
        .where(RunRecordRow.kind == "snapshot", RunRecordRow.at >= stamp(since), *in_range, *wanted)
        .order_by(SnapshotRow.policy, RunRecordRow.seq)
    )
    # One object per distinct policy, status, host, target and trigger: the driver makes a new
    # string per row (~40 MB of the export's peak RSS for 58k runs and their copies, evidence
    # benchmark).
    seen: dict[Any, Any] = {}

    def shared(value: T) -> T:
        found: T = seen.setdefault(value, value)
        return found

    with catalog.engine.connect() as base:
        # Rows fetched 5000 at a time (fetchmany): without it SQLAlchemy reads a SQLite result a
        # row at a time (evidence benchmark).
        connection = base.execution_options(yield_per=5000)
        copies = _Grouped(connection.execute(copies_query))
        artifacts = _Grouped(connection.execute(artifacts_query))
        starters = _Grouped(connection.execute(starters_query))
        for _policy, rows in groupby(connection.execute(runs_query), key=lambda row: row[0]):
            policy = shared(str(_policy))
            runs = [
                Run(
                    row[1],
                    policy,
                    shared(row[2]),
                    _utc(row[3]) or period.start,
                    _utc(row[4]),
                    shared(row[5]),
                    row[6],
                    row[7],
                )
                for row in rows
            ]
            by_id = {run.id: run for run in runs}
            for _, snapshot_id, target, status, updated in copies.take(policy):
                by_id[snapshot_id].copies[shared(target)] = (shared(status), _utc(updated))
            for _, snapshot_id, file, fmt in artifacts.take(policy):
                found = by_id[snapshot_id]
                encrypted = file.endswith(".age") or fmt.startswith("restic")
                found.encrypted = encrypted if found.encrypted is None else (found.encrypted and encrypted)
            for _, subject, trigger in starters.take(policy):
                owner = by_id[subject]
                if owner.trigger == "unknown":
                    owner.trigger = shared(trigger)  # the first record of a run: who started it
            del by_id
            yield runs


class _Grouped:
    """Rows ordered by their first column (the policy), taken one policy's group at a time."""

    def __init__(self, rows: Iterable[Any]) -> None:
        self._rows = iter(rows)
        self._next: Any = next(self._rows, None)

    def take(self, policy: str) -> Iterator[Any]:
        """The rows of `policy` if they come next (none otherwise: that policy has no row here)."""
        while self._next is not None and self._next[0] == policy:
            row, self._next = self._next, next(self._rows, None)
            yield row
