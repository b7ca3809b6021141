"""`backupctl catalog rebuild --target NAME`: recreate the catalog from a target's manifests.

The disaster case: the backup host (and its catalog) is gone. Policies (kept in git) say where
the targets are; each snapshot's signed manifest says what it holds. Manifests whose signature
does not verify with a trusted key are skipped and reported, never imported. Blob targets list
`POLICY/SNAPSHOT/manifest.json`; restic repositories hold each manifest as a snapshot tagged
`manifest` (see docs/formats.md). A snapshot the catalog records as a failed (or unfinished)
run is not resurrected, even when a target holds its signed manifest: the catalog is the record
of what completed (`failed_runs`; `prune` removes it, docs/operations.md "Reconcile").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backupctl.actions.access import open_catalog, trusted_keys
from backupctl.actions.reconcile import unfinished_runs
from backupctl.errors import IntegrityError, TargetError
from backupctl.policy.loader import LoadedPolicy
from backupctl.settings import Settings
from backupctl.targets.store import open_store


@dataclass
class RebuildReport:
    target: str
    policies: list[str] = field(default_factory=list)
    found: int = 0
    imported: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)  # held on the target, failed in the catalog

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def rebuild_catalog(
    settings: Settings, policies: list[LoadedPolicy], target_name: str, extra_trusted: list[str] | None = None
) -> RebuildReport:
    report = RebuildReport(target_name)
    catalog = open_catalog(settings)
    for loaded in policies:
        policy = loaded.policy
        configs = [t for t in policy.targets if t.name == target_name]
        if not configs:
            continue
        report.policies.append(policy.name)
        trusted = trusted_keys(settings, policy, extra_trusted)
        unfinished = unfinished_runs(catalog, policy.name)
        store = open_store(configs[0])
        try:
            for snapshot_id in store.snapshot_ids(policy.name):
                report.found += 1
                if snapshot_id in unfinished:
                    state = unfinished[snapshot_id]
                    report.failed_runs.append(f"{policy.name}/{snapshot_id}: recorded {state}")
                    continue
                try:
                    signed = store.read_manifest(policy.name, snapshot_id, trusted)
                except (IntegrityError, TargetError) as error:
                    report.skipped.append(f"{policy.name}/{snapshot_id}: {error}")
                    continue
                assert signed is not None  # listed ids are those with a manifest
                if catalog.import_manifest(signed.manifest, signed.sha256, target_name):
                    report.imported += 1
                else:
                    report.unchanged += 1
        finally:
            store.close()
    return report
