"""Sweep what failed and killed runs left on the targets, reporting the bytes reclaimed.

A run that fails removes what it wrote itself where it can (backupctl.actions.backup). A run
killed with SIGKILL cannot: it leaves artifacts — even a signed manifest — under
`<policy>/<snapshot>/` on a target whose copy the catalog does not call complete, temporary
files (local, SFTP), incomplete multipart uploads (S3) and restic snapshots of the sources it
streamed (restic commits what it read when its stdin closes). Nothing would ever read them, and
a `catalog rebuild` could resurrect a snapshot the catalog knows failed. The catalog is the
record of what completed: `sweep_failed_runs` removes, per target, everything of a snapshot
whose run is `failed` or still `running` and whose copy on that target is not `complete`
(`SnapshotStore.discard_snapshots`).

Who runs it: `prune` (every unfinished run, each time) and `backup` after its own snapshot is
recorded (`pending_only`: only the runs not swept yet, so that a run with nothing to sweep costs
one catalog query and no target request). Both hold the policy lock, so a `running` row is a
dead run, never a live one. A target swept clean records the copy as `deleted` (note "swept"),
which is what `pending_only` skips. Snapshot ids the catalog does not know are left alone
(another host's, or a catalog being rebuilt). Objects an object lock retains are reported, not
forced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from backupctl.errors import BackupctlError

if TYPE_CHECKING:
    from backupctl.actions.events import Events
    from backupctl.catalog.store import Catalog

log = logging.getLogger("backupctl.sweep")

SWEPT_NOTE = "swept: what an unfinished run left is removed"


@dataclass
class TargetSweep:
    """What was swept on one target."""

    target: str
    snapshots: list[str] = field(default_factory=list)
    objects: int = 0
    bytes_reclaimed: int = 0
    retained_by_lock: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sweep_failed_runs(
    settings: Any,
    policy: Any,
    *,
    dry_run: bool = False,
    only_targets: list[str] | None = None,
    pending_only: bool = False,
    before: float | None = None,
    catalog: Catalog | None = None,
    events: Events | None = None,
) -> list[TargetSweep]:
    """Delete (or, in a dry run, count) what failed and killed runs left on the targets.

    `pending_only`: skip the copies an earlier sweep (or the failed run itself) recorded as
    `deleted`. `before` (Unix time, default now): partial writes begun later are left alone.
    Returns one TargetSweep per target that had something; never raises for one target's
    failure (it is recorded in `errors`)."""
    if catalog is None:
        from backupctl.actions.access import open_catalog

        catalog = open_catalog(settings)
    unfinished = catalog.unfinished_runs(policy.name)
    results: list[TargetSweep] = []
    if not unfinished:
        return results
    from backupctl.catalog.store import CopyState
    from backupctl.targets.store import open_store
    cutoff = time.time() if before is None else before
    for config in policy.targets:
        if only_targets is not None and config.name not in only_targets:
            continue
        skip = ("complete", "deleted") if pending_only else ("complete",)
        ids = [snapshot for snapshot, copies in unfinished.items() if copies.get(config.name) not in skip]
        if not ids:
            continue
        result = TargetSweep(config.name)
        try:
            store = open_store(config)
        except BackupctlError as error:
            result.errors.append(str(error))
            results.append(result)
            continue
        try:
            discarded = store.discard_snapshots(policy.name, ids, before=cutoff, dry_run=dry_run)
        finally:
            store.close()
        swept: list[str] = []
        for outcome in discarded:
            if outcome.objects or outcome.retained_by_lock:
                result.snapshots.append(outcome.snapshot_id)
            result.objects += outcome.objects
            result.bytes_reclaimed += outcome.bytes_reclaimed
            result.retained_by_lock += outcome.retained_by_lock
            if outcome.error is not None:
                result.errors.append(f"{outcome.snapshot_id}: {outcome.error}")
            elif outcome.clean and unfinished[outcome.snapshot_id].get(config.name) != "deleted":
                swept.append(outcome.snapshot_id)
        if swept and not dry_run:
            catalog.record_copies([CopyState(s, config.name, "deleted", 0, SWEPT_NOTE) for s in swept])
        if result.snapshots or result.errors:
            verb = "would reclaim" if dry_run else "reclaimed"
            message = (
                f"sweep {policy.name} on {config.name}: {verb} {result.bytes_reclaimed} bytes "
                f"({result.objects} objects) of {len(result.snapshots)} unfinished run(s)"
            )
            if events is not None:
                events.info(message)
            else:
                log.info("%s", message)
            for problem in result.errors:
                (events.warning if events is not None else log.warning)(
                    f"sweep {policy.name} on {config.name}: {problem}"
                )
            results.append(result)
    return results


def as_dicts(results: list[TargetSweep]) -> list[dict[str, Any]]:
    return [asdict(result) for result in results]
