"""`backupctl restore POLICY SNAPSHOT --source NAME --to-...`.

Order of work, so that a bad artifact never touches the destination:
1. resolve the snapshot, pick a target holding it, authenticate its manifest (signature);
2. pre-check the artifact: size and sha256 of the stored bytes (a read pass, nothing written);
3. the roles/accounts the manifest recorded that the destination lacks are created (the
   source's `recreate_roles`, before and after the data; `--roles skip` turns it off), with
   their recorded passwords when the snapshot holds its secrets artifact (`_role_secrets`);
   after the data, PostgreSQL's database-level grants and settings are applied;
4. stream: target → age decrypt → zstd → the source's restore tool (pg_restore, tar, ...);
5. compare the restored facts (row counts, tree hash) with the manifest's.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from backupctl.actions.access import choose_target, load_identities, open_catalog, trusted_keys
from backupctl.actions.events import Events, LogEvents
from backupctl.core.digests import algorithm_of
from backupctl.core.manifest import Manifest, secrets_source
from backupctl.core.pipeline import HashingReader, decrypted_reader
from backupctl.errors import IntegrityError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.sources.base import RestoreRequest, RolesOutcome, build_source
from backupctl.targets.base import ReadTiming
from backupctl.targets.registry import traits_of
from backupctl.targets.snapshot_files import key_of, read_manifest, rehash


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
    if from_target and traits_of(policy.target(from_target)).deduplicating:
        return _restore_from_plain_store(
            settings, policy, snapshot, source_name, request, from_target, started, events
        )
    identities = load_identities(policy, identity_file)
    target = choose_target(policy, snapshot, from_target)
    try:
        signed = read_manifest(target, policy.name, snapshot.id, trusted_keys(settings, policy))
        artifact = signed.manifest.artifact(source_name)
        key = key_of(policy.name, snapshot.id, artifact.file)
        timing = ReadTiming()
        if precheck:
            digest, size = rehash(target, key, timing)
            if size != artifact.stored_bytes or digest != artifact.stored_sha256:
                raise IntegrityError(
                    f"refusing to restore: {artifact.file} on target {target.name} "
                    "does not match its manifest "
                    f"({size} bytes, manifest says {artifact.stored_bytes}; sha256 "
                    f"{'matches' if digest == artifact.stored_sha256 else 'differs'}). "
                    "Run `backupctl verify` for details, or restore from another target with --from"
                )
        events.info(f"restoring {source_name} of snapshot {snapshot.id} from {target.name}")
        source = build_source(source_config)
        secrets = _role_secrets(policy, signed.manifest, source_name, target.name, identities, request)
        roles = source.recreate_roles(artifact.facts, request, "before", secrets)
        progress = events.progress(f"restore {source_name}", artifact.stored_bytes)
        try:
            with (
                target.reader(key) as stored,
                decrypted_reader(
                    stored, identities, plain_algorithm=algorithm_of(artifact.plain_digest),
                    progress=progress.advance,
                ) as (plain, finished),
            ):
                outcome = source.restore(plain, replace(request, size_hint=artifact.plain_bytes))
                stats = finished()
        finally:
            progress.close()
    finally:
        target.close()
    if stats.plain_digest != artifact.plain_digest:
        raise IntegrityError(
            f"{artifact.file}: the decrypted stream differs from the manifest's plain digest"
        )
    roles = roles.merge(source.recreate_roles(artifact.facts, request, "after", secrets))
    mismatches = source.compare(artifact.facts, outcome.facts)
    return RestoreResult(
        policy=policy.name,
        snapshot_id=snapshot.id,
        source=source_name,
        target=target.name,
        destination=outcome.destination,
        seconds=time.monotonic() - started,
        plain_bytes=stats.plain_bytes,
        facts=outcome.facts,
        mismatches=mismatches,
        notes=outcome.notes,
        warmup_seconds=timing.warmup_seconds,
        jobs=outcome.jobs,
        roles=roles,
    )


def _role_secrets(
    policy: Policy,
    manifest: Manifest,
    source_name: str,
    target_name: str,
    identities: list[Any],
    request: RestoreRequest,
) -> dict[str, str] | None:
    """The role/account passwords of the snapshot's secrets artifact of `source_name`, read
    through the target's SnapshotStore and checked against the manifest's plain digest; None
    when the snapshot holds none (captured only with `roles: {passwords: true}`) or roles are
    not recreated (`--roles skip`). Raises IntegrityError, TargetError, SourceError."""
    name = secrets_source(source_name)
    companion = next((a for a in manifest.artifacts if a.source == name), None)
    if companion is None or request.roles == "skip":
        return None
    from backupctl.sources.role_secrets import read_secrets
    from backupctl.targets.store import open_store

    store = open_store(policy.target(target_name))
    try:
        with store.open_plain(policy.name, manifest.snapshot_id, companion, identities) as stream:
            reader = HashingReader(stream, algorithm=algorithm_of(companion.plain_digest))
            data = b"".join(iter(lambda: reader.read(), b""))
    finally:
        store.close()
    if reader.digest() != companion.plain_digest:
        raise IntegrityError(f"{companion.file}: the decrypted secrets differ from the manifest's digest")
    return read_secrets(data)


def _default_target(policy: Policy, snapshot: Any, source: Any) -> str | None:
    """The first target (policy order) of this source holding a complete copy, a local, S3 or
    SFTP one before restic (deduplicating stores are the slowest to open); None when none does
    (choose_target says so)."""
    holding = [t for t in policy.targets_for(source) if snapshot.targets.get(t.name) == "complete"]
    ranked = sorted(holding, key=lambda target: traits_of(target).deduplicating)
    return ranked[0].name if ranked else None


def _restore_from_plain_store(
    settings: Settings,
    policy: Policy,
    snapshot: Any,
    source_name: str,
    request: RestoreRequest,
    target_name: str,
    started: float,
    events: Events,
) -> RestoreResult:
    """A deduplicating store (restic) holds the plain stream (database sources) or the tree
    (file sources); the signed manifest (in the store, or on a blob target for older snapshots)
    says what the result must be."""
    from backupctl.actions.access import manifest_for
    from backupctl.errors import ConfigError
    from backupctl.policy.schema import FilesSource
    from backupctl.sources.files import tree_facts
    from backupctl.targets.restic_snapshots import (
        STREAM_SOURCES,
        artifact_stdin_filename,
        restic_snapshot_for,
        restore_files_from_restic,
    )
    from backupctl.targets.store import open_store

    repository = typing.cast(Any, open_store(policy.target(target_name)))  # a ResticSnapshotStore
    signed, _origin = manifest_for(repository, policy, snapshot, trusted_keys(settings, policy))
    artifact = signed.manifest.artifact(source_name)
    restic_id = restic_snapshot_for(repository, policy.name, snapshot.id, source_name)
    source_config = policy.source(source_name)
    source = build_source(source_config)
    events.info(
        f"restoring {source_name} of snapshot {snapshot.id} from restic {target_name} ({restic_id[:8]})"
    )
    secrets = _role_secrets(policy, signed.manifest, source_name, target_name, [], request)
    roles = source.recreate_roles(artifact.facts, request, "before", secrets)
    if source_config.type in STREAM_SOURCES:
        with repository.dump(restic_id, artifact_stdin_filename(artifact)) as stream:
            reader = HashingReader(stream, algorithm=algorithm_of(artifact.plain_digest))
            outcome = source.restore(
                typing.cast(BinaryIO, reader), replace(request, size_hint=artifact.plain_bytes)
            )
        if reader.digest() != artifact.plain_digest:
            raise IntegrityError(f"restic's copy of {source_name} differs from the manifest's plain digest")
        plain_bytes, facts, destination = reader.count, outcome.facts, outcome.destination
    else:
        directory = request.to_dir
        if directory is None:
            raise ConfigError(f"source {source_name} is a file tree: give --to-dir")
        if directory.exists() and any(directory.iterdir()) and not request.force:
            raise ConfigError(f"{directory} is not empty; use --force to restore into it anyway")
        directory.mkdir(parents=True, exist_ok=True)
        restore_files_from_restic(
            repository, restic_id, typing.cast(FilesSource, source_config).path, directory
        )
        facts = tree_facts(directory)
        plain_bytes, destination = int(facts.get("total_bytes", 0)), str(directory)
    roles = roles.merge(source.recreate_roles(artifact.facts, request, "after", secrets))
    return RestoreResult(
        policy=policy.name,
        snapshot_id=snapshot.id,
        source=source_name,
        target=target_name,
        destination=destination,
        seconds=time.monotonic() - started,
        plain_bytes=plain_bytes,
        facts=facts,
        mismatches=source.compare(artifact.facts, facts),
        roles=roles,
    )
