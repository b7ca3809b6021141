"""Moved to backupctl.targets.snapshot_files (the target layer owns a snapshot's files);
kept so that imports of the old path keep working."""

from backupctl.targets.snapshot_files import (
    SignedManifest,
    authenticate,
    confirm_stored,
    copy_artifact,
    key_of,
    list_snapshot_ids,
    read_bytes,
    read_manifest,
    rehash,
    write_manifest,
)

__all__ = [
    "SignedManifest",
    "authenticate",
    "confirm_stored",
    "copy_artifact",
    "key_of",
    "list_snapshot_ids",
    "read_bytes",
    "read_manifest",
    "rehash",
    "write_manifest",
]
