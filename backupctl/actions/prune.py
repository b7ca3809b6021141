"""`backupctl prune POLICY`: apply GFS retention to every target (plan: backupctl.retention).

What is pruned comes from the catalog (the index of complete copies; run `backupctl catalog
rebuild` first if it is out of date). Each target is planned with its own `retention:` override
when it has one, else the policy's; the plan also protects the only copy of a snapshot and the
newest snapshot of each target (see the retention module). Snapshots still `running` or `failed`
are never candidates: backup cleans those up itself.

Blob targets (local, S3, SFTP): manifest.json is deleted FIRST, then its signature, then the
artifacts. The manifest's presence is what marks a snapshot complete on a target
(`write_manifest`, `list_snapshot_ids`, `catalog rebuild`): removing it first means a prune that
dies halfway leaves orphan artifacts that nothing mistakes for a snapshot, never a manifest that
promises artifacts that are gone. A re-run deletes the leftovers (every delete is idempotent).
When object lock refuses the manifest, nothing else of that snapshot is touched: it stays whole
and readable, is reported retained-by-lock (with the retain-until date) and keeps its catalog
copy. If the manifest went but an artifact is locked, the copy is no longer usable: it is
recorded deleted and the locked leftovers are reported retained-by-lock.

restic targets: the restic snapshots tagged `snapshot=<id>` of every pruned snapshot are
forgotten in one `restic forget --prune` (each restic call costs a key derivation). The same call
forgets the leftovers of failed runs: a source's data that restic committed before the run
failed, so that no manifest describes it (the catalog says the run failed; prune holds the
policy lock, so no backup is running). Nothing can restore or verify such data, but restic would
keep it, and its blobs, forever. A dry run does not read the repository and reports none.

Catalog: a removed copy is marked `deleted`. A snapshot left with no complete copy on any target
gets the status `pruned`: it no longer resolves (`restore ... ID` says it is pruned) and no longer
appears among complete snapshots, while its rows remain as audit history.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, select, update

from backupctl.actions.access import open_catalog
from backupctl.actions.events import Events, LogEvents
from backupctl.catalog.models import CopyRow, SnapshotRow
from backupctl.catalog.store import COMPLETE_STATES, Catalog, CopyState
from backupctl.errors import BackupctlError, RetainedByLock
from backupctl.policy.schema import Policy, Retention
from backupctl.retention import SnapshotRef, plan_policy
from backupctl.settings import Settings
from backupctl.targets.registry import traits_of
from backupctl.targets.store import open_store

PRUNED = "pruned"  # snapshot status once no target holds a complete copy
_UNTIL = re.compile(r"\buntil (\d{4}-\d\d-\d\dT[0-9:.+\-Z]+)")


@dataclass
class Kept:
    snapshot: str
    reasons: list[str]


@dataclass
class Locked:
    snapshot: str
    until: str | None  # ISO 8601 retain-until date; None for a legal hold or when unknown
    detail: str


@dataclass
class Failure:
    snapshot: str
    error: str


@dataclass
class TargetPrune:
    """What prune did (or, in a dry run, would do) on one target."""

    target: str
    type: str
    rules: dict[str, Any]
    kept: list[Kept] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # oldest first
    leftovers: list[str] = field(default_factory=list)  # failed runs whose restic data was forgotten
    retained_by_lock: list[Locked] = field(default_factory=list)
    errors: list[Failure] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class PruneReport:
    policy: str
    dry_run: bool
    now: datetime
    targets: list[TargetPrune] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when a deletion failed (retained-by-lock is not a failure: it is the lock working)."""
        return any(target.errors for target in self.targets)

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "targets": [target.as_dict() for target in self.targets],
        }


def rules_for(policy: Policy, target_name: str) -> Retention:
    """The target's own `retention:` override when it has one, else the policy's rules."""
    override = getattr(policy.target(target_name), "retention", None)
    return override if isinstance(override, Retention) else policy.retention


def run_prune(
    settings: Settings,
    policy: Policy,
    *,
    dry_run: bool = False,
    only_targets: list[str] | None = None,
    events: Events | None = None,
    now: datetime | None = None,
) -> PruneReport:
    """Plan retention for every target of `policy` and, unless `dry_run`, carry it out on the
    targets in `only_targets` (all when None). Deletion failures are reported, not raised.

    Raises ConfigError for an unknown target name or unresolvable target settings.
    """
    events = events or LogEvents()
    now = now or datetime.now(UTC)
    for name in only_targets or []:
        policy.target(name)  # ConfigError (exit 2) for a name the policy does not have
    catalog = open_catalog(settings)
    plans = plan_policy(
        holdings(catalog, policy), {t.name: rules_for(policy, t.name) for t in policy.targets}, now
    )
    report = PruneReport(policy.name, dry_run, now)
    # Runs that failed may have left data behind in deduplicating stores (restic; see the
    # module docstring): blob targets never list what a failed run wrote.
    deduplicating = any(traits_of(t).deduplicating for t in policy.targets)
    failed_runs = _failed_runs(catalog, policy.name) if deduplicating and not dry_run else set()
    for config in policy.targets:
        if only_targets is not None and config.name not in only_targets:
            continue
        plan = plans[config.name]
        result = TargetPrune(
            config.name,
            config.type,
            rules_for(policy, config.name).model_dump(mode="json", exclude_none=True),
        )
        result.kept = [Kept(d.snapshot.id, d.reasons) for d in plan.decisions if d.keep]
        report.targets.append(result)
        doomed = [ref.id for ref in reversed(plan.removed)]  # oldest first
        leftovers = failed_runs if traits_of(config).deduplicating else set()
        if dry_run or not (doomed or leftovers):
            result.removed = doomed
            continue
        _delete(config, policy.name, doomed, result, leftovers)
        catalog.record_copies([CopyState(removed, config.name, "deleted") for removed in result.removed])
        for snapshot_id in result.removed:
            events.info(f"prune {policy.name}: removed snapshot {snapshot_id} from {config.name}")
        for snapshot_id in result.leftovers:
            events.info(f"prune {policy.name}: forgot the data of failed run {snapshot_id} in {config.name}")
        for locked in result.retained_by_lock:
            events.info(f"prune {policy.name}: {locked.detail}")
        for failure in result.errors:
            events.warning(f"prune {policy.name}: {failure.snapshot} on {config.name}: {failure.error}")
    if not dry_run:
        for snapshot_id in mark_pruned(catalog, policy.name):
            events.info(f"prune {policy.name}: snapshot {snapshot_id} has no copy left; marked pruned")
    return report


def prune_after_backup(settings: Settings, policy: Policy, events: Events) -> PruneReport | None:
    """The prune a backup runs when its policy says `prune_after_backup: true`.

    Never fails the backup that just succeeded: problems become warnings (the next run retries).
    """
    try:
        report = run_prune(settings, policy, events=events)
    except BackupctlError as error:
        events.warning(f"prune after backup of {policy.name} failed: {error}")
        return None
    if report.failed:
        events.warning(f"prune after backup of {policy.name}: some deletions failed (see above)")
    return report


def holdings(catalog: Catalog, policy: Policy) -> dict[str, list[SnapshotRef]]:
    """Target name -> snapshots it holds a complete copy of (newest first), for every target of
    the policy: one flat query, as planning needs only ids, times and copies.

    Copies on targets the policy no longer names are ignored: prune cannot reach them, and a
    restore cannot use them, so they protect nothing.
    """
    held: dict[str, list[SnapshotRef]] = {target.name: [] for target in policy.targets}
    for snapshot_id, started_at, target in catalog.complete_copies(policy.name):
        if target in held:
            held[target].append(SnapshotRef(snapshot_id, started_at))
    return held


def mark_pruned(catalog: Catalog, policy: str) -> list[str]:
    """Complete/partial snapshots of `policy` that have copies but no complete one become `pruned`.

    Two statements whatever the history's length (not one copies query per snapshot).
    """
    copies = CopyRow.snapshot_id == SnapshotRow.id
    with catalog.session() as session:
        changed = list(
            session.scalars(
                select(SnapshotRow.id)
                .where(
                    SnapshotRow.policy == policy,
                    SnapshotRow.status.in_(COMPLETE_STATES),
                    exists().where(copies),
                    ~exists().where(copies, CopyRow.status == "complete"),
                )
                .order_by(SnapshotRow.started_at, SnapshotRow.id)
            )
        )
        for start in range(0, len(changed), 500):
            session.execute(
                update(SnapshotRow)
                .where(SnapshotRow.id.in_(changed[start : start + 500]))
                .values(status=PRUNED)
                .execution_options(synchronize_session=False)
            )
    return changed


def _delete(config: Any, policy: str, doomed: list[str], result: TargetPrune, failed_runs: set[str]) -> None:
    """Delete `doomed` (oldest first) from one target, and what failed runs left there."""
    try:
        store = open_store(config)
    except BackupctlError as error:
        result.errors += [Failure(snapshot_id, str(error)) for snapshot_id in doomed]
        return
    try:
        deletion = store.delete_snapshots(policy, doomed, failed_runs)
    finally:
        store.close()
    result.removed += deletion.removed
    result.leftovers = deletion.leftovers
    result.retained_by_lock += [_locked(snapshot_id, error) for snapshot_id, error in deletion.locked]
    result.errors += [Failure(snapshot_id, error) for snapshot_id, error in deletion.errors]


def _locked(snapshot_id: str, error: RetainedByLock) -> Locked:
    until = getattr(error, "retain_until", None)  # structured, should the error ever carry it
    if isinstance(until, datetime):
        return Locked(snapshot_id, until.isoformat(), str(error))
    found = _UNTIL.search(str(error))  # S3Target.delete writes "until <ISO date>" in its message
    return Locked(snapshot_id, found.group(1) if found else None, str(error))


def _failed_runs(catalog: Catalog, policy: str) -> set[str]:
    """Snapshots of `policy` whose run failed: no target holds a manifest of theirs."""
    with catalog.session() as session:
        failed = select(SnapshotRow.id).where(SnapshotRow.policy == policy, SnapshotRow.status == "failed")
        return set(session.scalars(failed))
