"""`backupctl backup POLICY`: dump every source, encrypted, to every target, then record it.

Plan of one run:
1. start what is slow to start, side by side (actions/ahead.py): the restic processes of the
   first stream source and of the manifests (these at the lowest CPU priority); check the other
   targets' posture (a target that refuses is failed for this run); start the first source's
   dump; meanwhile open the catalog (runs left 'running' by a dead process of this host become
   'failed') and record this run as running;
2. per source: stream dump → zstd → age → the source's first healthy target (the *primary*),
   then re-hash what landed and replicate it to the source's other targets (re-hashed on arrival);
   restic targets get the plain stream tee'd from the same dump; a source with no local, S3 or
   SFTP target (or whose blob targets all failed) goes to restic only, hashed on the way;
3. per target: write signature + manifest (only for the artifacts that target holds); restic
   repositories get it as one more snapshot, from the process started at step 1;
4. the catalog row becomes complete (all targets), partial (exit 3) or failed (exit 1).
A killed run leaves temp names (ignored by every listing) and a 'running' row: never a snapshot.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from backupctl import __version__
from backupctl.actions.ahead import StartedAhead
from backupctl.actions.events import Events, LogEvents
from backupctl.actions.restic_side import (
    STREAM_SOURCES,
    ResticSink,
    TeeReader,
    close_sinks,
    manifest_envelope,
    open_manifest_sinks,
    stdin_filename,
)
from backupctl.actions.stored import confirm_stored, copy_artifact, key_of, write_manifest
from backupctl.core.crypto import SigningKey, load_signing_key, parse_recipients
from backupctl.core.digests import PLAIN_ALGORITHM
from backupctl.core.manifest import (
    ArtifactRecord,
    Manifest,
    artifact_file_name,
    new_snapshot_id,
    utc_now_text,
)
from backupctl.core.pipeline import CHUNK, HashingReader, encrypt_stream
from backupctl.core.secrets import mask
from backupctl.errors import BackupctlError, IntegrityError, JobFailed, PartialFailure, TargetError
from backupctl.policy.loader import LoadedPolicy
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.sources.base import build_source, dump_extension
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.restic import tags_for

if TYPE_CHECKING:
    from backupctl.catalog.store import Catalog
    from backupctl.sources.base import Source


@dataclass
class TargetOutcome:
    name: str
    status: str = "pending"  # complete | failed
    error: str | None = None
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    stored_bytes: int = 0


@dataclass
class BackupResult:
    snapshot_id: str
    policy: str
    status: str
    seconds: float
    artifacts: list[ArtifactRecord]
    targets: dict[str, TargetOutcome]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "policy": self.policy,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "plain_bytes": sum(a.plain_bytes for a in self.artifacts),
            "stored_bytes": sum(a.stored_bytes for a in self.artifacts),
            "sources": {
                a.source: {"plain_bytes": a.plain_bytes, "stored_bytes": a.stored_bytes, "facts": a.facts}
                for a in self.artifacts
            },
            "targets": {name: {"status": t.status, "error": t.error} for name, t in self.targets.items()},
            "error": self.error,
        }


def run_backup(settings: Settings, loaded: LoadedPolicy, events: Events | None = None) -> BackupResult:
    """Run one backup. Raises JobFailed (exit 1) or PartialFailure (exit 3) after recording."""
    events = events or LogEvents()
    policy = loaded.policy
    recipients = parse_recipients(policy.encryption.recipients)  # a bad key: exit 2, nothing started
    signing = load_signing_key(settings.keys_dir)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    snapshot_id = new_snapshot_id(started_at)
    started_text = utc_now_text()

    catalog: Catalog | None = None  # set once the snapshot is recorded as running
    targets: dict[str, BlobTarget] = {}
    repositories: dict[str, Any] = {}  # restic targets
    outcomes = {target.name: TargetOutcome(target.name) for target in policy.targets}
    artifacts: list[ArtifactRecord] = []
    manifest_sinks: dict[str, ResticSink] = {}  # restic: waiting for the manifest's bytes
    ahead = StartedAhead()  # restic processes and the first dump: see actions/ahead.py

    try:
        # Slow start-ups side by side (actions/ahead.py): restic first, then the first dump and,
        # while both get ready, the catalog. The other targets are checked before the dump
        # starts: their checks may wait on the network, and a started dump must not wait long
        # unread (a MySQL server drops a client that does not read for net_write_timeout, 60 s).
        for config in policy.targets:
            if config.type == "restic":
                try:
                    repositories[config.name] = _restic_preflight(config, policy.name)
                except TargetError as error:
                    _fail(outcomes[config.name], error, events)
        first_stream = next((c for c in policy.sources if c.type in STREAM_SOURCES), None)
        if first_stream is not None:
            ahead.sinks.start(
                first_stream.name,
                _restic_for(policy, first_stream, repositories, outcomes),
                stdin_filename(first_stream.name, dump_extension(first_stream)),
                tags_for(policy.name, snapshot_id, first_stream.name),
            )
        manifest_sinks = {s.name: s for s in open_manifest_sinks(repositories, policy.name, snapshot_id)}
        for config in policy.targets:
            if config.type == "restic":
                continue
            try:
                target = build_target(config)
                targets[config.name] = target
                _preflight(target)
            except TargetError as error:
                _fail(outcomes[config.name], TargetError(str(error).replace("<policy>", policy.name)), events)
        sources = {config.name: build_source(config) for config in policy.sources}
        first = policy.sources[0]
        ahead.dump.start(first.name, sources[first.name])
        from backupctl.catalog.store import Catalog  # SQLAlchemy: ~0.2 s of imports, now overlapped

        opened = Catalog.open(settings.catalog_url)
        for stale in opened.mark_interrupted(policy.name):
            events.warning(f"snapshot {stale} of an earlier run was interrupted; it is marked failed")
        opened.begin_snapshot(snapshot_id, policy.name, loaded.sha256, started_at)
        catalog = opened
        events.info(f"backup {policy.name}: snapshot {snapshot_id}")
        for source_config in policy.sources:
            record = _backup_source(
                policy, snapshot_id, source_config, sources[source_config.name], targets, repositories,
                outcomes, recipients, events, ahead,
            )  # fmt: skip
            artifacts.append(record)
            # What the source could not take faithfully (outside links, devices): said aloud here,
            # recorded in the manifest's facts.
            for note in [*record.facts.get("warnings", []), *record.facts.get("skipped", [])]:
                events.warning(f"source {source_config.name}: {note}")
        manifest = Manifest(
            snapshot_id=snapshot_id,
            policy=policy.name,
            policy_sha256=loaded.sha256,
            host=socket.gethostname(),
            backupctl_version=__version__,
            started_at=started_text,
            finished_at=utc_now_text(),
            recipients=[str(r) for r in recipients],
            signing_public_key=signing.public_b64,
            artifacts=artifacts,
        )
        full_sha = ""
        for name, outcome in outcomes.items():
            if outcome.status == "failed":
                continue
            per_target = Manifest(**{**manifest.__dict__, "artifacts": outcome.artifacts})
            if name in repositories:
                try:
                    digest = _write_restic_manifest(manifest_sinks.pop(name), per_target, signing)
                except TargetError as error:
                    _fail(outcome, error, events)
                    continue
                outcome.status = "complete"
                if len(outcome.artifacts) == len(artifacts) and not full_sha:
                    full_sha = digest
                continue
            try:
                digest = write_manifest(targets[name], per_target, signing)
            except (TargetError, OSError) as error:
                _fail(outcome, error, events)
                continue
            outcome.status = "complete"
            if len(outcome.artifacts) == len(artifacts):
                full_sha = digest
            events.info(f"target {name}: snapshot {snapshot_id} complete")
    except BaseException as error:  # including KeyboardInterrupt / SIGTERM: never leave 'running'
        if catalog is not None:
            message = _describe(error)
            catalog.fail_snapshot(snapshot_id, message)
            for name, outcome in outcomes.items():
                if outcome.artifacts or outcome.status == "failed":
                    catalog.record_copy(snapshot_id, name, "failed", error=outcome.error or message)
        raise
    finally:
        # Any manifest not written (failure, interruption, failed target) and any process
        # started ahead but not used: restic commits nothing.
        ahead.abort()
        close_sinks(list(manifest_sinks.values()), TargetError("no manifest for this repository"))
        for target in targets.values():
            try:
                target.close()
            except Exception:  # closing must never hide the real outcome
                pass

    assert catalog is not None
    from backupctl.catalog.store import CopyState  # imported (with SQLAlchemy) at step 1

    complete = [o for o in outcomes.values() if o.status == "complete"]
    failed = [o for o in outcomes.values() if o.status == "failed"]
    copies = [
        CopyState(
            snapshot_id,
            outcome.name,
            outcome.status,
            outcome.stored_bytes or sum(a.stored_bytes for a in outcome.artifacts),
            outcome.error,
        )
        for outcome in outcomes.values()
    ]
    landed = {a.source for o in complete for a in o.artifacts}
    missing = [s.name for s in policy.sources if s.name not in landed]
    seconds = time.monotonic() - started
    if missing or not complete:
        error_text = "; ".join(f"{o.name}: {o.error}" for o in failed) or "no target completed"
        catalog.record_copies(copies)
        catalog.fail_snapshot(snapshot_id, error_text)
        raise JobFailed(
            f"backup {policy.name} failed: snapshot {snapshot_id} is on no complete target ({error_text})"
        )
    status = "partial" if failed else "complete"
    catalog.finish_snapshot(
        manifest, full_sha, status, error="; ".join(f"{o.name}: {o.error}" for o in failed) or None,
        copies=copies,
    )  # fmt: skip
    result = BackupResult(snapshot_id, policy.name, status, seconds, artifacts, outcomes)
    _fill_gaps(settings, loaded, [o.name for o in complete if o.name in targets], events)
    if policy.prune_after_backup:
        from backupctl.actions.prune import prune_after_backup

        prune_after_backup(settings, policy, events)
    if failed:
        raise PartialFailure(
            f"snapshot {snapshot_id} is complete on {', '.join(o.name for o in complete)} but failed on "
            + "; ".join(f"{o.name} ({o.error})" for o in failed),
            result,
        )
    return result


def _backup_source(
    policy: Policy,
    snapshot_id: str,
    config: Any,
    source: Source,
    targets: dict[str, BlobTarget],
    repositories: dict[str, Any],
    outcomes: dict[str, TargetOutcome],
    recipients: list[Any],
    events: Events,
    ahead: StartedAhead,
) -> ArtifactRecord:
    """Dump one source to its primary target, re-hash, replicate. Raises JobFailed if it lands nowhere."""
    estimate = source.estimate_size()  # plain bytes, as the progress counts them; once per source
    usable = [t.name for t in policy.targets_for(config) if outcomes[t.name].status != "failed"]
    wanted = [name for name in usable if name in targets]
    resticked = _restic_for(policy, config, repositories, outcomes)
    tee = resticked if config.type in STREAM_SOURCES else {}
    record: ArtifactRecord | None = None
    primary: str | None = None
    sinks: list[ResticSink] = []
    for candidate in wanted:
        try:
            record, sinks = _dump_to(
                policy, snapshot_id, config, source, estimate, targets[candidate], recipients, events, tee,
                ahead,
            )  # fmt: skip
        except TargetError as error:  # the source is fine: try the next target
            _fail(outcomes[candidate], error, events)
            continue
        primary = candidate
        break
    if record is None and resticked:
        if wanted:
            events.warning(f"source {config.name}: no local, S3 or SFTP target could store it; restic only")
        record, sinks = _dump_to_restic_only(
            policy, snapshot_id, config, source, estimate, events, tee, ahead
        )
    if record is None:
        raise JobFailed(f"source {config.name}: no target could store it")
    if primary is not None:
        outcomes[primary].artifacts.append(record)
    key = key_of(policy.name, snapshot_id, record.file)
    for name in wanted:
        if primary is None or name == primary or outcomes[name].status == "failed":
            continue
        progress = events.progress(f"{config.name} → {name} (copy)", record.stored_bytes)
        try:
            copy_artifact(
                targets[primary], targets[name], key, record.stored_sha256, record.stored_bytes,
                progress=progress.advance,
            )  # fmt: skip
            outcomes[name].artifacts.append(record)
            events.info(f"source {config.name}: replicated to {name}")
        except (TargetError, IntegrityError, OSError) as error:
            _fail(outcomes[name], error, events)
        finally:
            progress.close()
    for sink in sinks:
        if sink.error is not None:
            _fail(outcomes[sink.name], TargetError(f"restic: {sink.error}"), events)
        else:
            outcomes[sink.name].artifacts.append(record)
            outcomes[sink.name].stored_bytes += sink.result.data_added
            events.info(
                f"source {config.name}: restic {sink.name} snapshot {sink.result.snapshot_id}, "
                f"{sink.result.data_added} new bytes"
            )
    if config.type not in STREAM_SOURCES:
        for name in resticked:
            try:
                result = repositories[name].backup_path(
                    config.path, list(config.exclude), tags_for(policy.name, snapshot_id, config.name)
                )
            except (TargetError, OSError) as error:
                _fail(outcomes[name], error, events)
                continue
            outcomes[name].artifacts.append(record)
            outcomes[name].stored_bytes += result.data_added
            events.info(
                f"source {config.name}: restic {name} snapshot {result.snapshot_id}, "
                f"{result.files_new} new and {result.files_changed} changed files"
            )
    return record


def _dump_to(
    policy: Policy,
    snapshot_id: str,
    config: Any,
    source: Any,
    estimate: int | None,
    target: BlobTarget,
    recipients: list[Any],
    events: Events,
    tee: dict[str, Any],
    ahead: StartedAhead,
) -> tuple[ArtifactRecord, list[ResticSink]]:
    """Stream one dump into `target` (and, tee'd, into restic repositories). Raises TargetError
    when the target failed (the caller tries the next), SourceError when the dump failed."""
    began = time.monotonic()
    progress = events.progress(f"{config.name} → {target.name}", estimate)
    sinks: list[ResticSink] = []
    try:
        with ahead.dump.take(config.name, source) as dump:
            file = artifact_file_name(config.name, dump.extension)
            key = key_of(policy.name, snapshot_id, file)
            tags = tags_for(policy.name, snapshot_id, config.name)
            sinks = ahead.sinks.take(config.name, tee, stdin_filename(config.name, dump.extension), tags)
            try:
                with target.writer(key) as sink:
                    stats = encrypt_stream(
                        cast(BinaryIO, TeeReader(dump.stream, sinks)) if sinks else dump.stream,
                        sink,
                        recipients,
                        level=policy.compression.level,
                        threads=policy.compression.threads,
                        progress=progress.advance,
                    )
                    facts = dump.finish()  # raises when the dump tool failed: the writer then discards
                    close_sinks(sinks, None)  # restic commits only a complete, successful dump
            except BaseException as error:
                close_sinks(sinks, error)
                raise
    except OSError as error:
        raise TargetError(f"target {target.name}: {error.strerror or error}") from None
    finally:
        progress.close()
    confirm_stored(target, key, stats.stored_sha256, stats.stored_bytes)
    seconds = time.monotonic() - began
    ratio = stats.plain_bytes / stats.stored_bytes if stats.stored_bytes else 0.0
    events.info(
        f"source {config.name}: {stats.plain_bytes} bytes → {stats.stored_bytes} stored "
        f"({ratio:.1f}x) on {target.name} in {seconds:.1f}s"
    )
    record = ArtifactRecord(
        source=config.name,
        source_type=config.type,
        file=file,
        format=dump.format,
        plain_bytes=stats.plain_bytes,
        plain_digest=stats.plain_digest,
        stored_bytes=stats.stored_bytes,
        stored_sha256=stats.stored_sha256,
        facts=facts,
    )
    return record, sinks


def _dump_to_restic_only(
    policy: Policy,
    snapshot_id: str,
    config: Any,
    source: Any,
    estimate: int | None,
    events: Events,
    tee: dict[str, Any],
    ahead: StartedAhead,
) -> tuple[ArtifactRecord, list[ResticSink]]:
    """A source without a blob copy: the dump goes to restic (stream sources) and is hashed on
    the way, so the signed manifest still says what restic's copy must hash to. File sources are
    read as the usual tar stream for their facts (tree hash); `restic backup PATH` follows."""
    began = time.monotonic()
    label = f"{config.name} → {', '.join(tee) or 'restic'}"
    progress = events.progress(label, estimate)
    sinks: list[ResticSink] = []
    try:
        with ahead.dump.take(config.name, source) as dump:
            file = artifact_file_name(config.name, dump.extension)
            tags = tags_for(policy.name, snapshot_id, config.name)
            sinks = ahead.sinks.take(config.name, tee, stdin_filename(config.name, dump.extension), tags)
            try:
                feed = cast(BinaryIO, TeeReader(dump.stream, sinks)) if sinks else dump.stream
                reader = HashingReader(feed, progress.advance, algorithm=PLAIN_ALGORITHM)
                while reader.read(CHUNK):
                    pass
                facts = dump.finish()
                close_sinks(sinks, None)
            except BaseException as error:
                close_sinks(sinks, error)
                raise
    finally:
        progress.close()
    seconds = time.monotonic() - began
    events.info(f"source {config.name}: {reader.count} bytes streamed to {label} in {seconds:.1f}s")
    record = ArtifactRecord(
        source=config.name,
        source_type=config.type,
        file=file,
        format=dump.format,
        plain_bytes=reader.count,
        plain_digest=reader.digest(),
        stored_bytes=0,  # no age-encrypted artifact: restic holds (and encrypts) the only copies
        stored_sha256="",
        facts=facts,
        compression="restic",
        encryption="restic",
    )
    return record, sinks


def _write_restic_manifest(sink: ResticSink, manifest: Manifest, signing: SigningKey) -> str:
    """Give the waiting restic process the signed manifest and commit it; its sha256."""
    data = manifest.to_bytes()
    if sink.error is None:
        try:
            sink.writer.write(manifest_envelope(data, signing.sign(data)))
        except (TargetError, OSError) as error:
            sink.error = str(error)
    close_sinks([sink], None)
    if sink.error is not None:
        raise TargetError(f"restic {sink.name}: the manifest could not be stored: {sink.error}")
    return hashlib.sha256(data).hexdigest()


def _fill_gaps(settings: Settings, loaded: LoadedPolicy, reachable: list[str], events: Events) -> None:
    """Blob targets that work again receive the older snapshots they missed (see `replicate`;
    restic copies are made by backups only)."""
    if not reachable:
        return
    from backupctl.actions.replicate import replicate

    try:
        report = replicate(settings, loaded.policy, only_targets=reachable, events=events)
    except BackupctlError as error:  # filling old gaps must never fail today's backup
        events.warning(f"could not copy older snapshots to recovered targets: {error}")
        return
    if report.copied:
        events.info(f"copied {len(report.copied)} missed snapshot(s) to recovered targets")


def _restic_for(
    policy: Policy, config: Any, repositories: dict[str, Any], outcomes: dict[str, TargetOutcome]
) -> dict[str, Any]:
    """The restic repositories a source goes to in this run: its restic targets not failed."""
    return {
        t.name: repositories[t.name]
        for t in policy.targets_for(config)
        if t.name in repositories and outcomes[t.name].status != "failed"
    }


def _restic_preflight(config: Any, policy: str) -> Any:
    from backupctl.targets.restic import ResticRepository

    repository = ResticRepository(config)
    repository.version()  # ConfigError when restic is missing or too old
    # No `cat config` probe here (one more key derivation, ~0.8 s): a missing repository makes
    # the backup itself fail for this target with restic's message and the `target setup` hint.
    return repository


def _preflight(target: BlobTarget) -> None:
    check = getattr(target, "check_posture", None)
    if callable(check):
        check()
    sweep = getattr(target, "sweep_temp_files", None)
    if callable(sweep):
        sweep("")


def _fail(outcome: TargetOutcome, error: BaseException, events: Events) -> None:
    outcome.status = "failed"
    outcome.error = _describe(error)
    events.warning(f"target {outcome.name}: {outcome.error}")


def _describe(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, BackupctlError):
        return mask(str(error))
    if isinstance(error, OSError):
        return mask(f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""))
    return mask(f"{type(error).__name__}: {error}")
