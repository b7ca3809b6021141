"""Where a drill reads a snapshot: one snapshot of one target's SnapshotStore, whatever its kind.

A feed gives the drill the signed manifest, a fetch step (measured: it includes a Glacier
warm-up), each database source as a plain stream to restore, and each file tree as a checked
directory. The drill's integrity checks are the same whichever store: the plain stream must hash
to the manifest's `plain_digest`, the restored tree must have the manifest's tree hash. What
differs between kinds (age artifacts re-hashed and decrypted; restic snapshots found, dumped and
restored) is the store's (backupctl.targets.store: `fetch`, `open_plain`, `restore_tree`).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

from backupctl.core.manifest import ArtifactRecord
from backupctl.core.pipeline import StreamStats
from backupctl.errors import IntegrityError
from backupctl.policy.schema import Policy
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.targets.snapshot_files import SignedManifest
from backupctl.targets.store import Fetched, PlainCheck, SnapshotStore, TreeSource, open_store

Finished = Callable[[], StreamStats]


class ArtifactFeed:
    """One snapshot of one target, as a drill reads it."""

    def __init__(self, policy: Policy, store: SnapshotStore, snapshot_id: str, identities: list[Any]) -> None:
        self.policy = policy
        self.store = store
        self.name = store.name
        self.snapshot_id = snapshot_id
        self.identities = identities

    def manifest(self, trusted: list[str]) -> SignedManifest:
        """The authenticated manifest. Raises IntegrityError (also when the store keeps none for
        this snapshot: restic copies made before manifests went to restic), TargetError."""
        signed = self.store.read_manifest(self.policy.name, self.snapshot_id, trusted)
        if signed is None:
            raise IntegrityError(
                f"target {self.name} holds no signed manifest of snapshot {self.snapshot_id} "
                "(made before backupctl stored manifests there): drill from a target that holds one"
            )
        return signed

    def fetch(self, artifact: ArtifactRecord) -> Fetched:
        return self.store.fetch(self.policy.name, self.snapshot_id, artifact)

    def plain_check(self, artifact: ArtifactRecord) -> PlainCheck:
        return self.store.plain_check(artifact)

    def plain(self, artifact: ArtifactRecord) -> AbstractContextManager[tuple[BinaryIO, Finished]]:
        """A readable plain stream (a real pipe) and, once read, what it gave (its digest in
        the algorithm of the manifest's plain digest)."""
        return self.store.open_plain(self.policy.name, self.snapshot_id, artifact, self.identities)

    def restore_tree(self, artifact: ArtifactRecord, tree: Path) -> dict[str, Any]:
        """Restore a file source into the new directory `tree`; the restored tree's facts."""
        source = typing.cast(TreeSource, build_source(self.policy.source(artifact.source)))
        outcome, _ = self.store.restore_tree(
            self.policy.name, self.snapshot_id, artifact, self.identities, source, RestoreRequest(to_dir=tree)
        )
        return outcome.facts

    def close(self) -> None:
        self.store.close()


def open_feed(
    policy: Policy, target_name: str, snapshot_id: str, identities: Callable[[], list[Any]]
) -> ArtifactFeed:
    """The feed of `snapshot_id` on target `target_name`. `identities` is asked only when the
    target's copies need the policy's age identity (`traits.needs_identity`)."""
    store = open_store(policy.target(target_name))
    return ArtifactFeed(policy, store, snapshot_id, identities() if store.traits.needs_identity else [])
