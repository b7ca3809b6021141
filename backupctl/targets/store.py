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

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from backupctl.core.crypto import SigningKey
from backupctl.core.manifest import ArtifactRecord, Manifest
from backupctl.errors import RetainedByLock
from backupctl.targets.base import Posture
from backupctl.targets.registry import StoreTraits, kind_of, load_class
from backupctl.targets.snapshot_files import SignedManifest


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

    def open_plain(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any]
    ) -> AbstractContextManager[BinaryIO]:
        """The plain stream of a stored artifact (the caller checks its digest)."""
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
