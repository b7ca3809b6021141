"""Moved to backupctl.targets.restic_snapshots (the target layer owns restic's snapshots);
kept so that imports of the old path keep working."""

from backupctl.targets.restic_snapshots import (
    ENVELOPE_FORMAT,
    MANIFEST_FILENAME,
    MANIFEST_TAG,
    STREAM_SOURCES,
    ResticSink,
    TeeReader,
    artifact_stdin_filename,
    close_sinks,
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

__all__ = [
    "ENVELOPE_FORMAT",
    "MANIFEST_FILENAME",
    "MANIFEST_TAG",
    "STREAM_SOURCES",
    "ResticSink",
    "TeeReader",
    "artifact_stdin_filename",
    "close_sinks",
    "manifest_envelope",
    "manifest_tags",
    "open_manifest_sinks",
    "open_sinks",
    "read_manifest_snapshot",
    "read_restic_manifest",
    "restic_snapshot_for",
    "restore_files_from_restic",
    "stdin_filename",
    "verify_restic_copy",
]
