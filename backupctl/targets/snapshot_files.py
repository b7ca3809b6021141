"""A snapshot's files on a blob target: keys, manifest + signature, re-hash, copy, listing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from backupctl.core.crypto import SigningKey, verify_signature
from backupctl.core.manifest import Manifest
from backupctl.core.pipeline import HashingReader, Progress, sha256_of
from backupctl.errors import IntegrityError, TargetError
from backupctl.targets.base import MANIFEST, SIGNATURE, BlobTarget, ReadTiming, snapshot_prefix


def key_of(policy: str, snapshot_id: str, file: str) -> str:
    return snapshot_prefix(policy, snapshot_id) + file


@dataclass
class SignedManifest:
    manifest: Manifest
    raw: bytes
    sha256: str
    signer: str  # fingerprint of the trusted key that signed it


def write_manifest(target: BlobTarget, manifest: Manifest, key: SigningKey) -> str:
    """Store signature first, manifest last (its presence marks the snapshot complete there)."""
    data = manifest.to_bytes()
    with target.writer(key_of(manifest.policy, manifest.snapshot_id, SIGNATURE)) as handle:
        handle.write(key.sign(data))
    with target.writer(key_of(manifest.policy, manifest.snapshot_id, MANIFEST)) as handle:
        handle.write(data)
    stored = read_bytes(target, key_of(manifest.policy, manifest.snapshot_id, MANIFEST))
    if stored != data:
        raise TargetError(f"target {target.name}: manifest read back differs from what was written")
    return hashlib.sha256(data).hexdigest()


def read_bytes(target: BlobTarget, key: str, limit: int = 16 << 20) -> bytes:
    with target.reader(key) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise IntegrityError(f"{key} on target {target.name} is larger than {limit} bytes")
    return data


def read_manifest(target: BlobTarget, policy: str, snapshot_id: str, trusted: list[str]) -> SignedManifest:
    """Fetch and authenticate a manifest. Raises IntegrityError naming what is wrong."""
    raw = read_bytes(target, key_of(policy, snapshot_id, MANIFEST))
    try:
        signature = read_bytes(target, key_of(policy, snapshot_id, SIGNATURE), limit=4096)
    except TargetError:
        raise IntegrityError(
            f"snapshot {snapshot_id} on target {target.name}: manifest signature is missing"
        ) from None
    return authenticate(raw, signature, trusted, policy, snapshot_id, f"on target {target.name}")


def authenticate(
    raw: bytes, signature: bytes, trusted: list[str], policy: str, snapshot_id: str, where: str
) -> SignedManifest:
    """Check a manifest's signature against the trusted keys and that it describes
    `policy/snapshot_id`; `where` ("on target X") goes into every error."""
    try:
        signer = verify_signature(raw, signature, trusted)
    except IntegrityError as error:
        raise IntegrityError(f"snapshot {snapshot_id} {where}: {error}") from None
    manifest = Manifest.from_bytes(raw)
    if manifest.snapshot_id != snapshot_id or manifest.policy != policy:
        raise IntegrityError(
            f"manifest at {policy}/{snapshot_id} {where} describes {manifest.policy}/{manifest.snapshot_id}"
        )
    return SignedManifest(manifest, raw, hashlib.sha256(raw).hexdigest(), signer)


def rehash(target: BlobTarget, key: str, timing: ReadTiming | None = None) -> tuple[str, int]:
    with target.reader(key, timing) as handle:
        return sha256_of(handle)


def confirm_stored(target: BlobTarget, key: str, sha256: str, size: int) -> None:
    """Prove an object landed intact: re-read and re-hash it, or — for targets that verify
    checksums on arrival themselves (`verifies_writes`, e.g. S3) — check its listed size.
    Raises TargetError."""
    if getattr(target, "verifies_writes", False):
        listed = {info.key: info.size for info in target.list_keys(key)}
        if listed.get(key) != size:
            raise TargetError(
                f"target {target.name}: {key} is {listed.get(key)} bytes after upload, expected {size}"
            )
        return
    digest, stored = rehash(target, key)
    if digest != sha256 or stored != size:
        raise TargetError(f"target {target.name}: {key} read back differs from what was written")


def copy_artifact(
    origin: BlobTarget,
    destination: BlobTarget,
    key: str,
    sha256: str,
    size: int,
    *,
    progress: Progress | None = None,
) -> None:
    """Copy one stored object between targets: hashed in flight (the origin's bytes must match the
    manifest) and confirmed on arrival (`confirm_stored`). Raises IntegrityError / TargetError.

    `progress` gets the bytes copied (`size` of them in all)."""
    with origin.reader(key) as handle, destination.writer(key) as sink:
        reader = HashingReader(handle, progress)
        while chunk := reader.read(1 << 20):
            sink.write(chunk)
        if reader.hexdigest() != sha256:
            raise IntegrityError(f"{key} on {origin.name} does not match its manifest")
    confirm_stored(destination, key, sha256, size)


def list_snapshot_ids(target: BlobTarget, policy: str) -> list[str]:
    """Snapshot ids on a target that have a manifest (i.e. were completed there), oldest first."""
    ids = set()
    for info in target.list_keys(f"{policy}/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST:
            ids.add(parts[1])
    return sorted(ids)
