"""restic snapshots of backupctl snapshots: tee'd stdin sinks, tags, the signed manifest.

restic gets the *plain* stream so that it can deduplicate (and encrypts with its own key):
database sources are tee'd from the one dump that also feeds the age pipeline, so the source
is read once; file sources use `restic backup PATH` (incremental). A restic failure never
breaks the blob targets' copy: its sink is dropped and the target marked failed.
Snapshots are tagged `backupctl`, `policy=...`, `snapshot=...`, `source=...`.

A restic repository is self-describing like a blob target: every backupctl snapshot also stores
its signed manifest there, as one more stdin snapshot (`backupctl-manifest.json`, tagged
`manifest` instead of `source=...`) holding the manifest bytes and their Ed25519 signature.
So a source may go to restic *only* (no age-encrypted copy): verify and restore still have a
signed statement of what each plain stream must hash to. The manifest's restic process is
started when the backup starts and only receives its bytes at the end: the key derivation
(~0.8 s per restic call) overlaps with the dump instead of adding to the run time.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from backupctl.core.digests import algorithm_of
from backupctl.core.pipeline import CHUNK, HashingReader
from backupctl.errors import IntegrityError
from backupctl.targets.snapshot_files import SignedManifest, authenticate
from backupctl.targets.stream_sinks import StreamSink, open_sink

STREAM_SOURCES = ("postgres", "mysql", "sqlite")
MANIFEST_FILENAME = "backupctl-manifest.json"
MANIFEST_TAG = "manifest"
ENVELOPE_FORMAT = "backupctl-restic-manifest"


def stdin_filename(source: str, extension: str) -> str:
    return f"{source}.{extension}"


def artifact_stdin_filename(artifact: Any) -> str:
    """The name a stream source's plain dump has in restic (`shop-db.pgdump` for the artifact
    `shop-db.pgdump.zst.age`)."""
    # After the artifact's own name, which may hold a '.' ("shop-db.secrets.json.zst.age").
    return stdin_filename(artifact.source, artifact.file[len(artifact.source) + 1 :].split(".")[0])


def open_sinks(
    repositories: dict[str, Any], filename: str, tags: list[str], *, background: bool = False
) -> list[StreamSink]:
    """One `restic backup --stdin` per repository, started now (see stream_sinks)."""
    return [
        open_sink(name, repository.stdin_writer(filename, tags, full_id=False, background=background))
        for name, repository in repositories.items()
    ]


def manifest_tags(policy: str, snapshot_id: str) -> list[str]:
    from backupctl.targets.restic import tags_for

    return [*tags_for(policy, snapshot_id), MANIFEST_TAG]


def open_manifest_sinks(repositories: dict[str, Any], policy: str, snapshot_id: str) -> list[StreamSink]:
    """Start one `restic backup --stdin` per repository for the snapshot's manifest; it waits for
    its bytes (`write_manifest_sinks`) while the dumps run. A sink that failed to start carries
    its error. These processes run at a lower CPU priority: they have minutes to derive their
    key and should not take CPU from the dump while doing it."""
    return open_sinks(repositories, MANIFEST_FILENAME, manifest_tags(policy, snapshot_id), background=True)


def manifest_envelope(manifest_bytes: bytes, signature: bytes) -> bytes:
    """The manifest file stored in restic: the exact signed bytes plus the signature."""
    envelope = {
        "format": ENVELOPE_FORMAT,
        "version": 1,
        "manifest": base64.b64encode(manifest_bytes).decode(),
        "signature": signature.decode().strip(),
    }
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode()


def read_restic_manifest(
    repository: Any, policy: str, snapshot_id: str, trusted: list[str]
) -> SignedManifest | None:
    """The authenticated manifest a repository holds for a snapshot (a stored.SignedManifest),
    or None when it holds none (snapshots made before backupctl stored manifests in restic).
    Raises IntegrityError when one is there but does not authenticate."""
    found = repository.snapshots(manifest_tags(policy, snapshot_id))
    if not found:
        return None
    return read_manifest_snapshot(repository, found[-1].id, policy, snapshot_id, trusted)


def read_manifest_snapshot(
    repository: Any, restic_id: str, policy: str, snapshot_id: str, trusted: list[str]
) -> SignedManifest:
    """Read and authenticate the manifest stored in restic snapshot `restic_id`."""
    with repository.dump(restic_id, MANIFEST_FILENAME) as stream:
        data = stream.read(32 << 20)
    where = f"on restic repository {repository.name}"
    try:
        envelope = json.loads(data)
        if envelope.get("format") != ENVELOPE_FORMAT:
            raise ValueError("not a backupctl manifest envelope")
        raw = base64.b64decode(envelope["manifest"], validate=True)
        signature = str(envelope["signature"]).encode()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise IntegrityError(
            f"snapshot {snapshot_id} {where}: the stored manifest is damaged ({error})"
        ) from None
    return authenticate(raw, signature, trusted, policy, snapshot_id, where)


def verify_restic_copy(
    repository: Any, policy: str, snapshot_id: str, artifacts: list[Any], read_data_subset: str = "5%"
) -> list[str]:
    """Problems with a restic copy: snapshots present, plain streams equal the manifest's digest
    (a full `restic dump`), and `restic check --read-data-subset`."""
    from backupctl.targets.restic import tags_for

    problems: list[str] = []
    for artifact in artifacts:
        found = repository.snapshots(tags_for(policy, snapshot_id, artifact.source))
        if not found:
            problems.append(
                f"{artifact.source} on {repository.name}: no restic snapshot tagged with this snapshot"
            )
            continue
        if artifact.source_type not in STREAM_SOURCES:
            continue
        with repository.dump(found[-1].id, artifact_stdin_filename(artifact)) as stream:
            reader = HashingReader(stream, algorithm=algorithm_of(artifact.plain_digest))
            while reader.read(CHUNK):
                pass
        if reader.digest() != artifact.plain_digest or reader.count != artifact.plain_bytes:
            problems.append(
                f"{artifact.source} on {repository.name}: restic's copy differs from the manifest"
            )
    problems += [f"{repository.name}: {problem}" for problem in repository.check(read_data_subset)]
    return problems


def restic_snapshot_for(repository: Any, policy: str, snapshot_id: str, source: str) -> str:
    from backupctl.targets.restic import tags_for

    found = repository.snapshots(tags_for(policy, snapshot_id, source))
    if not found:
        raise IntegrityError(
            f"{repository.name} holds no restic snapshot of {source} for snapshot {snapshot_id}"
        )
    return str(found[-1].id)


def restore_files_from_restic(
    repository: Any, restic_snapshot: str, source_path: str, destination: Path
) -> None:
    """Restore a file source's tree into `destination`.

    restic restores absolute paths below --target (0.14 has no `SNAP:subfolder`), so restore
    into a scratch directory beside the destination (same file system) and move the tree's
    content into place.
    """
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.restic-", dir=destination.parent))
    try:
        repository.restore(restic_snapshot, scratch)
        tree = scratch / source_path.lstrip("/")
        if not tree.is_dir():
            raise IntegrityError(f"restic snapshot {restic_snapshot[:8]} does not contain {source_path}")
        for child in tree.iterdir():
            target = destination / child.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            child.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
