"""Where a drill reads a snapshot: a local/S3/SFTP target (age artifacts) or a restic repository.

A feed gives the drill the signed manifest, a fetch step (measured: it includes a Glacier
warm-up), each database source as a plain stream to restore, and each file tree as a checked
directory. The drill's integrity checks are the same whichever feed: the plain stream must hash
to the manifest's `plain_digest`, the restored tree must have the manifest's tree hash.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from backupctl.core.digests import algorithm_of
from backupctl.core.manifest import ArtifactRecord
from backupctl.core.pipeline import CHUNK, HashingReader, decrypted_reader, threaded_pipe
from backupctl.errors import IntegrityError
from backupctl.policy.schema import Policy
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.targets.base import ReadTiming, build_target
from backupctl.targets.registry import traits_of
from backupctl.targets.snapshot_files import SignedManifest, key_of, read_manifest, rehash


@dataclass
class Fetched:
    check: str  # the integrity check's name
    ok: bool
    detail: str  # the check's detail
    stage: str  # the fetch stage's detail
    warmup_seconds: float = 0.0


class ArtifactFeed(Protocol):
    name: str
    policy: Policy
    stream_check: str  # the integrity check a plain stream passes: "decrypt" or "restic dump"

    def manifest(self, trusted: list[str]) -> SignedManifest: ...

    def fetch(self, artifact: ArtifactRecord) -> Fetched: ...

    def plain(self, artifact: ArtifactRecord) -> typing.ContextManager[tuple[BinaryIO, Callable[[], str]]]:
        """A readable plain stream (a real pipe) and, once read, the digest of what it gave
        (`algorithm:hex`, the algorithm of the manifest's plain digest)."""
        ...

    def restore_tree(self, artifact: ArtifactRecord, tree: Path) -> dict[str, Any]:
        """Restore a file source into the new directory `tree`; the restored tree's facts."""
        ...

    def close(self) -> None: ...


def open_feed(
    policy: Policy, target_name: str, snapshot_id: str, identities: Callable[[], list[Any]]
) -> ArtifactFeed:
    config = policy.target(target_name)
    if traits_of(config).deduplicating:  # holds plain streams and trees, no age artifacts
        return ResticFeed(policy, config, snapshot_id)
    return BlobFeed(policy, target_name, snapshot_id, identities())


class BlobFeed:
    """Age-encrypted artifacts on a local, S3 or SFTP target."""

    stream_check = "decrypt"

    def __init__(self, policy: Policy, target_name: str, snapshot_id: str, identities: list[Any]) -> None:
        self.policy = policy
        self.target = build_target(policy.target(target_name))
        self.name = target_name
        self.snapshot_id = snapshot_id
        self.identities = identities

    def manifest(self, trusted: list[str]) -> SignedManifest:
        return read_manifest(self.target, self.policy.name, self.snapshot_id, trusted)

    def fetch(self, artifact: ArtifactRecord) -> Fetched:
        timing = ReadTiming()
        digest, size = rehash(self.target, self._key(artifact), timing)
        ok = digest == artifact.stored_sha256 and size == artifact.stored_bytes
        detail = (
            "stored bytes match the manifest"
            if ok
            else f"sha256/size differ from the manifest ({size} bytes, expected {artifact.stored_bytes})"
        )
        stage = f"{size} bytes" + (
            f", archive warm-up {timing.warmup_seconds:.1f}s" if timing.warmup_seconds else ""
        )
        return Fetched(f"sha256 {artifact.file}", ok, detail, stage, timing.warmup_seconds)

    @contextmanager
    def plain(self, artifact: ArtifactRecord) -> Iterator[tuple[BinaryIO, Callable[[], str]]]:
        algorithm = algorithm_of(artifact.plain_digest)
        with (
            self.target.reader(self._key(artifact)) as stored,
            decrypted_reader(stored, self.identities, plain_algorithm=algorithm) as (stream, finished),
        ):
            yield stream, lambda: finished().plain_digest

    def restore_tree(self, artifact: ArtifactRecord, tree: Path) -> dict[str, Any]:
        source = build_source(self.policy.source(artifact.source))
        with self.plain(artifact) as (stream, finished):
            restored = source.restore(stream, RestoreRequest(to_dir=tree))
            finished()
        return restored.facts

    def close(self) -> None:
        self.target.close()

    def _key(self, artifact: ArtifactRecord) -> str:
        return key_of(self.policy.name, self.snapshot_id, artifact.file)


class ResticFeed:
    """A restic repository: plain streams (`restic dump`) and file trees (`restic restore`)."""

    stream_check = "restic dump"

    def __init__(self, policy: Policy, config: Any, snapshot_id: str) -> None:
        from backupctl.targets.store import open_store

        self.policy = policy
        self.repository: Any = open_store(config)  # a ResticSnapshotStore (a ResticRepository)
        self.name = config.name
        self.snapshot_id = snapshot_id
        self._ids: dict[str, str] = {}

    def manifest(self, trusted: list[str]) -> SignedManifest:
        policy, snapshot_id = self.policy.name, self.snapshot_id
        signed: SignedManifest | None = self.repository.read_manifest(policy, snapshot_id, trusted)
        if signed is None:
            raise IntegrityError(
                f"restic repository {self.name} holds no signed manifest of snapshot {self.snapshot_id} "
                "(made before backupctl stored manifests in restic): drill from a local, S3 or SFTP target"
            )
        return signed

    def fetch(self, artifact: ArtifactRecord) -> Fetched:
        from backupctl.targets.restic_snapshots import restic_snapshot_for

        found = restic_snapshot_for(self.repository, self.policy.name, self.snapshot_id, artifact.source)
        self._ids[artifact.source] = found
        return Fetched(
            f"restic snapshot {artifact.source}",
            True,
            f"restic snapshot {found[:8]} found (its content is checked against the manifest on restore)",
            f"restic snapshot {found[:8]}",
        )

    @contextmanager
    def plain(self, artifact: ArtifactRecord) -> Iterator[tuple[BinaryIO, Callable[[], str]]]:
        from backupctl.targets.restic_snapshots import artifact_stdin_filename

        with self.repository.dump(self._id(artifact), artifact_stdin_filename(artifact)) as dumped:

            def copy(sink: BinaryIO) -> str:
                reader = HashingReader(dumped, algorithm=algorithm_of(artifact.plain_digest))
                while chunk := reader.read(CHUNK):
                    sink.write(chunk)
                return reader.digest()

            with threaded_pipe(copy, "restic-dump") as (stream, finished):
                yield stream, finished

    def restore_tree(self, artifact: ArtifactRecord, tree: Path) -> dict[str, Any]:
        from backupctl.sources.files import tree_facts
        from backupctl.targets.restic_snapshots import restore_files_from_restic

        tree.mkdir(parents=True)
        source_path = typing.cast(Any, self.policy.source(artifact.source)).path
        restore_files_from_restic(self.repository, self._id(artifact), source_path, tree)
        return tree_facts(tree)

    def close(self) -> None:
        return None

    def _id(self, artifact: ArtifactRecord) -> str:
        if artifact.source not in self._ids:
            self.fetch(artifact)
        return self._ids[artifact.source]
