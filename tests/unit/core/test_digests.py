"""Labelled digests (`algorithm:hex`) and reading version 1 manifests (sha256 plain digests)."""

import hashlib
import json

import pytest

from backupctl.core.digests import PLAIN_ALGORITHM, algorithm_of, digest_of, new_hasher
from backupctl.core.manifest import MANIFEST_VERSION, ArtifactRecord, Manifest
from backupctl.errors import IntegrityError

# BLAKE3 test vector: the empty input (the reference implementation's test_vectors.json).
BLAKE3_EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def test_plain_digests_are_blake3_and_say_so() -> None:
    assert PLAIN_ALGORITHM == "blake3"
    assert digest_of(b"") == f"blake3:{BLAKE3_EMPTY}"
    assert digest_of(b"abc", "sha256") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    hasher = new_hasher("blake3")
    for part in (b"a", b"b", b"c"):
        hasher.update(part)
    assert f"blake3:{hasher.hexdigest()}" == digest_of(b"abc")


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("0" * 64, "does not say its algorithm"),
        ("md5:ab", "unknown digest algorithm 'md5'"),
        ("sha256:", "algorithm"),
    ],
)
def test_unusable_digests_are_integrity_errors(digest: str, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        algorithm_of(digest)


def _manifest_dict(version: int, artifact: dict[str, object]) -> dict[str, object]:
    return {
        "format": "backupctl-manifest", "version": version, "snapshot_id": "20260101T000000Z-aaaaaa",
        "policy": "p", "policy_sha256": "0" * 64, "host": "h", "backupctl_version": "0",
        "started_at": "2026-01-01T00:00:00.000000Z", "finished_at": "2026-01-01T00:00:01.000000Z",
        "recipients": [], "signing_public_key": "k", "artifacts": [artifact],
    }  # fmt: skip


def test_version_1_manifest_reads_with_a_sha256_plain_digest() -> None:
    artifact = {
        "source": "db", "source_type": "postgres", "file": "db.pgdump.zst.age", "format": "pgdump",
        "plain_bytes": 3, "plain_sha256": "a" * 64, "stored_bytes": 5, "stored_sha256": "b" * 64,
        "facts": {}, "compression": "zstd", "encryption": "age-x25519",
    }  # fmt: skip
    manifest = Manifest.from_bytes(json.dumps(_manifest_dict(1, artifact)).encode())
    assert manifest.artifacts[0].plain_digest == "sha256:" + "a" * 64
    assert manifest.artifacts[0].stored_sha256 == "b" * 64


def test_new_manifests_are_version_2_and_newer_ones_are_refused() -> None:
    record = ArtifactRecord("db", "postgres", "f", "pgdump", 3, digest_of(b"abc"), 5, "b" * 64)
    fields = {**_manifest_dict(MANIFEST_VERSION, {}), "artifacts": [record]}
    written = json.loads(Manifest(**fields).to_bytes())  # type: ignore[arg-type]
    assert written["version"] == 2 == MANIFEST_VERSION
    assert written["artifacts"][0]["plain_digest"].startswith("blake3:")
    assert "plain_sha256" not in written["artifacts"][0]
    with pytest.raises(IntegrityError, match=r"manifest version 3 is not supported.*reads 1, 2"):
        Manifest.from_bytes(json.dumps({**written, "version": 3}).encode())
