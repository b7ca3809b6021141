"""age encryption keys (pyrage) and Ed25519 manifest signatures (cryptography).

Key files written by `backupctl keys generate` (all 0600, in the state dir's keys/):
  age-identity.txt      the private age identity: store it OFFLINE, needed to restore
  age-recipient.txt     the public recipient: goes into policies
  signing-ed25519.key   this host's private signing key (PEM, PKCS#8)
  signing-ed25519.pub   its public key (base64 raw 32 bytes), trusted by verify
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyrage import x25519

from backupctl.errors import ConfigError, IntegrityError

IDENTITY_FILE = "age-identity.txt"
RECIPIENT_FILE = "age-recipient.txt"
SIGNING_KEY_FILE = "signing-ed25519.key"
SIGNING_PUB_FILE = "signing-ed25519.pub"


# --------------------------------------------------------------------------- age
def parse_recipients(entries: list[str]) -> list[x25519.Recipient]:
    """Recipients from `age1...` strings or `file:/path` recipients files. Raises ConfigError."""
    recipients: list[x25519.Recipient] = []
    for entry in entries:
        if entry.startswith("file:"):
            path = Path(entry[len("file:") :])
            try:
                lines = path.read_text().splitlines()
            except OSError as error:
                raise ConfigError(f"cannot read recipients file {path}: {error.strerror}") from None
            keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
            if not keys:
                raise ConfigError(f"recipients file {path} holds no key")
            recipients.extend(_recipient(key, f"in {path}") for key in keys)
        else:
            recipients.append(_recipient(entry, ""))
    return recipients


def _recipient(text: str, where: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception:  # pyrage raises its own RecipientError types
        shown = text if text.startswith("age1") else text[:12] + "..."
        raise ConfigError(
            f"'{shown}' {where} is not an age X25519 recipient (age1...); "
            "create one with `backupctl keys generate` or `age-keygen`".replace("  ", " ")
        ) from None


def parse_identities(text: str) -> list[x25519.Identity]:
    """Identities from the content of an age identity file (comments allowed)."""
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(x25519.Identity.from_str(line))
            except Exception:
                raise ConfigError("the age identity is malformed (AGE-SECRET-KEY-... line)") from None
    if not identities:
        raise ConfigError("no age identity (AGE-SECRET-KEY-...) found in the identity secret")
    return identities


# --------------------------------------------------------------------------- Ed25519
@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public_b64(self) -> str:
        return public_key_b64(self.private.public_key())

    def sign(self, data: bytes) -> bytes:
        return base64.b64encode(self.private.sign(data)) + b"\n"


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def fingerprint(public_b64: str) -> str:
    return "SHA256:" + base64.b64encode(
        hashlib.sha256(base64.b64decode(public_b64)).digest()
    ).decode().rstrip("=")


def load_signing_key(keys_dir: Path) -> SigningKey:
    path = keys_dir / SIGNING_KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no signing key at {path}: run `backupctl keys generate` once on this host"
        ) from None
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return SigningKey(key)


RETIRED_SIGNING_FILE = "signing-trusted.pub"  # written by `keys rotate` (core/keyrotation.py)


def retired_signing_keys(directory: Path) -> list[str]:
    """Public signing keys retired by `rotate_keys` (still trusted for old manifests)."""
    path = directory / RETIRED_SIGNING_FILE
    if not path.exists():
        return []
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def trusted_public_keys(keys_dir: Path, extra: list[str]) -> list[str]:
    """This host's public signing key (if any), the policy's/caller's trusted keys, and the keys
    `keys rotate` retired on this host (so manifests they signed keep verifying)."""
    keys = list(extra)
    path = keys_dir / SIGNING_PUB_FILE
    if path.exists():
        keys.insert(0, path.read_text().strip())
    return keys + [key for key in retired_signing_keys(keys_dir) if key not in keys]


def verify_signature(data: bytes, signature_b64: bytes, trusted: list[str]) -> str:
    """Return the fingerprint of the trusted key that signed `data`, else raise IntegrityError."""
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except ValueError:
        raise IntegrityError("manifest signature is not valid base64") from None
    if not trusted:
        raise IntegrityError(
            "no trusted signing key: run `backupctl keys generate` or list the backup host's key "
            "in the policy's signing.trusted_keys"
        )
    for candidate in trusted:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(candidate))
        try:
            public.verify(signature, data)
        except InvalidSignature:
            continue
        return fingerprint(candidate)
    raise IntegrityError(
        "manifest signature does not verify with any trusted key (manifest edited or forged)"
    )


# --------------------------------------------------------------------------- key generation
@dataclass
class GeneratedKeys:
    directory: Path
    recipient: str
    identity_file: Path
    signing_public: str
    created: list[Path]


def generate_keys(directory: Path, *, force: bool = False) -> GeneratedKeys:
    """Create an age identity/recipient pair and an Ed25519 signing key, files 0600.

    Existing keys are never overwritten unless `force`: losing an identity makes every backup
    encrypted to it unreadable.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity_path = directory / IDENTITY_FILE
    created: list[Path] = []
    if identity_path.exists() and not force:
        recipient = (directory / RECIPIENT_FILE).read_text().strip()
    else:
        identity = x25519.Identity.generate()
        recipient = str(identity.to_public())
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _write_private(identity_path, f"# created: {now}\n# public key: {recipient}\n{identity}\n")
        _write_private(directory / RECIPIENT_FILE, recipient + "\n")
        created += [identity_path, directory / RECIPIENT_FILE]
    signing_path = directory / SIGNING_KEY_FILE
    if signing_path.exists() and not force:
        signing_public = load_signing_key(directory).public_b64
    else:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(signing_path, pem.decode())
        signing_public = public_key_b64(private.public_key())
        _write_private(directory / SIGNING_PUB_FILE, signing_public + "\n")
        created += [signing_path, directory / SIGNING_PUB_FILE]
    return GeneratedKeys(directory, recipient, identity_path, signing_public, created)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
