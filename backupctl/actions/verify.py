"""`backupctl verify POLICY SNAPSHOT`: prove a stored snapshot is intact and decryptable.

Per target: the manifest signature; per artifact: present, size, sha256 of the stored bytes,
and a full decrypt + decompress pass (nothing written) whose plain size and sha256 must equal
the manifest's. Every problem names the artifact and the check that failed.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from backupctl.actions.access import load_identities, open_catalog, trusted_keys
from backupctl.actions.stored import key_of, read_manifest
from backupctl.core.digests import algorithm_of
from backupctl.core.manifest import ArtifactRecord
from backupctl.core.pipeline import decrypt_stream
from backupctl.errors import IntegrityError, TargetError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.base import BlobTarget, build_target


@dataclass
class ArtifactCheck:
    file: str
    checks: dict[str, str] = field(default_factory=dict)  # check -> "ok" or the problem

    @property
    def ok(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


@dataclass
class TargetVerification:
    target: str
    snapshot_id: str
    signature: str = "not checked"
    artifacts: list[ArtifactCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "snapshot_id": self.snapshot_id,
            "ok": self.ok,
            "signature": self.signature,
            "artifacts": [{"file": a.file, "ok": a.ok, "checks": a.checks} for a in self.artifacts],
            "problems": self.problems,
        }


def verify_snapshot(
    settings: Settings,
    policy: Policy,
    reference: str,
    *,
    target_names: list[str] | None = None,
    identity_file: Path | None = None,
) -> list[TargetVerification]:
    """Verify a snapshot on the given targets (default: every target holding a complete copy)."""
    catalog = open_catalog(settings)
    snapshot = catalog.resolve(policy.name, reference)
    identities = load_identities(policy, identity_file)
    names = target_names or [name for name, status in snapshot.targets.items() if status == "complete"]
    trusted = trusted_keys(settings, policy)
    results = []
    for name in names:
        if policy.target(name).type == "restic":
            result = _verify_restic(settings, policy, snapshot, name, trusted)
            catalog.record_verification(snapshot.id, name, result.ok, result.problems)
            results.append(result)
            continue
        target = build_target(policy.target(name))
        try:
            result = verify_on_target(target, policy.name, snapshot.id, trusted, identities)
        finally:
            target.close()
        catalog.record_verification(snapshot.id, name, result.ok, result.problems)
        results.append(result)
    return results


def verify_on_target(
    target: BlobTarget, policy: str, snapshot_id: str, trusted: list[str], identities: list[Any]
) -> TargetVerification:
    result = TargetVerification(target.name, snapshot_id)
    try:
        signed = read_manifest(target, policy, snapshot_id, trusted)
    except (IntegrityError, TargetError) as error:
        result.signature = str(error)
        result.problems.append(f"manifest: {error}")
        return result
    result.signature = f"ok (signed by {signed.signer})"
    present = {info.key: info.size for info in target.list_keys(f"{policy}/{snapshot_id}/")}
    for artifact in signed.manifest.artifacts:
        check = _check_artifact(
            target, key_of(policy, snapshot_id, artifact.file), artifact, present, identities
        )
        result.artifacts.append(check)
        for name, outcome in check.checks.items():
            if outcome != "ok":
                result.problems.append(f"{artifact.file} on {target.name}: {name}: {outcome}")
    return result


def _check_artifact(
    target: BlobTarget, key: str, artifact: ArtifactRecord, present: dict[str, int], identities: list[Any]
) -> ArtifactCheck:
    check = ArtifactCheck(artifact.file)
    if key not in present:
        check.checks["present"] = "missing from the target"
        return check
    check.checks["present"] = "ok"
    size = present[key]
    check.checks["size"] = (
        "ok"
        if size == artifact.stored_bytes
        else (f"{size} bytes stored, manifest says {artifact.stored_bytes} (truncated or replaced)")
    )
    try:
        with target.reader(key) as handle, _restorability(artifact, check) as sink:
            algorithm = algorithm_of(artifact.plain_digest)
            stats = decrypt_stream(handle, sink, identities, plain_algorithm=algorithm)
        decrypt_error = None
    except IntegrityError as error:
        decrypt_error = str(error)
        stats = None
    except TargetError as error:
        check.checks["read"] = str(error)
        return check
    if stats is not None:
        check.checks["sha256"] = (
            "ok"
            if stats.stored_sha256 == artifact.stored_sha256
            else ("stored bytes do not match the manifest's sha256 (modified)")
        )
        check.checks["decrypt"] = "ok"
        plain_ok = stats.plain_digest == artifact.plain_digest and stats.plain_bytes == artifact.plain_bytes
        check.checks["plain"] = "ok" if plain_ok else "decrypted content differs from the manifest"
    else:
        # Decryption stopped early; hash the stored bytes separately so both facts are reported.
        from backupctl.core.pipeline import sha256_of

        with target.reader(key) as handle:
            digest, _ = sha256_of(handle)
        check.checks["sha256"] = (
            "ok"
            if digest == artifact.stored_sha256
            else ("stored bytes do not match the manifest's sha256 (modified)")
        )
        check.checks["decrypt"] = decrypt_error or "failed"
    return check


@contextmanager
def _restorability(artifact: ArtifactRecord, check: ArtifactCheck) -> Iterator[BinaryIO | None]:
    """For a files artifact, a sink that checks every tar member with restore's own rule
    (sources/targuard.py) and records the outcome as the "restorable" check; else None."""
    if artifact.format != "tar":
        yield None
        return
    from backupctl.sources.targuard import tar_checking_sink

    with tar_checking_sink() as (sink, finish):
        try:
            yield sink
        finally:
            problems = finish()
            check.checks["restorable"] = "; ".join(problems) if problems else "ok"


def _verify_restic(
    settings: Settings, policy: Policy, snapshot: Any, name: str, trusted: list[str]
) -> TargetVerification:
    """A restic copy: the signed manifest (stored in the repository itself; from a blob target
    for snapshots made before manifests went to restic) says what the plain streams must hash
    to; restic dumps them in full and checks a sample of its pack files."""
    from backupctl.actions.restic_side import restic_copy_manifest, verify_restic_copy
    from backupctl.policy.schema import ResticTarget
    from backupctl.targets.restic import ResticRepository

    result = TargetVerification(name, snapshot.id)
    try:
        config = policy.target(name)
        repository = ResticRepository(typing.cast(ResticTarget, config))
        signed, origin = restic_copy_manifest(repository, policy, snapshot, trusted)
        result.signature = f"ok (manifest from {origin}, signed by {signed.signer})"
        sources = {s.name for s in policy.sources if config in policy.targets_for(s)}
        artifacts = [a for a in signed.manifest.artifacts if a.source in sources]
        result.problems += verify_restic_copy(repository, policy.name, snapshot.id, artifacts)
        for artifact in artifacts:
            bad = [p for p in result.problems if p.startswith(f"{artifact.source} ")]
            result.artifacts.append(ArtifactCheck(artifact.source, {"restic": bad[0] if bad else "ok"}))
    except (IntegrityError, TargetError) as error:
        result.problems.append(f"{name}: {error}")
    return result
