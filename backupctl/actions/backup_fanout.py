"""One backup run's state and the fan-out of each source's dump to the run's snapshot stores.

A source's dump is read once: its plain stream is tee'd to the deduplicating stores that take
it as it is (`PlainStore.open_stream_sink`: restic) and compressed + age-encrypted into the
first healthy blob store (the *primary*); what landed there is re-hashed and copied to the
source's other blob stores (re-hashed on arrival). A source with no blob store (or whose blob
stores all failed) goes to the deduplicating stores only, hashed on the way. File sources go to
deduplicating stores as a tree (`PlainStore.store_tree`: `restic backup PATH`, incremental),
after their tar stream. Which stores are which is their kind's trait (`deduplicating`), never
its name. A database source's role passwords, when captured (`roles: {passwords: true}`),
follow its dump to the same stores as an artifact of their own (`<source>.secrets`), through
the stores' own `store_stream`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from backupctl.actions.ahead import StartedAhead, StreamOf, gated
from backupctl.actions.events import Events
from backupctl.core.digests import PLAIN_ALGORITHM
from backupctl.core.killpoints import pause_point
from backupctl.core.manifest import (
    SECRETS_EXTENSION,
    SECRETS_FORMAT,
    ArtifactRecord,
    artifact_file_name,
    secrets_source,
)
from backupctl.core.pipeline import CHUNK, HashingReader, encrypt_stream
from backupctl.core.secrets import mask
from backupctl.errors import BackupctlError, IntegrityError, JobFailed, TargetError
from backupctl.policy.schema import Policy
from backupctl.sources.base import Source, dump_extension, dumps_a_tree
from backupctl.targets.registry import traits_of
from backupctl.targets.snapshot_files import confirm_stored, copy_artifact, key_of
from backupctl.targets.store import PlainStore, SnapshotStore, as_plain, open_store
from backupctl.targets.stream_sinks import StreamSink, TeeReader, close_sinks


@dataclass
class TargetOutcome:
    name: str
    status: str = "pending"  # complete | failed
    error: str | None = None
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    stored_bytes: int = 0
    transient: bool = False  # failed for a reason that may pass (unreachable, timed out)
    discarded_bytes: int = 0  # what the run removed of its own writes here after a failure


@dataclass
class BackupRun:
    """What one run holds: its stores (by target name), each target's outcome, and the work
    started ahead (actions/ahead.py)."""

    policy: Policy
    snapshot_id: str
    recipients: list[Any]
    events: Events
    outcomes: dict[str, TargetOutcome] = field(default_factory=dict)
    blobs: dict[str, Any] = field(default_factory=dict)  # BlobSnapshotStore: age artifacts
    plains: dict[str, PlainStore] = field(default_factory=dict)  # deduplicating: the plain stream
    ahead: StartedAhead = field(default_factory=StartedAhead)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    # source name -> the password hashes its dump captured (DumpStream.secrets), until stored
    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.outcomes = {target.name: TargetOutcome(target.name) for target in self.policy.targets}

    def stores(self) -> dict[str, SnapshotStore]:
        return {**self.plains, **self.blobs}

    def open_stores(self) -> None:
        """Slow start-ups side by side (actions/ahead.py): the deduplicating stores first (their
        processes for the first stream source and for the manifests start now and derive their
        keys while the rest starts), then the other targets, checked before the first dump
        starts: their checks may wait on the network, and a started dump must not wait long
        unread (a MySQL server drops a client that does not read for net_write_timeout, 60 s)."""
        policy = self.policy
        for config in policy.targets:
            if traits_of(config).deduplicating:
                store = open_store(config)
                try:
                    store.preflight()  # ConfigError (restic missing): exit 2, nothing started
                except TargetError as error:
                    self.fail(config.name, error)
                    continue
                self.plains[config.name] = as_plain(store)
        first_stream = next((c for c in policy.sources if not dumps_a_tree(c)), None)
        if first_stream is not None:
            self.ahead.sinks.start(self.stream_of(first_stream.name, dump_extension(first_stream)),
                                   self.plain_for(first_stream))  # fmt: skip
        for store in self.plains.values():
            store.begin_snapshot(policy.name, self.snapshot_id)
        for config in policy.targets:
            if traits_of(config).deduplicating:
                continue
            try:
                self.blobs[config.name] = open_store(config)
                self.blobs[config.name].preflight()
            except TargetError as error:
                self.fail(config.name, TargetError(str(error).replace("<policy>", policy.name)))

    def stream_of(self, source: str, extension: str) -> StreamOf:
        return StreamOf(self.policy.name, self.snapshot_id, source, extension)

    def plain_for(self, config: Any) -> dict[str, PlainStore]:
        """The deduplicating stores a source goes to in this run: its targets not failed."""
        return {
            t.name: self.plains[t.name]
            for t in self.policy.targets_for(config)
            if t.name in self.plains and self.outcomes[t.name].status != "failed"
        }

    def fail(self, name: str, error: BaseException) -> None:
        outcome = self.outcomes[name]
        outcome.status = "failed"
        outcome.error = describe(error)
        outcome.transient = bool(getattr(error, "transient", False))
        self.events.warning(f"target {outcome.name}: {outcome.error}")

    def discard(self, names: list[str]) -> list[str]:
        """Remove what this run wrote on the blob targets `names` (its snapshot failed there),
        except where the target failed transiently: a frozen or unreachable endpoint would
        only make the run wait again, and the next run's sweep (actions/sweep.py) removes it.
        The names of the targets left clean."""
        clean: list[str] = []
        for name in names:
            store, outcome = self.blobs.get(name), self.outcomes[name]
            if store is None or outcome.transient:
                continue
            (result,) = store.discard_snapshots(self.policy.name, [self.snapshot_id], before=time.time())
            outcome.discarded_bytes += result.bytes_reclaimed
            if result.error is not None:
                self.events.warning(f"target {name}: could not remove what this run wrote: {result.error}")
                continue
            if result.objects:
                self.events.info(
                    f"target {name}: removed {result.bytes_reclaimed} bytes ({result.objects} objects) "
                    "this run had written"
                )
            if result.clean:
                clean.append(name)
        return clean

    def close(self) -> None:
        """Stop whatever was started ahead and not used (restic commits nothing), close stores."""
        self.ahead.abort()
        for store in self.stores().values():
            try:
                store.close()
            except Exception:  # closing must never hide the real outcome
                pass


def store_source(run: BackupRun, config: Any, source: Source) -> ArtifactRecord:
    """Dump one source to its primary blob store (tee'd to its deduplicating stores), re-hash,
    copy to its other blob stores. Raises JobFailed if it lands nowhere."""
    policy, events, outcomes = run.policy, run.events, run.outcomes
    estimate = source.estimate_size()  # plain bytes, as the progress counts them; once per source
    usable = [t.name for t in policy.targets_for(config) if outcomes[t.name].status != "failed"]
    wanted = [name for name in usable if name in run.blobs]
    plains = run.plain_for(config)
    tee = {} if dumps_a_tree(config) else plains
    record: ArtifactRecord | None = None
    primary: str | None = None
    sinks: list[StreamSink] = []
    for candidate in wanted:
        try:
            record, sinks = _dump_to(run, config, source, estimate, run.blobs[candidate].target, tee)
        except TargetError as error:  # the source is fine: try the next target
            run.fail(candidate, error)
            continue
        primary = candidate
        break
    if record is None and plains:
        if wanted:
            events.warning(
                f"source {config.name}: no local, S3 or SFTP target could store it; {_tools(plains)} only"
            )
        record, sinks = _dump_to_plain_only(run, config, source, estimate, tee)
    if record is None:
        # The targets' own errors name the cause and the path (a full disk: where, how much free).
        errors = [f"{o.name}: {o.error}" for t in policy.targets_for(config) if (o := outcomes[t.name]).error]
        why = f" ({'; '.join(errors)})" if errors else ""
        raise JobFailed(f"source {config.name}: no target could store it{why}")
    if primary is not None:
        outcomes[primary].artifacts.append(record)
        pause_point("primary-stored")  # test-only (core/killpoints.py)
        _copy_to_others(run, config, record, primary, wanted)
    for sink in sinks:
        tool = _tools({sink.name: plains[sink.name]})
        if sink.error is not None:
            run.fail(sink.name, TargetError(f"{tool}: {sink.error}"))
        else:
            outcomes[sink.name].artifacts.append(record)
            outcomes[sink.name].stored_bytes += sink.result.data_added
            events.info(
                f"source {config.name}: {tool} {sink.name} snapshot {sink.result.snapshot_id}, "
                f"{sink.result.data_added} new bytes"
            )
    if dumps_a_tree(config):
        _store_tree(run, config, record, plains)
    _store_secrets(run, config, record)
    return record


def _store_secrets(run: BackupRun, config: Any, record: ArtifactRecord) -> None:
    """The role passwords the dump captured go to every store that holds the dump, as the
    artifact `<source>.secrets` (encrypted: age on blob stores, restic's key in restic): once
    through the first blob store's `store_stream`, copied (re-hashed) to the other blob stores,
    and through each restic store's `store_stream`. A store that fails it is failed for the run
    (its copy of the snapshot would lack them). Only names and sizes are logged."""
    secrets = run.secrets.pop(config.name, None)
    if secrets is None:
        return
    holders = [o.name for o in run.outcomes.values() if o.status != "failed" and record in o.artifacts]
    name = secrets_source(config.name)
    companion: ArtifactRecord | None = None
    for target in [holder for holder in holders if holder in run.blobs]:
        try:
            if companion is None:
                stored = run.blobs[target].store_stream(
                    run.policy.name, run.snapshot_id, name, SECRETS_EXTENSION, io.BytesIO(secrets),
                    run.recipients,
                )  # fmt: skip
                companion = ArtifactRecord(
                    source=name, source_type=config.type, file=stored.file, format=SECRETS_FORMAT,
                    plain_bytes=stored.plain_bytes, plain_digest=stored.plain_digest,
                    stored_bytes=stored.stored_bytes, stored_sha256=stored.stored_sha256,
                    facts={"secrets_of": config.name},
                )  # fmt: skip
                origin = target
            else:
                copy_artifact(
                    run.blobs[origin].target, run.blobs[target].target,
                    key_of(run.policy.name, run.snapshot_id, companion.file),
                    companion.stored_sha256, companion.stored_bytes,
                )  # fmt: skip
        except (TargetError, IntegrityError, OSError) as error:
            run.fail(target, error)
            continue
        run.outcomes[target].artifacts.append(companion)
    for target in [holder for holder in holders if holder in run.plains]:
        try:
            stored = run.plains[target].store_stream(
                run.policy.name, run.snapshot_id, name, SECRETS_EXTENSION, io.BytesIO(secrets), run.recipients
            )
        except (TargetError, OSError) as error:
            run.fail(target, error)
            continue
        if companion is None:  # restic only: the manifest says what its copies must hash to
            companion = ArtifactRecord(
                source=name, source_type=config.type, file=stored.file, format=SECRETS_FORMAT,
                plain_bytes=stored.plain_bytes, plain_digest=stored.plain_digest, stored_bytes=0,
                stored_sha256="", facts={"secrets_of": config.name}, compression="restic",
                encryption="restic",
            )  # fmt: skip
        run.outcomes[target].artifacts.append(companion)
    if companion is not None:
        run.artifacts.append(companion)
        stores = [o.name for o in run.outcomes.values() if companion in o.artifacts]
        run.events.info(f"source {config.name}: role passwords stored encrypted on {', '.join(stores)}")


def _copy_to_others(
    run: BackupRun, config: Any, record: ArtifactRecord, primary: str, wanted: list[str]
) -> None:
    key = key_of(run.policy.name, run.snapshot_id, record.file)
    for name in wanted:
        if name == primary or run.outcomes[name].status == "failed":
            continue
        progress = run.events.progress(f"{config.name} → {name} (copy)", record.stored_bytes)
        try:
            copy_artifact(
                run.blobs[primary].target, run.blobs[name].target, key, record.stored_sha256,
                record.stored_bytes, progress=progress.advance,
            )  # fmt: skip
            run.outcomes[name].artifacts.append(record)
            run.events.info(f"source {config.name}: replicated to {name}")
        except (TargetError, IntegrityError, OSError) as error:
            run.fail(name, error)
        finally:
            progress.close()


def _store_tree(
    run: BackupRun, config: Any, record: ArtifactRecord, plains: dict[str, PlainStore]
) -> None:
    """A file source to the deduplicating stores as a tree (`restic backup PATH`: incremental)."""
    for name, store in plains.items():
        try:
            result = store.store_tree(
                run.policy.name, run.snapshot_id, config.name, config.path, list(config.exclude)
            )
        except (TargetError, OSError) as error:
            run.fail(name, error)
            continue
        run.outcomes[name].artifacts.append(record)
        run.outcomes[name].stored_bytes += result.data_added
        run.events.info(
            f"source {config.name}: {_tools({name: store})} {name} snapshot {result.snapshot_id}, "
            f"{result.files_new} new and {result.files_changed} changed files"
        )


def _dump_to(
    run: BackupRun, config: Any, source: Source, estimate: int | None, target: Any,
    tee: dict[str, PlainStore],
) -> tuple[ArtifactRecord, list[StreamSink]]:  # fmt: skip
    """Stream one dump into blob `target` (and, tee'd, into the deduplicating stores). Raises
    TargetError when the target failed (the caller tries the next), SourceError when the dump
    failed."""
    policy = run.policy
    began = time.monotonic()
    progress = run.events.progress(f"{config.name} → {target.name}", estimate)
    sinks: list[StreamSink] = []
    try:
        with run.ahead.dump.take(config.name, source) as dump:
            file = artifact_file_name(config.name, dump.extension)
            key = key_of(policy.name, run.snapshot_id, file)
            sinks = run.ahead.sinks.take(run.stream_of(config.name, dump.extension), tee)
            try:
                catalog = run.ahead.catalog
                if sinks:  # they read the plain stream as it comes: the run must be recorded first
                    catalog.wait()
                with gated(lambda: target.writer(key), catalog.ready, catalog.wait) as sink:
                    stats = encrypt_stream(
                        cast(BinaryIO, TeeReader(dump.stream, sinks)) if sinks else dump.stream,
                        cast(BinaryIO, sink),
                        run.recipients,
                        level=policy.compression.level,
                        threads=policy.compression.threads,
                        progress=progress.advance,
                    )
                    facts = dump.finish()  # raises when the dump tool failed: the writer then discards
                    if dump.secrets is not None:
                        run.secrets[config.name] = dump.secrets
                    close_sinks(sinks, None)  # committed only for a complete, successful dump
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
    run.events.info(
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


def _dump_to_plain_only(
    run: BackupRun, config: Any, source: Source, estimate: int | None, tee: dict[str, PlainStore]
) -> tuple[ArtifactRecord, list[StreamSink]]:
    """A source without a blob copy: the dump goes to the deduplicating stores (stream sources)
    and is hashed on the way, so the signed manifest still says what their copies must hash to.
    File sources are read as the usual tar stream for their facts (tree hash); `_store_tree`
    follows."""
    run.ahead.catalog.wait()  # the run is recorded before a store reads a byte (actions/ahead.py)
    began = time.monotonic()
    label = f"{config.name} → {', '.join(tee) or _tools(run.plains)}"
    progress = run.events.progress(label, estimate)
    sinks: list[StreamSink] = []
    try:
        with run.ahead.dump.take(config.name, source) as dump:
            file = artifact_file_name(config.name, dump.extension)
            sinks = run.ahead.sinks.take(run.stream_of(config.name, dump.extension), tee)
            try:
                feed = cast(BinaryIO, TeeReader(dump.stream, sinks)) if sinks else dump.stream
                reader = HashingReader(feed, progress.advance, algorithm=PLAIN_ALGORITHM)
                while reader.read(CHUNK):
                    pass
                facts = dump.finish()
                if dump.secrets is not None:
                    run.secrets[config.name] = dump.secrets
                close_sinks(sinks, None)
            except BaseException as error:
                close_sinks(sinks, error)
                raise
    finally:
        progress.close()
    seconds = time.monotonic() - began
    run.events.info(f"source {config.name}: {reader.count} bytes streamed to {label} in {seconds:.1f}s")
    record = ArtifactRecord(
        source=config.name,
        source_type=config.type,
        file=file,
        format=dump.format,
        plain_bytes=reader.count,
        plain_digest=reader.digest(),
        stored_bytes=0,  # no age-encrypted artifact: the deduplicating stores hold the only copies
        stored_sha256="",
        facts=facts,
        # The program that compresses and encrypts these copies ("restic"; docs/formats.md).
        compression=_tools(run.plains),
        encryption=_tools(run.plains),
    )
    return record, sinks


def _tools(stores: dict[str, PlainStore]) -> str:
    """How log lines name deduplicating stores: the program they run ("restic")."""
    return ", ".join(sorted({store.traits.tool or "store" for store in stores.values()})) or "store"


def describe(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, BackupctlError):
        return mask(str(error))
    if isinstance(error, OSError):
        return mask(f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""))
    return mask(f"{type(error).__name__}: {error}")
