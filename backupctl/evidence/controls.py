"""Controls as code: each evaluates one policy over a period from the catalog.

Every control returns a ControlResult: COMPLIANT, NON_COMPLIANT or INSUFFICIENT_DATA (never
COMPLIANT for lack of records), the records it rests on, and the exceptions that make it fail.
Parameters come from the policy itself (schedule, objectives, retention, targets).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from backupctl.core.cronexpr import CronExpr
from backupctl.evidence.collect import DRILL_WINDOW, CatalogData, Run
from backupctl.policy.schema import Policy
from backupctl.retention import SnapshotRef, plan_retention

COMPLIANT = "COMPLIANT"
NON_COMPLIANT = "NON_COMPLIANT"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
RESTORABLE = ("complete", "partial")


@dataclass
class ControlResult:
    control: str
    policy: str
    status: str
    summary: str
    records: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "policy": self.policy,
            "status": self.status,
            "summary": self.summary,
            "records": self.records,
            "exceptions": self.exceptions,
            "measured": self.measured,
        }


@dataclass
class PolicyPeriod:
    """One policy's view of the period: what the controls read."""

    policy: Policy
    data: CatalogData
    now: datetime

    @property
    def start(self) -> datetime:
        return self.data.period.start

    @property
    def end(self) -> datetime:
        """The end of what can be judged: the period's end, or now for the current period."""
        return min(self.data.period.end, self.now)

    @property
    def all_runs(self) -> list[Run]:
        return self.data.runs.get(self.policy.name, [])

    @cached_property
    def runs(self) -> list[Run]:
        """The runs started in the period, oldest first (computed once: every control reads it)."""
        return [run for run in self.all_runs if self.start <= run.started_at < self.end]


def _result(ctx: PolicyPeriod, control: str, status: str, summary: str, **kwargs: Any) -> ControlResult:
    return ControlResult(control, ctx.policy.name, status, summary, **kwargs)


def _no_data(ctx: PolicyPeriod, control: str, what: str) -> ControlResult:
    return _result(ctx, control, INSUFFICIENT_DATA, f"no {what} recorded for this policy in the period")


def _fmt(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


# ------------------------------------------------------------------------------ the controls
def backups_scheduled(ctx: PolicyPeriod) -> ControlResult:
    """Expected runs from `schedule:` vs runs recorded; missed slots and failed runs listed."""
    name = "backups-scheduled"
    if ctx.policy.schedule is None:
        return _result(
            ctx, name, INSUFFICIENT_DATA, "the policy declares no schedule: nothing to compare with"
        )
    if not ctx.runs:
        return _no_data(ctx, name, "backup run")
    cron = CronExpr.parse(ctx.policy.schedule)
    # Cron reads local wall-clock time, as the schedulers do (backupctl.scheduling).
    cursor = ctx.start.astimezone().replace(tzinfo=None) - timedelta(seconds=1)
    slots: list[datetime] = []
    while True:
        cursor = cron.next_after(cursor)
        slot = cursor.astimezone().astimezone(UTC)
        if slot >= ctx.end:
            break
        slots.append(slot)
    exceptions, records = [], [run.id for run in ctx.runs]
    missed = 0
    # ctx.runs is sorted by start: each slot's window and each failure's resolution by bisection.
    starts = [run.started_at for run in ctx.runs]
    for index, slot in enumerate(slots):
        until = slots[index + 1] if index + 1 < len(slots) else ctx.end
        low = bisect_left(starts, slot - timedelta(minutes=5))
        window = ctx.runs[low : max(low, bisect_left(starts, until))]
        if not window:
            missed += 1
            exceptions.append(f"missed: no backup ran for the slot {slot.isoformat()}")
        elif not any(run.status in RESTORABLE for run in window):
            missed += 1
            errors = "; ".join(sorted({run.error or run.status for run in window}))
            exceptions.append(f"failed: every run for the slot {slot.isoformat()} failed ({errors})")
    restorable = [run for run in ctx.runs if run.status in RESTORABLE]
    restorable_starts = [run.started_at for run in restorable]
    for run in ctx.runs:
        if run.status == "failed":
            after = bisect_right(restorable_starts, run.started_at)
            later = restorable[after] if after < len(restorable) else None
            resolved = (
                f"; resolved by {later.id} at {later.started_at.isoformat()}" if later else "; unresolved"
            )
            exceptions.append(f"run {run.id} failed at {run.started_at.isoformat()}: {run.error}{resolved}")
    status = NON_COMPLIANT if missed else COMPLIANT
    summary = f"{len(slots) - missed} of {len(slots)} scheduled runs succeeded ({ctx.policy.schedule})"
    return _result(
        ctx,
        name,
        status,
        summary,
        records=records,
        exceptions=exceptions,
        measured={"expected": len(slots), "missed": missed, "runs": len(ctx.runs)},
    )


Gap = tuple[timedelta, datetime, datetime]  # (length, from, to)


def restorable_gaps(
    points: list[datetime], spans: list[tuple[datetime, datetime]], start: datetime, end: datetime
) -> list[Gap]:
    """The stretches of [start, end) with nothing restorable: between dumps (`points`, any order)
    and the spans a continuous archive covered. The first gap runs from the last restorable
    moment before `start` (or `start` when there is none); the last one ends at `end`."""
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted([(point, point) for point in points] + spans):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    cursor: datetime | None = None  # the newest restorable moment so far
    gaps: list[Gap] = []
    for low, high in merged:
        if low >= end:
            break
        if low <= start:
            cursor = min(high, start) if cursor is None else max(cursor, min(high, start))
            continue
        cursor = cursor or start
        if low > cursor:
            gaps.append((low - cursor, cursor, low))
        cursor = max(cursor, min(high, end))
    cursor = cursor or start
    if end > cursor:
        gaps.append((end - cursor, cursor, end))
    return gaps


def _archive_rpo(ctx: PolicyPeriod, source: str, points: list[datetime]) -> dict[str, Any]:
    """One PITR source: restorable from the dumps and from what its archive was seen to cover;
    inside a covered stretch the RPO is the archive's lag as observed (observed_at - newest)."""
    readings = ctx.data.archives.get((ctx.policy.name, source), [])
    inside = [r for r in readings if ctx.start <= r.observed_at < ctx.end]
    # The archive's own objective where it declares one (MySQL `pitr.rpo`), else the policy's.
    pitr = getattr(ctx.policy.source(source), "pitr", None)
    objective = getattr(pitr, "rpo", None) or ctx.policy.objectives.rpo
    result: dict[str, Any] = {
        "source": source,
        "archive": readings[0].archive if readings else None,
        "observations": len(inside),
        "records": [f"archive-observation:{r.id}" for r in inside],
    }
    if not inside:
        result |= {"status": INSUFFICIENT_DATA, "exceptions": [], "worst_gap_seconds": None}
        return result
    spans = [
        (r.restorable_from, r.newest_at)
        for r in readings
        if r.continuous and r.restorable_from is not None and r.newest_at is not None
    ]
    gaps = restorable_gaps(points, spans, ctx.start, ctx.end)
    lags = [(r.observed_at - r.newest_at, r) for r in inside if r.continuous and r.newest_at is not None]
    exceptions = [
        f"{source}: nothing restorable from {a.isoformat()} to {b.isoformat()} ({_fmt(g.total_seconds())}, "
        f"RPO {_fmt(objective.total_seconds())})"
        for g, a, b in gaps
        if g > objective
    ]
    exceptions += [
        f"{source}: the {r.archive} archive was {_fmt(lag.total_seconds())} behind when observed at "
        f"{r.observed_at.isoformat()} by `{r.via}` (RPO {_fmt(objective.total_seconds())})"
        for lag, r in lags
        if lag > objective
    ]
    exceptions += [
        f"{source}: the {r.archive} archive was not continuous when observed at {r.observed_at.isoformat()} "
        f"by `{r.via}`: {'; '.join(r.problems) or 'no base backup or dump to start from'}"
        for r in inside
        if not r.continuous
    ]
    worst_gap = max((g for g, _, _ in gaps), default=timedelta(0))
    worst_lag = max((lag for lag, _ in lags), default=timedelta(0))
    result |= {
        "status": NON_COMPLIANT if exceptions else COMPLIANT,
        "exceptions": exceptions,
        "worst_gap_seconds": max(worst_gap, worst_lag).total_seconds(),
        "worst_lag_seconds": worst_lag.total_seconds() if lags else None,
        "largest_hole_seconds": worst_gap.total_seconds(),
    }
    return result


def rpo_achieved(ctx: PolicyPeriod) -> ControlResult:
    """The largest gap between restorable points over the period vs `objectives.rpo`: per
    source with a point-in-time archive (`pitr:`), from the dumps and the archive's observations
    (INSUFFICIENT_DATA without an observation in the period); for the other sources, from the
    dumps alone."""
    name = "rpo-achieved"
    restorable = [run for run in ctx.all_runs if run.status in RESTORABLE and run.started_at < ctx.end]
    points = [run.started_at for run in restorable]
    inside = [run for run in restorable if run.started_at >= ctx.start]
    objective = ctx.policy.objectives.rpo
    pitr_sources = [source.name for source in ctx.policy.sources if getattr(source, "pitr", None)]
    plain_sources = [source.name for source in ctx.policy.sources if source.name not in pitr_sources]
    archives = {source: _archive_rpo(ctx, source, points) for source in pitr_sources}
    records = [run.id for run in inside] + [r for a in archives.values() for r in a.pop("records")]
    exceptions: list[str] = [e for a in archives.values() for e in a.pop("exceptions")]
    worst: list[float] = [
        a["worst_gap_seconds"] for a in archives.values() if a["worst_gap_seconds"] is not None
    ]
    insufficient = [source for source, a in archives.items() if a["status"] == INSUFFICIENT_DATA]
    if plain_sources or not pitr_sources:
        if not inside:
            insufficient.append(", ".join(plain_sources) or "dumps")
        else:
            gaps = restorable_gaps(points, [], ctx.start, ctx.end)
            worst.append(max(g for g, _, _ in gaps).total_seconds())
            exceptions = [
                f"gap of {_fmt(g.total_seconds())} from {a.isoformat()} to {b.isoformat()} "
                f"exceeds the RPO {_fmt(objective.total_seconds())}"
                for g, a, b in gaps
                if g > objective
            ] + exceptions
    if exceptions:
        status = NON_COMPLIANT
    elif insufficient:
        status = INSUFFICIENT_DATA
    else:
        status = COMPLIANT
    largest = max(worst, default=None)
    summary = (
        f"largest gap {_fmt(largest)} vs objective {_fmt(objective.total_seconds())}"
        if largest is not None
        else "no restorable snapshot recorded for this policy in the period"
    )
    if insufficient and not exceptions:
        summary += f"; no record for {', '.join(insufficient)} in the period"
        if pitr_sources and any(s in pitr_sources for s in insufficient):
            summary += (
                " (a point-in-time archive is observed by `status`, `wal status`, `binlog status|collect`)"
            )
    measured: dict[str, Any] = {
        "worst_gap_seconds": largest,
        "objective_seconds": objective.total_seconds(),
        "restorable_points": len(inside),
        "point_in_time_archive": archives or None,
    }
    return _result(ctx, name, status, summary, records=records, exceptions=exceptions, measured=measured)


def retention_held(ctx: PolicyPeriod) -> ControlResult:
    """Per target: every snapshot its retention keeps at the period's end still has a copy."""
    name = "retention"
    held = [run for run in ctx.all_runs if run.status in RESTORABLE and run.started_at < ctx.end]
    if not [run for run in held if run.started_at >= ctx.start]:
        return _no_data(ctx, name, "restorable snapshot")
    exceptions: list[str] = []
    measured: dict[str, Any] = {}
    for target in ctx.policy.targets:
        rules = target.retention or ctx.policy.retention
        copies = [
            run for run in held if run.copies.get(target.name, ("", None))[0] in ("complete", "deleted")
        ]
        plan = plan_retention([SnapshotRef(run.id, run.started_at) for run in copies], rules, ctx.end)
        kept = {ref.id for ref in plan.kept}
        lost = [
            run
            for run in copies
            if run.id in kept
            and run.copies[target.name][0] == "deleted"
            and (run.copies[target.name][1] or ctx.end) < ctx.end
        ]
        exceptions += [f"{target.name}: {run.id} was deleted before its retention expired" for run in lost]
        measured[target.name] = {
            "declared": rules.model_dump(exclude_none=True),
            "kept_by_rules": len(kept),
            "held": sum(1 for run in copies if run.copies[target.name][0] == "complete"),
        }
    status = NON_COMPLIANT if exceptions else COMPLIANT
    return _result(
        ctx,
        name,
        status,
        "retention as declared, held on every target"
        if not exceptions
        else f"{len(exceptions)} copies deleted early",
        exceptions=exceptions,
        measured=measured,
    )


def encrypted(ctx: PolicyPeriod) -> ControlResult:
    """Every artifact of the period is age-encrypted to the policy's recipients (or in restic)."""
    name = "encryption"
    runs = [run for run in ctx.runs if run.encrypted is not None]
    if not runs:
        return _no_data(ctx, name, "artifact")
    plain = [run.id for run in runs if not run.encrypted]
    recipients = [r[:12] + "…" + r[-6:] for r in ctx.policy.encryption.recipients]
    status = NON_COMPLIANT if plain else COMPLIANT
    return _result(
        ctx,
        name,
        status,
        f"{len(runs) - len(plain)} of {len(runs)} snapshots encrypted",
        records=[run.id for run in runs],
        exceptions=[f"snapshot {i} has an unencrypted artifact" for i in plain],
        measured={"recipients": recipients},
    )


def _immutable_targets(ctx: PolicyPeriod) -> set[str]:
    found = set()
    for target in ctx.policy.targets:
        if getattr(target, "object_lock", None) is not None or getattr(target, "append_only", False):
            found.add(target.name)
    for observation in ctx.data.observations:
        if observation.get("policy") == ctx.policy.name:
            for facts in observation.get("targets", []):
                if facts.get("immutable"):
                    found.add(str(facts.get("name")))
    return found


def rule_32110(ctx: PolicyPeriod) -> ControlResult:
    """3-2-1-1-0 per snapshot of the period, from its copies and the targets' declared/observed
    posture: 3 copies (production + 2 targets), 2 media, 1 off-site, 1 immutable, 0 errors."""
    name = "3-2-1-1-0"
    runs = [run for run in ctx.runs if run.status in RESTORABLE]
    if not runs:
        return _no_data(ctx, name, "restorable snapshot")
    by_name = {target.name: target for target in ctx.policy.targets}
    immutable = _immutable_targets(ctx)
    exceptions = []
    for run in runs:
        held = [t for t, (status, _) in run.copies.items() if status == "complete" and t in by_name]
        missing = []
        if len(held) < 2:
            missing.append(f"{len(held) + 1} copies")
        if len({by_name[t].medium for t in held}) < 2:
            missing.append("one medium")
        if not any(by_name[t].offsite for t in held):
            missing.append("no off-site copy")
        if not immutable & set(held):
            missing.append("no immutable copy")
        if missing:
            exceptions.append(f"snapshot {run.id}: " + ", ".join(missing))
    failed_verifications = [
        v for v in ctx.data.verifications if v["policy"] == ctx.policy.name and not v["ok"]
    ]
    exceptions += [
        f"verify of {v['snapshot_id']} on {v['target']} found errors: {'; '.join(v['problems'])}"
        for v in failed_verifications
    ]
    observed = [o for o in ctx.data.observations if o.get("policy") == ctx.policy.name]
    status = NON_COMPLIANT if exceptions else COMPLIANT
    return _result(
        ctx,
        name,
        status,
        f"{len(runs)} snapshots checked, {len(observed)} status observations",
        records=[run.id for run in runs],
        exceptions=exceptions,
        measured={
            "observations": len(observed),
            "observed_compliant": sum(1 for o in observed if o.get("compliant")),
        },
    )


def immutable_copy(ctx: PolicyPeriod) -> ControlResult:
    """Each snapshot of the period has a complete copy on an immutable target (object lock,
    append-only restic)."""
    name = "immutable-copy"
    runs = [run for run in ctx.runs if run.status in RESTORABLE]
    if not runs:
        return _no_data(ctx, name, "restorable snapshot")
    immutable = _immutable_targets(ctx)
    if not immutable:
        return _result(ctx, name, NON_COMPLIANT, "no target is immutable (object lock / append-only)")
    missing = [
        run.id for run in runs if not any(run.copies.get(t, ("", None))[0] == "complete" for t in immutable)
    ]
    status = NON_COMPLIANT if missing else COMPLIANT
    return _result(
        ctx,
        name,
        status,
        f"immutable targets: {', '.join(sorted(immutable))}",
        records=[run.id for run in runs],
        exceptions=[f"snapshot {i} has no complete immutable copy" for i in missing],
    )


def drill_passed(ctx: PolicyPeriod) -> ControlResult:
    """A drill of the policy passed within 90 days before the period's end, RTO ≤ objective."""
    name = "restore-drill"
    window = [
        d
        for d in ctx.data.drills
        if d["policy"] == ctx.policy.name and ctx.end - DRILL_WINDOW <= d["finished_at"] < ctx.end
    ]
    if not window:
        return _result(
            ctx,
            name,
            INSUFFICIENT_DATA if not ctx.runs else NON_COMPLIANT,
            "no restore drill in the 90 days before the period's end",
        )
    objective = ctx.policy.objectives.rto.total_seconds()
    exceptions = [f"drill {d['id']} failed: {d['reason']}" for d in window if not d["ok"]]
    good = [d for d in window if d["ok"] and d["rto_seconds"] is not None and d["rto_seconds"] <= objective]
    slow = [d for d in window if d["ok"] and (d["rto_seconds"] is None or d["rto_seconds"] > objective)]
    exceptions += [
        f"drill {d['id']} passed but took {d['rto_seconds']}s > RTO {objective:.0f}s" for d in slow
    ]
    status = COMPLIANT if good else NON_COMPLIANT
    best = min((d["rto_seconds"] for d in good), default=None)
    return _result(
        ctx,
        name,
        status,
        f"{len(good)} passing drill(s) within RTO {_fmt(objective)}"
        + (f", fastest {best:.1f}s" if best is not None else ""),
        records=[d["id"] for d in window],
        exceptions=exceptions,
        measured={"rto_objective_seconds": objective, "best_rto_seconds": best},
    )


def verify_runs(ctx: PolicyPeriod) -> ControlResult:
    """`backupctl verify` ran in the period; failures are listed with what resolved them."""
    name = "verify-runs"
    runs = [v for v in ctx.data.verifications if v["policy"] == ctx.policy.name]
    if not runs:
        return _no_data(ctx, name, "verify run")
    exceptions = []
    for v in runs:
        if not v["ok"]:
            later = next(
                (w for w in runs if w["at"] > v["at"] and w["ok"] and w["target"] == v["target"]), None
            )
            tail = f"; a later verify passed at {later['at'].isoformat()}" if later else "; unresolved"
            exceptions.append(
                f"verify of {v['snapshot_id']} on {v['target']} failed: {'; '.join(v['problems'])}{tail}"
            )
    unresolved = [e for e in exceptions if e.endswith("unresolved")]
    status = NON_COMPLIANT if unresolved else COMPLIANT
    return _result(
        ctx,
        name,
        status,
        f"{sum(v['ok'] for v in runs)} of {len(runs)} verify runs passed",
        records=[str(v["id"]) for v in runs],
        exceptions=exceptions,
    )


def copies_replicated(ctx: PolicyPeriod) -> ControlResult:
    """Copies that failed during the period, and whether a later replicate completed them."""
    name = "copies"
    runs = {run.id: run for run in ctx.runs}
    if not runs:
        return _no_data(ctx, name, "backup run")
    exceptions, unresolved = [], 0
    for failure in ctx.data.failed_copies:
        run = runs.get(failure["snapshot_id"])
        if run is None:
            continue
        now_status = run.copies.get(failure["target"], ("missing", None))[0]
        resolved = now_status == "complete"
        unresolved += not resolved
        tail = (
            "; resolved: the copy is now complete (replicated)"
            if resolved
            else f"; unresolved ({now_status})"
        )
        exceptions.append(f"copy of {run.id} to {failure['target']} failed: {failure.get('error')}{tail}")
    status = NON_COMPLIANT if unresolved else COMPLIANT
    return _result(
        ctx, name, status, f"{len(exceptions)} failed copies, {unresolved} unresolved", exceptions=exceptions
    )


CONTROLS: dict[str, Callable[[PolicyPeriod], ControlResult]] = {
    "backups-scheduled": backups_scheduled,
    "rpo-achieved": rpo_achieved,
    "retention": retention_held,
    "encryption": encrypted,
    "3-2-1-1-0": rule_32110,
    "immutable-copy": immutable_copy,
    "restore-drill": drill_passed,
    "verify-runs": verify_runs,
    "copies": copies_replicated,
}
INTEGRITY = "catalog-integrity"


def catalog_integrity(data: CatalogData) -> ControlResult:
    """The run ledger's hash chain is intact and every record agrees with it."""
    audit = data.audit
    status = COMPLIANT if audit.ok else NON_COMPLIANT
    if audit.records == 0:
        status = INSUFFICIENT_DATA
    return ControlResult(
        INTEGRITY,
        "*",
        status,
        f"{audit.records} ledger records, head {audit.head[:16]}",
        exceptions=list(audit.problems),
        measured={"head": audit.head, "head_seq": audit.head_seq},
    )


def evaluate(policy: Policy, data: CatalogData, now: datetime | None = None) -> list[ControlResult]:
    """Every control for one policy over the period."""
    ctx = PolicyPeriod(policy, data, now or datetime.now(UTC))
    return [control(ctx) for control in CONTROLS.values()]
