"""The target contract: a `SnapshotStore` is a place that holds backupctl snapshots.

Actions see only this interface (and the traits of backupctl.targets.registry), never a target
kind. Two implementations, after Litestream's split of a replica's snapshot logic from a small
per-backend client:
- `BlobSnapshotStore` (backupctl.targets.blob_store), written once over the small blob
  interface (backupctl.targets.base.BlobTarget) for local, S3 and SFTP targets: it compresses
  and age-encrypts each plain stream into `<policy>/<snapshot>/<source>.<fmt>.zst.age` and
  stores the signed manifest beside it;
- `ResticSnapshotStore` (backupctl.targets.restic_store) over a restic repository: the plain
  stream goes to restic (which deduplicates and encrypts it), the signed manifest is one more
  restic snapshot.
`open_store(config)` builds the right one for a target config (via the registry). The contract
every implementation meets is docs/targets.md, "The target contract", and is run by
tests/integration/targets/contract.py against all four kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from backupctl.core.crypto import SigningKey
from backupctl.core.manifest import ArtifactRecord, Manifest
from backupctl.core.pipeline import Progress, StreamStats
from backupctl.errors import RetainedByLock
from backupctl.sources.base import RestoreOutcome, RestoreRequest
from backupctl.targets.base import Posture
from backupctl.targets.registry import StoreTraits, kind_of, load_class
from backupctl.targets.snapshot_files import SignedManifest
from backupctl.targets.stream_sinks import StreamSink


@dataclass
class ArtifactCheck:
    file: str
    checks: dict[str, str] = field(default_factory=dict)  # check -> "ok" or the problem

    @property
    def ok(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


@dataclass
class StoredStream:
    """What `store_stream` wrote: the artifact record's sizes and digests."""

    file: str
    plain_bytes: int
    plain_digest: str
    stored_bytes: int  # 0 when the store keeps no artifact of its own bytes (restic)
    stored_sha256: str  # "" likewise
    data_added: int = 0  # new bytes a deduplicating store added


@dataclass
class Fetched:
    """What `fetch` found for one artifact: the drill's fetch step (an integrity check and a
    stage) and restore's pre-check (`problem` is why it refuses)."""

    check: str  # the integrity check's name
    ok: bool
    detail: str  # the check's detail
    stage: str  # the fetch stage's detail
    warmup_seconds: float = 0.0  # cold storage (Glacier) retrieval before the first byte
    problem: str = ""  # when not ok: what does not match, naming the artifact and the store


@dataclass(frozen=True)
class PlainCheck:
    """How a store's plain stream of an artifact is checked, in the words drill and restore
    report: the drill's integrity check `name` ("decrypt shop-db.pgdump.zst.age"), what a
    digest equal to the manifest's proves (`proof`: "authenticated and equal"), and what
    differs when it is not (`subject`: "shop-db.pgdump.zst.age: the decrypted stream")."""

    name: str
    proof: str
    subject: str


@runtime_checkable
class TreeSource(Protocol):
    """A source whose artifact is a file tree (backupctl.sources.files.FilesSource): restored
    from its tar stream (`restore`) or by a store that keeps the tree itself (`restore_tree`:
    `fill(directory)` puts the tree into an empty directory; the source owns the destination
    rules: --to-dir, --force, a hidden sibling renamed into place)."""

    name: str
    root: Path  # the tree's path at backup time

    def restore(self, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome: ...

    def restore_tree(self, fill: Callable[[Path], None], request: RestoreRequest) -> RestoreOutcome: ...


@dataclass
class Deletion:
    """What `delete_snapshots` did, per backupctl snapshot id."""

    removed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # data of failed runs removed as well
    locked: list[tuple[str, RetainedByLock]] = field(default_factory=list)  # kept (whole) by a lock
    errors: list[tuple[str, str]] = field(default_factory=list)  # (snapshot id, error)


@dataclass
class Discarded:
    """What `discard_snapshots` removed (or would remove) of one snapshot on one store."""

    snapshot_id: str
    objects: int = 0  # objects, temporary files, incomplete uploads, restic snapshots
    bytes_reclaimed: int = 0
    retained_by_lock: list[str] = field(default_factory=list)  # keys an object lock keeps
    error: str | None = None  # the store could not be read or written: try again later

    @property
    def clean(self) -> bool:
        """Nothing of the snapshot is left on the store."""
        return self.error is None and not self.retained_by_lock


class SnapshotStore(Protocol):
    """A place that holds snapshots: what backup, restore, verify, drill, prune, status, rebuild
    and replicate use. Errors: TargetError (unreachable, refused), IntegrityError (a manifest
    or copy does not authenticate)."""

    name: str
    offsite: bool
    traits: StoreTraits
    manifest_origin: str | None  # how verify names its own manifest ("the repository"), or None

    def preflight(self) -> None:
        """Before a backup writes: refuse early (TargetError, ConfigError) when the target
        cannot take it (S3 posture problems; restic missing or too old), and tidy what an
        earlier killed run left (temp files). Must not wait long: a dump may be waiting."""
        ...

    def begin_snapshot(self, policy: str, snapshot_id: str) -> None:
        """Start, ahead, what writing this snapshot's manifest needs (restic: its process,
        whose key derivation then overlaps the dumps). Undone by `close` when not used."""
        ...

    def snapshot_ids(self, policy: str) -> list[str]:
        """Snapshots of `policy` this store holds a manifest of (complete here), oldest first."""
        ...

    def read_manifest(self, policy: str, snapshot_id: str, trusted: list[str]) -> SignedManifest | None:
        """The authenticated manifest of a snapshot, or None when this store keeps none for it
        (restic copies made before manifests went to restic). Raises IntegrityError when one
        is there but does not authenticate, TargetError when it cannot be read."""
        ...

    def write_manifest(self, manifest: Manifest, signing: SigningKey) -> str:
        """Store the signed manifest: the snapshot becomes complete here. Its sha256."""
        ...

    def store_stream(
        self, policy: str, snapshot_id: str, source: str, extension: str, stream: BinaryIO,
        recipients: list[Any],
    ) -> StoredStream:  # fmt: skip
        """Store one source's plain stream for a snapshot; nothing is listed for it until
        `write_manifest`, and nothing is left when the stream raises."""
        ...

    def fetch(self, policy: str, snapshot_id: str, artifact: ArtifactRecord) -> Fetched:
        """Before a restore or a drill reads an artifact: is it there as the manifest says?
        Blob stores re-read and re-hash the stored bytes (a Glacier warm-up happens here);
        restic finds the artifact's restic snapshot (its content is checked on restore).
        Raises IntegrityError when the store holds no copy of it, TargetError."""
        ...

    def open_plain(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any],
        progress: Progress | None = None,
    ) -> AbstractContextManager[tuple[BinaryIO, Callable[[], StreamStats]]]:  # fmt: skip
        """The plain stream of a stored artifact, as a real pipe (a restore tool may take its
        fd), and `finished()`: once the stream is read to its end, the plain bytes and digest
        (the algorithm of the manifest's plain digest) of what it gave; raises IntegrityError
        when the store's own authentication failed (age). The caller compares the digest.
        `progress` gets the bytes read from the store (`read_size(artifact)` in all)."""
        ...

    def read_size(self, artifact: ArtifactRecord) -> int:
        """The bytes `open_plain` reads from the store for `artifact`: what its progress counts
        to (the age artifact's stored bytes; the plain bytes restic gives back)."""
        ...

    def plain_check(self, artifact: ArtifactRecord) -> PlainCheck:
        """How `open_plain`'s stream of `artifact` is checked, in the words of reports."""
        ...

    def restore_tree(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any],
        source: TreeSource, request: RestoreRequest, progress: Progress | None = None,
    ) -> tuple[RestoreOutcome, int]:  # fmt: skip
        """Restore a file source's tree into `request.to_dir` (the source's destination rules
        apply); the outcome (facts measured on the restored tree) and the plain bytes restored.
        Blob stores extract the tar stream (its digest checked against the manifest); restic
        restores the tree it holds. Raises IntegrityError, ConfigError, TargetError."""
        ...

    def delete_snapshots(self, policy: str, snapshot_ids: list[str], failed_runs: set[str]) -> Deletion:
        """Delete snapshots (oldest first); a lock keeps a snapshot whole. `failed_runs`: ids of
        failed runs whose leftover data (never a manifest) may be removed as well."""
        ...

    def discard_snapshots(
        self, policy: str, snapshot_ids: list[str], *, before: float, dry_run: bool = False
    ) -> list[Discarded]:
        """Remove everything the store holds of snapshots whose runs did not complete here
        (a failed run cleaning up after itself; the sweep of dead runs): its objects, a signed
        manifest included (manifest first), and partial writes begun before `before` (Unix
        time: temporary files, incomplete multipart uploads). One result per snapshot id;
        never raises for a store that cannot be reached (the result's `error`)."""
        ...

    def check_artifacts(
        self, policy: str, snapshot_id: str, manifest: Manifest, sources: set[str], identities: list[Any]
    ) -> tuple[list[ArtifactCheck], list[str]]:
        """Verify what the store holds against the manifest: per-artifact checks and problems."""
        ...

    def check_data(self, subset: str) -> list[str]:
        """A deduplicating store's own check of a slice of all its data ("n/t": restic's
        `check --read-data-subset`), the problems ([] when ok); what a sampled verify uses where
        a copy has no bytes of its own. Blob stores, sampled per copy, find nothing to add ([])."""
        ...

    def survey(self, policy: str, snapshot_id: str, trusted: list[str]) -> list[str]:
        """Cheaply, does this store still hold the snapshot? Its signed manifest (read and
        authenticated) and every object it names (a listing: presence and size, no data read).
        The problems, each naming what is missing or wrong; empty when the copy is whole.
        Raises TargetError when the store cannot be read."""
        ...

    def posture(self) -> Posture:
        """Reachability and protection read from the real target."""
        ...

    def setup(self, dry_run: bool) -> list[dict[str, str]]:
        """Apply the protection the target declares (idempotent); the changes (what, current,
        desired)."""
        ...

    def tool_version(self) -> str | None:
        """The external program this store runs and its version ("restic 0.14.0"), None when it
        runs none. Raises ConfigError when the program is missing or too old."""
        ...

    def close(self) -> None: ...


class StoredPlain(Protocol):
    """What a store that takes plain streams and trees as they are reports for one of them."""

    snapshot_id: str  # the store's own snapshot (restic's id)
    data_added: int  # new bytes after deduplication
    files_new: int
    files_changed: int


@runtime_checkable
class PlainStore(SnapshotStore, Protocol):
    """A SnapshotStore that takes a source's plain stream, and a file source's tree, as they are
    (`traits.deduplicating`; restic): what the backup's fan-out tees a dump into
    (actions/backup_fanout.py), with the store's process started ahead of the dump where that
    saves time (actions/ahead.py). Every store of a deduplicating kind is one (`as_plain`)."""

    def open_stream_sink(
        self, policy: str, snapshot_id: str, source: str, extension: str, *, background: bool = False
    ) -> StreamSink:
        """Start storing one source's plain stream, fed through the sink's writer and committed
        or aborted by `stream_sinks.close_sinks` (its `result`: a StoredPlain). Never raises: a
        sink that failed to start carries its error. `background`: the lowest CPU priority,
        for a process that mostly waits (its key derivation takes spare CPU only)."""
        ...

    def store_tree(
        self, policy: str, snapshot_id: str, source: str, path: str, excludes: list[str]
    ) -> StoredPlain:
        """Store a file source's tree as it is (incremental: restic picks the previous snapshot
        as parent). Raises TargetError."""
        ...


def as_plain(store: SnapshotStore) -> PlainStore:
    """`store` as the PlainStore it is, when its kind is deduplicating (the registry's promise:
    tests/integration/targets/contract.py checks it for every kind). Raises TypeError otherwise."""
    if not store.traits.deduplicating or not isinstance(store, PlainStore):
        raise TypeError(f"target {store.name} does not take plain streams as they are")
    return store


def tool_version(config: Any) -> str:
    """The version of the program a target kind runs ("restic 0.14.0"), without contacting the
    target. Raises ConfigError when it is missing or too old, ValueError for a kind that runs
    none (`traits_of(config).tool is None`)."""
    version = open_store(config).tool_version()  # cheap: only kinds with a tool get here
    if version is None:
        raise ValueError(f"target {config.name} runs no external program")
    return version


def open_store(config: Any) -> SnapshotStore:
    """The SnapshotStore of a target config model (backupctl.policy.schema). Connecting is lazy
    for restic, immediate for blob targets (their constructors may raise TargetError)."""
    kind = kind_of(config.type)
    store: SnapshotStore = load_class(kind.store)(config)
    return store
