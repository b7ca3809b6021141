"""`backupctl catalog rebuild --target NAME`: recreate the catalog from a target's manifests.

The disaster case: the backup host (and its catalog) is gone. Policies (kept in git) say where
the targets are; each snapshot's signed manifest says what it holds. Manifests whose signature
does not verify with a trusted key are skipped and reported, never imported. Blob targets list
`POLICY/SNAPSHOT/manifest.json`; restic repositories hold each manifest as a snapshot tagged
`manifest` (see docs/formats.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backupctl.actions.access import open_catalog, trusted_keys
from backupctl.actions.stored import list_snapshot_ids, read_manifest
from backupctl.errors import IntegrityError, TargetError
from backupctl.policy.loader import LoadedPolicy
from backupctl.settings import Settings
from backupctl.targets.base import build_target


@dataclass
class RebuildReport:
    target: str
    policies: list[str] = field(default_factory=list)
    found: int = 0
    imported: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)

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
        if configs[0].type == "restic":
            _rebuild_from_restic(catalog, configs[0], policy.name, trusted, report)
            continue
        target = build_target(configs[0])
        try:
            for snapshot_id in list_snapshot_ids(target, policy.name):
                report.found += 1
                try:
                    signed = read_manifest(target, policy.name, snapshot_id, trusted)
                except (IntegrityError, TargetError) as error:
                    report.skipped.append(f"{policy.name}/{snapshot_id}: {error}")
                    continue
                if catalog.import_manifest(signed.manifest, signed.sha256, target_name):
                    report.imported += 1
                else:
                    report.unchanged += 1
        finally:
            target.close()
    return report


def _rebuild_from_restic(
    catalog: Any, config: Any, policy: str, trusted: list[str], report: RebuildReport
) -> None:
    """A restic repository: its manifest snapshots (tagged `manifest`) name the snapshots."""
    from backupctl.actions.restic_side import MANIFEST_TAG, read_manifest_snapshot
    from backupctl.targets.restic import TAG, ResticRepository

    repository = ResticRepository(config)
    # One listing names every manifest snapshot (oldest first: a later copy of one wins), so
    # each manifest costs one `restic dump`, not a lookup by tags as well.
    manifests = {
        tag.removeprefix("snapshot="): info.id
        for info in repository.snapshots([TAG, f"policy={policy}", MANIFEST_TAG])
        for tag in info.tags
        if tag.startswith("snapshot=")
    }
    for snapshot_id, restic_id in sorted(manifests.items()):
        report.found += 1
        try:
            signed = read_manifest_snapshot(repository, restic_id, policy, snapshot_id, trusted)
        except (IntegrityError, TargetError) as error:
            report.skipped.append(f"{policy}/{snapshot_id}: {error}")
            continue
        if catalog.import_manifest(signed.manifest, signed.sha256, config.name):
            report.imported += 1
        else:
            report.unchanged += 1
