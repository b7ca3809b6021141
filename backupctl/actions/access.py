"""Shared plumbing for actions that read snapshots: trust, identities, choosing a target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backupctl.catalog.store import Catalog, SnapshotView
from backupctl.core.crypto import parse_identities, trusted_public_keys
from backupctl.errors import ConfigError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.registry import traits_of
from backupctl.targets.snapshot_files import SignedManifest, read_manifest
from backupctl.targets.store import SnapshotStore, open_store


def trusted_keys(settings: Settings, policy: Policy, extra: list[str] | None = None) -> list[str]:
    return trusted_public_keys(settings.keys_dir, [*policy.signing.trusted_keys, *(extra or [])])


def load_identities(policy: Policy, identity_file: Path | None) -> list[Any]:
    """The age identities for decryption: `--identity FILE` or the policy's `encryption.identity`."""
    if identity_file is not None:
        try:
            text = identity_file.read_text()
        except OSError as error:
            raise ConfigError(f"cannot read identity file {identity_file}: {error.strerror}") from None
        return parse_identities(text)
    if policy.encryption.identity is None:
        raise ConfigError(
            f"policy '{policy.name}' has no encryption.identity; pass --identity FILE "
            "(the age identity kept offline) to decrypt"
        )
    return parse_identities(policy.encryption.identity.resolve())


def choose_store(policy: Policy, snapshot: SnapshotView, requested: str | None) -> SnapshotStore:
    """The store of target `requested` if given, else of the first target (policy order)
    holding a complete copy as age-encrypted artifacts (not a deduplicating store: the slowest
    to open). Raises ConfigError when none does, TargetError when it cannot be opened."""
    if requested:
        return open_store(policy.target(requested))
    for config in policy.targets:
        if not traits_of(config).deduplicating and snapshot.targets.get(config.name) == "complete":
            return open_store(config)
    raise ConfigError(f"snapshot {snapshot.id} has no complete copy on any target of policy '{policy.name}'")


def open_catalog(settings: Settings) -> Catalog:
    return Catalog.open(settings.catalog_url)


def blob_holder(policy: Policy, snapshot: SnapshotView) -> BlobTarget:
    """A target holding a complete copy as age-encrypted artifacts, with the signed manifest."""
    for config in policy.targets:
        if not traits_of(config).deduplicating and snapshot.targets.get(config.name) == "complete":
            return build_target(config)
    raise ConfigError(f"snapshot {snapshot.id} has no complete copy on a local, S3 or SFTP target")


def manifest_for(
    store: SnapshotStore, policy: Policy, snapshot: SnapshotView, trusted: list[str]
) -> tuple[SignedManifest, str | None]:
    """The signed manifest that says what `store`'s copy must hold, and where it came from: None
    for the store itself, else the name of the target it was read from (restic copies made
    before manifests went to restic keep theirs only on the blob targets). Raises
    IntegrityError, TargetError, ConfigError (no target holds one)."""
    signed = store.read_manifest(policy.name, snapshot.id, trusted)
    if signed is not None:
        return signed, None
    holder = blob_holder(policy, snapshot)
    try:
        return read_manifest(holder, policy.name, snapshot.id, trusted), holder.name
    finally:
        holder.close()
