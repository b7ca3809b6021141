"""`backupctl keys rotate`: new keys for new backups, old snapshots stay readable and verifiable.

In the keys directory:
- age: a new identity is *appended* to age-identity.txt (one file, every identity: verify,
  restore and drills decrypt old and new snapshots alike), age-recipient.txt is rewritten to hold
  only the new recipient (policies that name it encrypt new backups to the new key only), and the
  old recipient goes to age-recipients.retired.txt with the date.
- signing: signing-ed25519.key/.pub are replaced; the old public key is appended to
  signing-trusted.pub, which `trusted_public_keys` reads, so old manifests keep verifying.
Every file is written to a temporary name and renamed: an interruption leaves the old keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from backupctl.core.crypto import (
    IDENTITY_FILE,
    RECIPIENT_FILE,
    RETIRED_SIGNING_FILE,
    SIGNING_KEY_FILE,
    SIGNING_PUB_FILE,
    load_signing_key,
    public_key_b64,
)
from backupctl.errors import ConfigError

RETIRED_RECIPIENTS_FILE = "age-recipients.retired.txt"


@dataclass
class Rotation:
    directory: Path
    old_recipient: str | None = None
    new_recipient: str | None = None
    old_signing_public: str | None = None
    new_signing_public: str | None = None
    changed: list[Path] = field(default_factory=list)


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600) through a temporary file and a rename."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _append(path: Path, text: str) -> None:
    existing = path.read_text() if path.exists() else ""
    _replace(path, existing + text)


def rotate_keys(directory: Path, *, age: bool = True, signing: bool = True) -> Rotation:
    """Rotate the age key pair and/or the signing key in `directory`. Raises ConfigError when
    there is nothing to rotate (run `keys generate` first)."""
    if not (directory / IDENTITY_FILE).exists() or not (directory / SIGNING_KEY_FILE).exists():
        raise ConfigError(f"no keys in {directory} to rotate: run `backupctl keys generate` first")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = Rotation(directory)
    if age:
        result.old_recipient = (directory / RECIPIENT_FILE).read_text().strip()
        identity = x25519.Identity.generate()
        result.new_recipient = str(identity.to_public())
        # Identity first (a crash after it leaves an extra identity, never a missing one).
        _append(
            directory / IDENTITY_FILE,
            f"# rotated in: {now}\n# public key: {result.new_recipient}\n{identity}\n",
        )
        _append(directory / RETIRED_RECIPIENTS_FILE, f"# retired: {now}\n{result.old_recipient}\n")
        _replace(directory / RECIPIENT_FILE, result.new_recipient + "\n")
        result.changed += [
            directory / IDENTITY_FILE,
            directory / RECIPIENT_FILE,
            directory / RETIRED_RECIPIENTS_FILE,
        ]
    if signing:
        result.old_signing_public = load_signing_key(directory).public_b64
        _append(directory / RETIRED_SIGNING_FILE, f"# retired: {now}\n{result.old_signing_public}\n")
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _replace(directory / SIGNING_KEY_FILE, pem.decode())
        result.new_signing_public = public_key_b64(private.public_key())
        _replace(directory / SIGNING_PUB_FILE, result.new_signing_public + "\n")
        result.changed += [
            directory / SIGNING_KEY_FILE,
            directory / SIGNING_PUB_FILE,
            directory / RETIRED_SIGNING_FILE,
        ]
    return result


