"""The SnapshotStore of a restic repository: restic holds the plain streams, deduplicated and
encrypted with its own key; the signed manifest is one more snapshot (restic_snapshots)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from backupctl.core.crypto import SigningKey
from backupctl.core.digests import PLAIN_ALGORITHM, algorithm_of
from backupctl.core.manifest import ArtifactRecord, Manifest, artifact_file_name, owner_source
from backupctl.core.pipeline import CHUNK, HashingReader, Progress, StreamStats, threaded_pipe
from backupctl.errors import BackupctlError, IntegrityError, TargetError
from backupctl.policy.schema import ResticTarget
from backupctl.sources.base import RestoreOutcome, RestoreRequest
from backupctl.targets.registry import traits_of
from backupctl.targets.restic import TAG, ResticBackupResult, ResticRepository, tags_for
from backupctl.targets.restic_snapshots import (
    MANIFEST_FILENAME,
    MANIFEST_TAG,
    artifact_stdin_filename,
    manifest_envelope,
    manifest_tags,
    open_manifest_sinks,
    open_sinks,
    read_manifest_snapshot,
    read_restic_manifest,
    restic_snapshot_for,
    restore_files_from_restic,
    stdin_filename,
    verify_restic_copy,
)
from backupctl.targets.snapshot_files import SignedManifest
from backupctl.targets.store import (
    ArtifactCheck,
    Deletion,
    Discarded,
    Fetched,
    PlainCheck,
    StoredStream,
    TreeSource,
)
from backupctl.targets.stream_sinks import StreamSink, close_sinks


class ResticSnapshotStore(ResticRepository):
    """A restic repository seen as a SnapshotStore (and still a ResticRepository, whose
    `stdin_writer` the backup tees the dump into)."""

    manifest_origin: str | None = "the repository"

    def __init__(self, config: Any) -> None:
        super().__init__(cast(ResticTarget, config))
        self.traits = traits_of(config)
        # policy -> {snapshot id: restic id of its manifest} from the last `snapshot_ids`: reading
        # those manifests then costs one `restic dump` each, not a lookup by tags as well.
        self._listed: dict[str, dict[str, str]] = {}
        self._manifest_sink: StreamSink | None = None  # started by begin_snapshot
        # (policy, snapshot id, source) -> restic id found by `fetch`: reading it back then
        # costs no second lookup (each restic call derives the key again, ~0.8 s).
        self._found: dict[tuple[str, str, str], str] = {}

    def preflight(self) -> None:
        """restic installed and new enough (ConfigError). No `cat config` probe (one more key
        derivation, ~0.8 s): a missing repository makes the backup itself fail for this target
        with restic's message and the `target setup` hint."""
        self.version()

    def begin_snapshot(self, policy: str, snapshot_id: str) -> None:
        """Start the `restic backup --stdin` that will store the manifest, at the lowest CPU
        priority: it derives its key while the dumps run (measured in docs/benchmarks.md)."""
        (self._manifest_sink,) = open_manifest_sinks({self.name: self}, policy, snapshot_id)

    def manifest_ids(self, policy: str) -> dict[str, str]:
        """backupctl snapshot id -> restic id of its manifest snapshot (the latest one wins)."""
        return {
            tag.removeprefix("snapshot="): info.id
            for info in self.snapshots([TAG, f"policy={policy}", MANIFEST_TAG])
            for tag in info.tags
            if tag.startswith("snapshot=")
        }

    def snapshot_ids(self, policy: str) -> list[str]:
        self._listed[policy] = self.manifest_ids(policy)
        return sorted(self._listed[policy])

    def read_manifest(self, policy: str, snapshot_id: str, trusted: list[str]) -> SignedManifest | None:
        restic_id = self._listed.get(policy, {}).get(snapshot_id)
        if restic_id is not None:
            return read_manifest_snapshot(self, restic_id, policy, snapshot_id, trusted)
        return read_restic_manifest(self, policy, snapshot_id, trusted)

    def write_manifest(self, manifest: Manifest, signing: SigningKey) -> str:
        """Into the process `begin_snapshot` started, else a new one. Raises TargetError."""
        data = manifest.to_bytes()
        envelope = manifest_envelope(data, signing.sign(data))
        sink, self._manifest_sink = self._manifest_sink, None
        if sink is None:
            with self.stdin_writer(
                MANIFEST_FILENAME, manifest_tags(manifest.policy, manifest.snapshot_id)
            ) as writer:
                writer.write(envelope)
            return hashlib.sha256(data).hexdigest()
        if sink.error is None:
            try:
                sink.writer.write(envelope)
            except (TargetError, OSError) as error:
                sink.error = str(error)
        close_sinks([sink], None)
        if sink.error is not None:
            raise TargetError(f"restic {sink.name}: the manifest could not be stored: {sink.error}")
        return hashlib.sha256(data).hexdigest()

    def store_stream(
        self, policy: str, snapshot_id: str, source: str, extension: str, stream: BinaryIO,
        recipients: list[Any],
    ) -> StoredStream:  # fmt: skip
        """restic encrypts with its own key: `recipients` are not used."""
        reader = HashingReader(stream, algorithm=PLAIN_ALGORITHM)
        result = self.backup_stream(
            cast(BinaryIO, reader), stdin_filename(source, extension), tags_for(policy, snapshot_id, source)
        )
        file = artifact_file_name(source, extension)
        return StoredStream(file, reader.count, reader.digest(), 0, "", result.data_added)

    def fetch(self, policy: str, snapshot_id: str, artifact: ArtifactRecord) -> Fetched:
        """Find the artifact's restic snapshot; its content is checked against the manifest's
        plain digest when it is read. Raises IntegrityError when there is none."""
        found = self._restic_id(policy, snapshot_id, artifact.source)
        return Fetched(
            f"restic snapshot {artifact.source}",
            True,
            f"restic snapshot {found[:8]} found (its content is checked against the manifest on restore)",
            f"restic snapshot {found[:8]}",
        )

    @contextmanager
    def open_plain(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any],
        progress: Progress | None = None,
    ) -> Iterator[tuple[BinaryIO, Callable[[], StreamStats]]]:  # fmt: skip
        """A stream source's plain dump (`restic dump`), hashed on the way, through a pipe;
        restic decrypts with its own key: `identities` are not used."""
        restic_id = self._restic_id(policy, snapshot_id, artifact.source)
        with self.dump(restic_id, artifact_stdin_filename(artifact)) as dumped:

            def copy(sink: BinaryIO) -> StreamStats:
                reader = HashingReader(dumped, progress, algorithm=algorithm_of(artifact.plain_digest))
                while chunk := reader.read(CHUNK):
                    sink.write(chunk)
                return StreamStats(reader.count, reader.digest(), 0, "")

            with threaded_pipe(copy, "restic-dump") as pipe:
                yield pipe

    def read_size(self, artifact: ArtifactRecord) -> int:
        return artifact.plain_bytes

    def plain_check(self, artifact: ArtifactRecord) -> PlainCheck:
        return PlainCheck(f"restic dump {artifact.source}", "equal", f"restic's copy of {artifact.source}")

    def restore_tree(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any],
        source: TreeSource, request: RestoreRequest, progress: Progress | None = None,
    ) -> tuple[RestoreOutcome, int]:  # fmt: skip
        """`restic restore` of the tree the backup stored (`restic backup PATH`); the facts are
        measured on the restored tree. No stream: `progress` is not used."""
        restic_id = self._restic_id(policy, snapshot_id, artifact.source)
        # The backup stored the absolute path (backup_path): restore looks for the same one.
        path = os.path.abspath(source.root)

        def fill(directory: Path) -> None:
            restore_files_from_restic(self, restic_id, path, directory)

        outcome = source.restore_tree(fill, request)
        return outcome, int(outcome.facts.get("total_bytes", 0))

    def _restic_id(self, policy: str, snapshot_id: str, source: str) -> str:
        """The restic snapshot of a source in a backupctl snapshot (the latest one), looked up
        once. Raises IntegrityError when there is none."""
        key = (policy, snapshot_id, source)
        if key not in self._found:
            self._found[key] = restic_snapshot_for(self, policy, snapshot_id, source)
        return self._found[key]

    def delete_snapshots(self, policy: str, snapshot_ids: list[str], failed_runs: set[str]) -> Deletion:
        """One `restic forget --prune` for every restic snapshot of the doomed ones, and of
        failed runs that left data but no manifest. restic's own repository lock makes a
        concurrent run wait or fail: then nothing is forgotten (TargetError per snapshot)."""
        deletion = Deletion()
        try:
            # One listing for all snapshots of the policy instead of one `find` per pruned snapshot.
            by_snapshot: dict[str, list[str]] = {}
            described: set[str] = set()  # snapshot ids with a manifest in this repository
            for info in self.snapshots([TAG, f"policy={policy}"]):
                for tag in info.tags:
                    if tag.startswith("snapshot="):
                        by_snapshot.setdefault(tag.removeprefix("snapshot="), []).append(info.id)
                        if MANIFEST_TAG in info.tags:
                            described.add(tag.removeprefix("snapshot="))
            leftovers = sorted(s for s in by_snapshot if s in failed_runs and s not in described)
            # Forgetting a snapshot restic no longer has is a no-op: that copy is gone already.
            doomed = [*snapshot_ids, *leftovers]
            self.forget([rid for snapshot_id in doomed for rid in by_snapshot.get(snapshot_id, [])])
        except BackupctlError as error:
            deletion.errors += [(snapshot_id, str(error)) for snapshot_id in snapshot_ids]
            return deletion
        deletion.removed += snapshot_ids
        deletion.leftovers = leftovers
        return deletion

    def discard_snapshots(
        self, policy: str, snapshot_ids: list[str], *, before: float, dry_run: bool = False
    ) -> list[Discarded]:
        """One listing, then one `restic forget --prune` of every restic snapshot of these
        backupctl snapshots: the sources committed before the run failed, and what restic
        committed from the truncated stream of a killed run (an empty manifest snapshot
        included). The bytes are the repository's `stats --mode raw-data` before and after
        (restic reports no size per snapshot), counted on the first snapshot that had data.
        restic writes no partial snapshot of its own: `before` is not used."""
        results = {snapshot_id: Discarded(snapshot_id) for snapshot_id in snapshot_ids}
        try:
            doomed: list[str] = []
            for info in self.snapshots([TAG, f"policy={policy}"]):
                for tag in (tag for tag in info.tags if tag.startswith("snapshot=")):
                    found = results.get(tag.removeprefix("snapshot="))
                    if found is not None:
                        found.objects += 1
                        doomed.append(info.id)
            if doomed and not dry_run:
                size_before = int(self.stats().get("total_size", 0))
                self.forget(doomed)
                reclaimed = max(size_before - int(self.stats().get("total_size", 0)), 0)
                next(r for r in results.values() if r.objects).bytes_reclaimed = reclaimed
        except BackupctlError as error:
            for result in results.values():
                result.error = str(error)
        return list(results.values())

    def check_artifacts(
        self, policy: str, snapshot_id: str, manifest: Manifest, sources: set[str], identities: list[Any]
    ) -> tuple[list[ArtifactCheck], list[str]]:
        """Snapshots present, plain streams equal the manifest's digest (a full `restic dump`),
        and `restic check --read-data-subset 5%`. Only the sources the policy sends here."""
        artifacts = [a for a in manifest.artifacts if owner_source(a.source) in sources]  # with its secrets
        problems = verify_restic_copy(self, policy, snapshot_id, artifacts)
        checks = []
        for artifact in artifacts:
            bad = [p for p in problems if p.startswith(f"{artifact.source} ")]
            checks.append(ArtifactCheck(artifact.source, {"restic": bad[0] if bad else "ok"}))
        return checks, problems

    def check_data(self, subset: str) -> list[str]:
        """`restic check --read-data-subset SUBSET` (structure plus that slice of the packs)."""
        return [self._scrub(problem) for problem in self.check(subset)]

    def survey(self, policy: str, snapshot_id: str, trusted: list[str]) -> list[str]:
        """One `restic snapshots` listing of the backupctl snapshot, and its manifest (`restic
        dump` of a small file): a restic snapshot per source the manifest lists."""
        listed = self.find(policy, snapshot_id)
        manifests = [info for info in listed if MANIFEST_TAG in info.tags]
        if not manifests:
            return [f"snapshot {snapshot_id} has no manifest in {self.name} (forgotten, or another repo)"]
        try:
            signed = read_manifest_snapshot(self, manifests[-1].id, policy, snapshot_id, trusted)
        except IntegrityError as error:
            return [str(error)]
        tags = [tag for info in listed for tag in info.tags]
        held = {tag.removeprefix("source=") for tag in tags if tag.startswith("source=")}
        return [
            f"the restic snapshot of {artifact.source} (snapshot {snapshot_id}) is missing from {self.name}"
            for artifact in signed.manifest.artifacts
            if artifact.source not in held
        ]

    def open_stream_sink(
        self, policy: str, snapshot_id: str, source: str, extension: str, *, background: bool = False
    ) -> StreamSink:
        """A `restic backup --stdin` tagged with the snapshot and source, started now."""
        (sink,) = open_sinks(
            {self.name: self}, stdin_filename(source, extension), tags_for(policy, snapshot_id, source),
            background=background,
        )  # fmt: skip
        return sink

    def store_tree(
        self, policy: str, snapshot_id: str, source: str, path: str, excludes: list[str]
    ) -> ResticBackupResult:
        """`restic backup PATH` (incremental), tagged with the snapshot and source."""
        return self.backup_path(path, excludes, tags_for(policy, snapshot_id, source))

    def setup(self, dry_run: bool) -> list[dict[str, str]]:
        if self.exists():
            return []
        if not dry_run:
            self.init()
        return [{"what": "repository", "current": "absent", "desired": "initialised"}]

    def tool_version(self) -> str | None:
        return "restic " + ".".join(map(str, self.version()))

    def close(self) -> None:
        """A manifest process started but not used (failure, interruption): restic commits nothing."""
        sink, self._manifest_sink = self._manifest_sink, None
        if sink is not None:
            close_sinks([sink], TargetError("no manifest for this repository"))
