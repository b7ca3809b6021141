"""`backupctl verify POLICY SNAPSHOT`: prove a stored snapshot is intact and decryptable.

Per target: the manifest signature; per artifact: present, size, sha256 of the stored bytes,
and a full decrypt + decompress pass (nothing written) whose plain size and sha256 must equal
the manifest's. Every problem names the artifact and the check that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.actions.access import load_identities, manifest_for, open_catalog, trusted_keys
from backupctl.catalog.store import SnapshotView
from backupctl.errors import ConfigError, IntegrityError, TargetError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.store import ArtifactCheck, SnapshotStore, open_store

__all__ = ["ArtifactCheck", "TargetVerification", "verify_on_store", "verify_snapshot"]


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
        config = policy.target(name)
        sources = {s.name for s in policy.sources if config in policy.targets_for(s)}
        store = open_store(config)
        try:
            result = verify_on_store(store, policy, snapshot, trusted, identities, sources)
        finally:
            store.close()
        catalog.record_verification(snapshot.id, name, result.ok, result.problems)
        results.append(result)
    return results


def verify_on_store(
    store: SnapshotStore,
    policy: Policy,
    snapshot: SnapshotView,
    trusted: list[str],
    identities: list[Any],
    sources: set[str],
) -> TargetVerification:
    """The signed manifest (the store's own; for old restic copies, a blob target's), then
    whatever the store checks of its copy (`SnapshotStore.check_artifacts`)."""
    result = TargetVerification(store.name, snapshot.id)
    try:
        signed, elsewhere = manifest_for(store, policy, snapshot, trusted)
    except (IntegrityError, TargetError, ConfigError) as error:
        result.signature = str(error)
        result.problems.append(f"manifest: {error}")
        return result
    origin = elsewhere or store.manifest_origin
    result.signature = f"ok ({f'manifest from {origin}, ' if origin else ''}signed by {signed.signer})"
    try:
        result.artifacts, problems = store.check_artifacts(
            policy.name, snapshot.id, signed.manifest, sources, identities
        )
    except (IntegrityError, TargetError) as error:
        problems = [f"{store.name}: {error}"]
    result.problems += problems
    return result

