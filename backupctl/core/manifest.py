"""Snapshot ids and the per-snapshot manifest (versioned JSON, signed with Ed25519).

The manifest makes every target self-describing: the catalog can be rebuilt from any one
target's manifests (`backupctl catalog rebuild`). Format reference: docs/formats.md.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from backupctl.errors import IntegrityError

MANIFEST_FORMAT = "backupctl-manifest"
MANIFEST_VERSION = 2  # 2: plain_digest (algorithm:hex) instead of plain_sha256
READABLE_VERSIONS = (1, 2)


def new_snapshot_id(now: datetime | None = None) -> str:
    """Time-sortable, readable, unique: `20261121T134512Z-3f9a1c`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def snapshot_time(snapshot_id: str) -> datetime:
    return datetime.strptime(snapshot_id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def artifact_file_name(source: str, extension: str) -> str:
    return f"{source}.{extension}.zst.age"


# The password hashes of a database source's roles/accounts (`roles: {passwords: true}`) are an
# artifact of their own, `<source>.secrets`: encrypted like a dump, never in the manifest. A '.'
# is not allowed in source names, so the name cannot collide with a source's.
SECRETS_FORMAT = "role-secrets"
SECRETS_EXTENSION = "json"


def secrets_source(source: str) -> str:
    """The artifact name (`ArtifactRecord.source`) of the secrets of source `source`."""
    return f"{source}.secrets"


def owner_source(artifact_source: str) -> str:
    """The policy source an artifact belongs to: itself, or the one whose secrets it holds."""
    return artifact_source.split(".", 1)[0]


@dataclass
class ArtifactRecord:
    source: str
    source_type: str
    file: str
    format: str
    plain_bytes: int
    plain_digest: str  # `algorithm:hex` of the plain stream (core.digests; blake3 since version 2)
    stored_bytes: int
    stored_sha256: str
    facts: dict[str, Any] = field(default_factory=dict)
    compression: str = "zstd"
    encryption: str = "age-x25519"

    @property
    def is_secrets(self) -> bool:
        """A secrets artifact (password hashes of a source's roles), not a restorable dump."""
        return self.format == SECRETS_FORMAT


@dataclass
class Manifest:
    snapshot_id: str
    policy: str
    policy_sha256: str
    host: str
    backupctl_version: str
    started_at: str
    finished_at: str
    recipients: list[str]
    signing_public_key: str
    artifacts: list[ArtifactRecord]
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise IntegrityError(f"manifest is not valid JSON: {error}") from None
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
            raise IntegrityError("not a backupctl manifest")
        version = raw.get("version")
        if version not in READABLE_VERSIONS:
            raise IntegrityError(
                f"manifest version {version} is not supported by this backupctl "
                f"(reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade backupctl"
            )
        try:
            items = raw.pop("artifacts")
            if version == 1:  # the plain digest was sha256, in a field of its own
                items = [_artifact_from_v1(item) for item in items]
            artifacts = [ArtifactRecord(**item) for item in items]
            return cls(artifacts=artifacts, **raw)
        except (TypeError, KeyError) as error:
            raise IntegrityError(f"manifest is missing or has unexpected fields: {error}") from None

    def artifact(self, source: str) -> ArtifactRecord:
        for artifact in self.artifacts:
            if artifact.source == source:
                return artifact
        known = ", ".join(artifact.source for artifact in self.artifacts)
        from backupctl.errors import ConfigError

        raise ConfigError(f"snapshot {self.snapshot_id} has no source '{source}' (it has: {known})")

    @property
    def plain_bytes(self) -> int:
        return sum(artifact.plain_bytes for artifact in self.artifacts)

    @property
    def stored_bytes(self) -> int:
        return sum(artifact.stored_bytes for artifact in self.artifacts)


def _artifact_from_v1(item: dict[str, Any]) -> dict[str, Any]:
    """A version 1 artifact entry in version 2's terms (the signature covers the raw bytes)."""
    converted = dict(item)
    if "plain_sha256" in converted:
        converted["plain_digest"] = "sha256:" + str(converted.pop("plain_sha256"))
    return converted


def utc_now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
