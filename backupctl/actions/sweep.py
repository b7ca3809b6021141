"""Sweep what failed and killed runs left on blob targets (local, S3, SFTP), reporting the bytes.

A run killed with SIGKILL (or that failed on one target) can leave complete artifacts — even a
signed manifest — under `<policy>/<snapshot>/` on a target whose copy the catalog does not call
complete. Nothing would ever read or remove them, and a `catalog rebuild` could resurrect a
snapshot the catalog knows failed. The catalog is the record of what completed: `sweep_failed_runs`
deletes, per blob target, every object of a snapshot whose run is `failed` or still `running`
and whose copy on that target is not `complete`.

It must run under the policy lock (prune holds it), so a `running` row is a dead run, never a
live one. Snapshot ids the catalog does not know are left alone (another host's, or a catalog
being rebuilt). Objects an object lock retains are reported, not forced. restic leftovers are
prune's (`forget` of failed runs); temporary upload names are each target's own business.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupctl.errors import RetainedByLock, TargetError
from backupctl.targets.registry import traits_of

log = logging.getLogger("backupctl.sweep")

_UNFINISHED = ("failed", "running")


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
    settings: Any, policy: Any, *, dry_run: bool = False, only_targets: list[str] | None = None
) -> list[TargetSweep]:
    """Delete (or, in a dry run, count) the objects failed and killed runs left on blob targets.

    Returns one TargetSweep per blob target that had something; never raises for one target's
    failure (it is recorded in `errors`)."""
    from backupctl.actions.access import open_catalog
    from backupctl.targets.base import build_target, is_blob_target

    catalog = open_catalog(settings)
    unfinished = {
        view.id: view
        for view in catalog.snapshots(policy.name, include_incomplete=True)
        if view.status in _UNFINISHED
    }
    results: list[TargetSweep] = []
    if not unfinished:
        return results
    for config in policy.targets:
        if not is_blob_target(config.type) or (only_targets is not None and config.name not in only_targets):
            continue
        result = TargetSweep(config.name)
        try:
            target = build_target(config)
        except TargetError as error:
            result.errors.append(str(error))
            results.append(result)
            continue
        try:
            for snapshot_id, view in sorted(unfinished.items()):
                if view.targets.get(config.name) == "complete":
                    continue
                objects = target.list_keys(f"{policy.name}/{snapshot_id}/")
                partial = _local_leftovers(config, policy.name, snapshot_id)
                if not objects and not partial:
                    continue
                result.snapshots.append(snapshot_id)
                for info in objects:
                    if not dry_run:
                        try:
                            target.delete(info.key)
                        except RetainedByLock:
                            result.retained_by_lock.append(info.key)
                            continue
                    result.objects += 1
                    result.bytes_reclaimed += info.size
                for path in partial:  # a local upload cut short: its temporary file
                    size = path.stat().st_size
                    if not dry_run:
                        path.unlink()
                    result.objects += 1
                    result.bytes_reclaimed += size
                if partial and not dry_run:
                    with contextlib.suppress(OSError):  # empty now, unless something else is there
                        partial[0].parent.rmdir()
        except TargetError as error:
            result.errors.append(str(error))
        finally:
            target.close()
        if result.snapshots or result.errors:
            verb = "would reclaim" if dry_run else "reclaimed"
            log.info("sweep %s on %s: %s %d bytes of %d unfinished run(s)", policy.name, config.name, verb,
                     result.bytes_reclaimed, len(result.snapshots))  # fmt: skip
            results.append(result)
    return results


def _local_leftovers(config: Any, policy: str, snapshot_id: str) -> list[Path]:
    """Temporary files a killed run left in a local target's snapshot directory (not objects:
    `list_keys` never shows them)."""
    if not traits_of(config).local_directory:
        return []
    directory = Path(config.path) / policy / snapshot_id
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_file() and _TEMPORARY.match(path.name))


_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]+$")  # LocalTarget's temporary names


def as_dicts(results: list[TargetSweep]) -> list[dict[str, Any]]:
    return [asdict(result) for result in results]
