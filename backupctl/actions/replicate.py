"""`backupctl replicate POLICY`: copy snapshots to the targets that missed them.

For each complete snapshot (newest first) and each blob target without a complete copy: take a
target that has one, authenticate its manifest, copy every artifact that belongs on the
destination (hashing in flight, re-hashing on arrival), then store the manifest — verbatim when
it lists exactly those artifacts, otherwise re-signed for the destination's subset. Only then is
the copy recorded complete. The backup command runs this for the targets it just reached.

The catalog is not trusted blindly: each blob target's manifests are listed first, and the
newest snapshot it should hold is surveyed (objects present, sizes as signed); a copy that is
gone (an emptied bucket, another bucket, a deleted object) is recorded `missing` and refilled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backupctl.actions.access import open_catalog, trusted_keys
from backupctl.actions.events import Events, LogEvents
from backupctl.catalog.store import Catalog, CopyState, SnapshotView
from backupctl.core.crypto import load_signing_key
from backupctl.core.manifest import Manifest, owner_source
from backupctl.errors import BackupctlError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.base import MANIFEST, SIGNATURE, BlobTarget, build_target
from backupctl.targets.blob_store import BlobSnapshotStore
from backupctl.targets.registry import traits_of
from backupctl.targets.snapshot_files import copy_artifact, key_of, read_manifest, write_manifest


@dataclass
class ReplicateReport:
    policy: str
    copied: list[str] = field(default_factory=list)  # "snapshot → target"
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def replicate(
    settings: Settings, policy: Policy, *, only_targets: list[str] | None = None, events: Events | None = None
) -> ReplicateReport:
    events = events or LogEvents()
    catalog = open_catalog(settings)
    report = ReplicateReport(policy.name)
    trusted = trusted_keys(settings, policy)
    wanted = [t for t in policy.targets if only_targets is None or t.name in only_targets]
    built: dict[str, BlobTarget] = {}

    def target(name: str) -> BlobTarget:
        if name not in built:
            built[name] = build_target(policy.target(name))
        return built[name]

    try:
        snapshots = catalog.snapshots(policy.name)
        _observe_targets(catalog, policy, snapshots, [c for c in wanted if not traits_of(c).deduplicating],
                         target, trusted, events)  # fmt: skip
        snapshots = catalog.snapshots(policy.name)  # with what was found missing
        for snapshot in snapshots:
            holders = [
                name
                for name, state in snapshot.targets.items()
                if state == "complete" and not traits_of(policy.target(name)).deduplicating
                if name in {t.name for t in policy.targets}
            ]
            for config in wanted:
                if snapshot.targets.get(config.name) == "complete":
                    continue
                if traits_of(config).deduplicating:  # holds plain streams: no stored bytes to copy
                    report.skipped.append(f"{snapshot.id} → {config.name}: restic copies are made by backups")
                    continue
                if not holders:
                    report.failed.append(f"{snapshot.id} → {config.name}: no complete copy to copy from")
                    continue
                try:
                    origin = target(holders[0])
                    signed = read_manifest(origin, policy.name, snapshot.id, trusted)
                    sources = {s.name for s in policy.sources if config in policy.targets_for(s)}
                    _copy_snapshot(
                        origin, target(config.name), signed.manifest, signed.raw, sources, settings, events
                    )
                except (BackupctlError, OSError) as error:
                    message = f"{snapshot.id} → {config.name}: {error}"
                    report.failed.append(message)
                    events.warning(f"replicate {message}")
                    catalog.record_copy(snapshot.id, config.name, "failed", error=str(error))
                    continue
                stored = sum(
                    a.stored_bytes for a in signed.manifest.artifacts if owner_source(a.source) in sources
                )
                catalog.record_copy(snapshot.id, config.name, "complete", stored)
                catalog.mark_complete_if_everywhere(snapshot.id, [t.name for t in policy.targets])
                report.copied.append(f"{snapshot.id} → {config.name}")
                events.info(f"replicated snapshot {snapshot.id} from {holders[0]} to {config.name}")
    finally:
        for item in built.values():
            item.close()
    return report


def _observe_targets(
    catalog: Catalog,
    policy: Policy,
    snapshots: list[SnapshotView],
    configs: list[Any],
    target: Callable[[str], BlobTarget],
    trusted: list[str],
    events: Events,
) -> None:
    """Read what each blob target really holds before trusting the catalog: one listing of its
    manifests (an emptied target or another bucket lists none), and a survey of the newest
    snapshot's objects (one deleted or truncated). Copies the catalog calls complete that are
    not there are recorded `missing`, so the loop below refills them."""
    for config in configs:
        claimed = [s for s in snapshots if s.targets.get(config.name) == "complete"]
        if not claimed:
            continue
        try:
            store = BlobSnapshotStore(config, target(config.name))
            listed = set(store.snapshot_ids(policy.name))
            gone = {s.id: f"no manifest on {config.name}" for s in claimed if s.id not in listed}
            newest = claimed[0].id
            if newest not in gone:
                problems = store.survey(policy.name, newest, trusted)
                if problems:
                    gone[newest] = "; ".join(problems)
        except (BackupctlError, OSError) as error:
            events.warning(f"replicate: cannot list {config.name}: {error}")
            continue
        for snapshot_id, why in gone.items():
            events.warning(f"replicate: snapshot {snapshot_id} is missing from {config.name}: {why}")
        missing = [CopyState(sid, config.name, "missing", error=why) for sid, why in gone.items()]
        catalog.record_copies(missing)


def _copy_snapshot(
    origin: BlobTarget,
    destination: BlobTarget,
    manifest: Manifest,
    raw: bytes,
    sources: set[str],
    settings: Settings,
    events: Events,
) -> None:
    artifacts = [a for a in manifest.artifacts if owner_source(a.source) in sources]  # with its secrets
    for artifact in artifacts:
        key = key_of(manifest.policy, manifest.snapshot_id, artifact.file)
        progress = events.progress(
            f"{artifact.source} {origin.name} → {destination.name}",
            artifact.stored_bytes,
        )
        try:
            copy_artifact(
                origin,
                destination,
                key,
                artifact.stored_sha256,
                artifact.stored_bytes,
                progress=progress.advance,
            )
        finally:
            progress.close()
    if len(artifacts) == len(manifest.artifacts):
        # Same content: copy the signed manifest verbatim (signature first, manifest last).
        signature_key = key_of(manifest.policy, manifest.snapshot_id, SIGNATURE)
        with origin.reader(signature_key) as handle:
            signature = handle.read()
        with destination.writer(signature_key) as sink:
            sink.write(signature)
        with destination.writer(key_of(manifest.policy, manifest.snapshot_id, MANIFEST)) as sink:
            sink.write(raw)
    else:
        subset = Manifest(**{**manifest.__dict__, "artifacts": artifacts})
        write_manifest(destination, subset, load_signing_key(settings.keys_dir))
