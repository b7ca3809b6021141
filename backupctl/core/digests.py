"""Content digests written as `algorithm:hex`, so a manifest says how each one was made.

The plain stream of every artifact is hashed with BLAKE3: backupctl hashes it on every backup,
restore, verify and drill, and it is the largest stream it reads (before compression). On a CPU
without the SHA extensions, sha256 runs at about 280 MB/s on one core and BLAKE3 at over 3 GB/s
(440 MiB: 1.58 vs 0.11 CPU-s, docs/benchmarks.md), and a backup shares its cores with the dump
and restic. The stored (encrypted) bytes keep sha256: that is what an operator checks with
`sha256sum` without backupctl. Manifests of format version 1 hold sha256 plain digests; they
read as `sha256:<hex>` and are checked with sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import blake3

from backupctl.errors import IntegrityError

PLAIN_ALGORITHM = "blake3"


class Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


_ALGORITHMS: dict[str, Callable[[], Hasher]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for `algorithm` ("blake3" or "sha256")."""
    try:
        return _ALGORITHMS[algorithm]()
    except KeyError:
        known = ", ".join(sorted(_ALGORITHMS))
        raise IntegrityError(f"unknown digest algorithm {algorithm!r} (backupctl knows {known})") from None


def labelled(algorithm: str, hasher: Hasher) -> str:
    """`algorithm:hex` of what `hasher` has seen."""
    return f"{algorithm}:{hasher.hexdigest()}"


def algorithm_of(digest: str) -> str:
    """The algorithm of an `algorithm:hex` digest; IntegrityError when it has none or is unknown."""
    algorithm, separator, hex_part = digest.partition(":")
    if not separator or not hex_part:
        raise IntegrityError(f"digest {digest[:80]!r} does not say its algorithm ('algorithm:hex')")
    new_hasher(algorithm)  # raises for an algorithm this version does not know
    return algorithm


def digest_of(data: bytes, algorithm: str = PLAIN_ALGORITHM) -> str:
    """`algorithm:hex` of `data`."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return labelled(algorithm, hasher)
