"""Shared by the pipeline tests: an age identity, and bytes encrypted to it as a backup stores them."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from pyrage import x25519

from backupctl.core.pipeline import encrypt_stream


@pytest.fixture(scope="module")
def identity() -> x25519.Identity:
    return x25519.Identity.generate()


@pytest.fixture(scope="module")
def encrypt(identity: x25519.Identity) -> Callable[[bytes], bytes]:
    """`data` through the backup pipeline (zstd, then age to `identity`): a stored artifact."""

    def encrypted(data: bytes) -> bytes:
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(data), out, [identity.to_public()])
        return out.getvalue()

    return encrypted
