"""SSHSIG interop with the real ssh-keygen, both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backupctl.errors import IntegrityError
from backupctl.evidence import sshsig


def test_ssh_keygen_verifies_ours(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    message = b"abc  file\n"
    (tmp_path / "m.sig").write_text(sshsig.sign(key, message))
    (tmp_path / "signers").write_text(sshsig.allowed_signers_line(key.public_key()) + "\n")
    args = [
        "ssh-keygen",
        "-Y",
        "verify",
        "-f",
        str(tmp_path / "signers"),
        "-I",
        sshsig.IDENTITY,
        "-n",
        sshsig.NAMESPACE,
        "-s",
        str(tmp_path / "m.sig"),
    ]
    assert subprocess.run(args, input=message, capture_output=True, check=False).returncode == 0
    assert subprocess.run(args, input=message + b"x", capture_output=True, check=False).returncode != 0


def test_we_verify_ssh_keygen(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    (tmp_path / "id").write_bytes(pem)
    (tmp_path / "id").chmod(0o600)
    (tmp_path / "data").write_bytes(b"hello\n")
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-Y",
            "sign",
            "-f",
            str(tmp_path / "id"),
            "-n",
            sshsig.NAMESPACE,
            str(tmp_path / "data"),
        ],
        check=True,
        capture_output=True,
    )
    armored = (tmp_path / "data.sig").read_text()
    signer = sshsig.verify(armored, b"hello\n")
    assert sshsig.public_wire(signer) == sshsig.public_wire(key.public_key())
    with pytest.raises(IntegrityError, match="does not match"):
        sshsig.verify(armored, b"hello!\n")
    with pytest.raises(IntegrityError, match="namespace"):
        sshsig.verify(armored, b"hello\n", namespace="file")
