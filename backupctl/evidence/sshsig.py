"""OpenSSH SSHSIG signatures (PROTOCOL.sshsig) made and checked with `cryptography`.

`ssh-keygen -Y verify -f allowed_signers -I IDENTITY -n NAMESPACE -s FILE.sig < FILE` accepts
what `sign` writes, and `verify` accepts what `ssh-keygen -Y sign` writes with an Ed25519 key:
an auditor needs nothing but OpenSSH (>= 8.1) to check a bundle.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from backupctl.errors import IntegrityError

MAGIC = b"SSHSIG"
NAMESPACE = "backupctl-evidence"
IDENTITY = "backupctl-evidence"  # the principal in allowed_signers
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise IntegrityError("SSHSIG: truncated signature")
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise IntegrityError("SSHSIG: truncated signature")
    return blob[offset + 4 : end], end


def public_wire(key: Ed25519PublicKey) -> bytes:
    """The key in SSH wire format (what an `ssh-ed25519 AAAA...` line base64-encodes)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(b"ssh-ed25519") + _string(raw)


def allowed_signers_line(key: Ed25519PublicKey, identity: str = IDENTITY) -> str:
    """The `allowed_signers` line that lets `ssh-keygen -Y verify` trust this key for bundles."""
    wire = base64.b64encode(public_wire(key)).decode()
    return f'{identity} namespaces="{NAMESPACE}" ssh-ed25519 {wire}'


def _signed_data(message: bytes, namespace: str) -> bytes:
    digest = hashlib.sha512(message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(b"sha512") + _string(digest)


def sign(private: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE) -> str:
    """An armored SSHSIG signature of `message` (the text of a `.sig` file)."""
    signature = private.sign(_signed_data(message, namespace))
    blob = (
        MAGIC
        + struct.pack(">I", 1)
        + _string(public_wire(private.public_key()))
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(b"ssh-ed25519") + _string(signature))
    )
    encoded = base64.b64encode(blob).decode()
    lines = [encoded[start : start + 70] for start in range(0, len(encoded), 70)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def verify(armored: str, message: bytes, namespace: str = NAMESPACE) -> Ed25519PublicKey:
    """Check an armored SSHSIG signature of `message`; return the signer's public key.

    Raises IntegrityError when the signature is malformed, for another namespace, or wrong.
    The caller decides whether it trusts the returned key.
    """
    text = armored.strip()
    if not (text.startswith(_BEGIN) and text.endswith(_END)):
        raise IntegrityError("SSHSIG: not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(text[len(_BEGIN) : -len(_END)].split()), validate=True)
    except ValueError:
        raise IntegrityError("SSHSIG: signature is not valid base64") from None
    if not blob.startswith(MAGIC) or blob[6:10] != struct.pack(">I", 1):
        raise IntegrityError("SSHSIG: unknown magic or version")
    public, offset = _read_string(blob, 10)
    signed_namespace, offset = _read_string(blob, offset)
    _reserved, offset = _read_string(blob, offset)
    hash_algorithm, offset = _read_string(blob, offset)
    signature_blob, offset = _read_string(blob, offset)
    if signed_namespace.decode() != namespace:
        raise IntegrityError(f"SSHSIG: signed for namespace {signed_namespace.decode()!r}, not {namespace!r}")
    key_type, key_offset = _read_string(public, 0)
    key_raw, _ = _read_string(public, key_offset)
    sig_type, sig_offset = _read_string(signature_blob, 0)
    sig_raw, _ = _read_string(signature_blob, sig_offset)
    if key_type != b"ssh-ed25519" or sig_type != b"ssh-ed25519":
        raise IntegrityError("SSHSIG: only ssh-ed25519 signatures are supported")
    algorithm = hash_algorithm.decode()
    if algorithm not in ("sha512", "sha256"):
        raise IntegrityError(f"SSHSIG: unknown hash algorithm {algorithm!r}")
    digest = hashlib.new(algorithm, message).digest()
    data = MAGIC + _string(signed_namespace) + _string(b"") + _string(hash_algorithm) + _string(digest)
    key = Ed25519PublicKey.from_public_bytes(key_raw)
    try:
        key.verify(sig_raw, data)
    except InvalidSignature:
        raise IntegrityError("SSHSIG: the signature does not match the signed file") from None
    return key


def allowed_signers_for(public_b64: str) -> str:
    """The allowed-signers line for a raw Ed25519 public key in base64 (as `keys` prints it)."""
    return allowed_signers_line(Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)))
