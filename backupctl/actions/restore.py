"""`backupctl restore POLICY SNAPSHOT --source NAME --to-...`.

Order of work, so that a bad artifact never touches the destination:
1. resolve the snapshot, pick a target holding it, authenticate its manifest (signature);
2. pre-check the artifact (the store's `fetch`): size and sha256 of the stored bytes (a read
   pass, nothing written); a deduplicating store finds the artifact's snapshot;
3. the roles/accounts the manifest recorded that the destination lacks are created (the
   source's `recreate_roles`, before and after the data; `--roles skip` turns it off), with
   their recorded passwords when the snapshot holds its secrets artifact (`_role_secrets`);
   after the data, PostgreSQL's database-level grants and settings are applied;
4. stream: the store's plain stream (age decrypt → zstd, or `restic dump`) → the source's
   restore tool (pg_restore, mysql, ...), its digest checked against the manifest's; a file
   tree is extracted from its tar stream or restored by a store that keeps the tree itself;
5. compare the restored facts (row counts, tree hash) with the manifest's.

One path for every kind of target: what differs is behind the SnapshotStore
(backupctl.targets.store: `fetch`, `open_plain`, `restore_tree`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from backupctl.actions.access import choose_store, load_identities, manifest_for, open_catalog, trusted_keys
from backupctl.actions.events import Events, LogEvents
from backupctl.core.manifest import Manifest, secrets_source
from backupctl.errors import IntegrityError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.sources.base import RestoreRequest, RolesOutcome, build_source
from backupctl.targets.registry import traits_of
from backupctl.targets.store import Fetched, SnapshotStore, TreeSource


@dataclass
class RestoreResult:
    policy: str
    snapshot_id: str
    source: str
    target: str
    destination: str
    seconds: float
    plain_bytes: int
    facts: dict[str, Any]
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warmup_seconds: float = 0.0  # cold storage (Glacier) retrieval before the first byte
    jobs: int = 1  # parallel jobs the restore used (pg_restore --jobs)
    roles: RolesOutcome = field(default_factory=RolesOutcome)  # roles/accounts created or found

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "roles": dict(self.roles.__dict__), "seconds": round(self.seconds, 3),
                "ok": not self.mismatches}  # fmt: skip


def run_restore(
    settings: Settings,
    policy: Policy,
    reference: str,
    source_name: str,
    request: RestoreRequest,
    *,
    from_target: str | None = None,
    identity_file: Path | None = None,
    precheck: bool = True,
    events: Events | None = None,
) -> RestoreResult:
    events = events or LogEvents()
    started = time.monotonic()
    source_config = policy.source(source_name)
    catalog = open_catalog(settings)
    snapshot = catalog.resolve(policy.name, reference)
    from_target = from_target or _default_target(policy, snapshot, source_config)
    identities: list[Any] = []
    if from_target is None or traits_of(policy.target(from_target)).needs_identity:
        identities = load_identities(policy, identity_file)  # restic decrypts with its own password
    store = choose_store(policy, snapshot, from_target)
    try:
        # The manifest in the store, or (restic copies made before manifests went to restic)
        # on a blob target holding the snapshot.
        signed, _origin = manifest_for(store, policy, snapshot, trusted_keys(settings, policy))
        artifact = signed.manifest.artifact(source_name)
        fetched: Fetched | None = None
        if precheck:
            fetched = store.fetch(policy.name, snapshot.id, artifact)
            if not fetched.ok:
                raise IntegrityError(
                    f"refusing to restore: {fetched.problem}. "
                    "Run `backupctl verify` for details, or restore from another target with --from"
                )
        events.info(f"restoring {source_name} of snapshot {snapshot.id} from {store.name}")
        source = build_source(source_config)
        secrets = _role_secrets(store, signed.manifest, source_name, identities, request)
        roles = source.recreate_roles(artifact.facts, request, "before", secrets)
        sized = replace(request, size_hint=artifact.plain_bytes)
        progress = events.progress(f"restore {source_name}", store.read_size(artifact))
        try:
            if isinstance(source, TreeSource):  # a file tree: extracted, or restored as a tree
                outcome, plain_bytes = store.restore_tree(
                    policy.name, snapshot.id, artifact, identities, source, sized, progress.advance
                )
            else:
                reading = store.open_plain(policy.name, snapshot.id, artifact, identities, progress.advance)
                with reading as (plain, finished):
                    outcome = source.restore(plain, sized)
                    stats = finished()
                if stats.plain_digest != artifact.plain_digest:
                    raise IntegrityError(
                        f"{store.plain_check(artifact).subject} differs from the manifest's plain digest"
                    )
                plain_bytes = stats.plain_bytes
        finally:
            progress.close()
    finally:
        store.close()
    roles = roles.merge(source.recreate_roles(artifact.facts, request, "after", secrets))
    mismatches = source.compare(artifact.facts, outcome.facts)
    return RestoreResult(
        policy=policy.name,
        snapshot_id=snapshot.id,
        source=source_name,
        target=store.name,
        destination=outcome.destination,
        seconds=time.monotonic() - started,
        plain_bytes=plain_bytes,
        facts=outcome.facts,
        mismatches=mismatches,
        notes=outcome.notes,
        warmup_seconds=fetched.warmup_seconds if fetched is not None else 0.0,
        jobs=outcome.jobs,
        roles=roles,
    )


def _role_secrets(
    store: SnapshotStore,
    manifest: Manifest,
    source_name: str,
    identities: list[Any],
    request: RestoreRequest,
) -> dict[str, str] | None:
    """The role/account passwords of the snapshot's secrets artifact of `source_name`, read
    from the store the restore reads and checked against the manifest's plain digest; None
    when the snapshot holds none (captured only with `roles: {passwords: true}`) or roles are
    not recreated (`--roles skip`). Raises IntegrityError, TargetError, SourceError."""
    name = secrets_source(source_name)
    companion = next((a for a in manifest.artifacts if a.source == name), None)
    if companion is None or request.roles == "skip":
        return None
    from backupctl.sources.role_secrets import read_secrets

    with store.open_plain(manifest.policy, manifest.snapshot_id, companion, identities) as (plain, finished):
        data = plain.read()
        stats = finished()
    if stats.plain_digest != companion.plain_digest:
        raise IntegrityError(f"{companion.file}: the decrypted secrets differ from the manifest's digest")
    return read_secrets(data)


def _default_target(policy: Policy, snapshot: Any, source: Any) -> str | None:
    """The first target (policy order) of this source holding a complete copy, a local, S3 or
    SFTP one before restic (deduplicating stores are the slowest to open); None when none does
    (choose_store says so)."""
    holding = [t for t in policy.targets_for(source) if snapshot.targets.get(t.name) == "complete"]
    ranked = sorted(holding, key=lambda target: traits_of(target).deduplicating)
    return ranked[0].name if ranked else None
