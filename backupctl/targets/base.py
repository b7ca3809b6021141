"""The blob target interface and its registry.

A blob target stores opaque, already encrypted objects under keys of the layout
`<policy>/<snapshot-id>/<file>` (the target adds its own root directory or prefix). Writes are
atomic: an object becomes visible to `list_keys`/`reader` only when its writer context exits
cleanly; on an exception the partial object is discarded. See docs/targets.md for the contract
every implementation must meet (tests/integration/targets/contract.py runs it against all).
Deleting a missing object is not an error. Keys have no empty, "." or ".." parts.

restic is not a blob target: it takes the *plain* stream so that it can deduplicate
(backupctl.targets.restic). What actions see is one level up: a `SnapshotStore`
(backupctl.targets.store), implemented once over this interface for every blob target and
directly by restic.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from backupctl.errors import ConfigError


@dataclass
class ObjectInfo:
    key: str
    size: int
    storage_class: str | None = None  # S3 storage class; None for plain file systems


@dataclass
class Posture:
    """What the *real* target says about itself (read from the target, not from the YAML)."""

    reachable: bool
    medium: str
    offsite: bool
    versioned: bool = False
    immutable: bool = False  # S3 object lock read from the bucket; restic rest: append-only as declared
    cold: bool = False  # objects may need a warm-up before reading (Glacier)
    free_bytes: int | None = None
    problems: list[str] = field(default_factory=list)  # what is wrong, each with the fix
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadTiming:
    """Filled by `reader()` for cold storage: how long the warm-up took (part of a drill's RTO)."""

    warmup_seconds: float = 0.0


class BlobTarget(Protocol):
    name: str
    medium: str
    offsite: bool

    def writer(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A binary writer; the object appears atomically when the context exits without error."""
        ...

    def reader(self, key: str, timing: ReadTiming | None = None) -> AbstractContextManager[BinaryIO]:
        """A streaming binary reader. Raises TargetError (not found, cold read timed out, ...)."""
        ...

    def list_keys(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with `prefix` (never temp/partial objects), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete an object. Raises RetainedByLock when object lock forbids it."""
        ...

    def sweep_partial(self, prefix: str, *, before: float, dry_run: bool = False) -> list[ObjectInfo]:
        """Remove (or, in a dry run, only list) the partial writes under `prefix` begun before
        `before` (a Unix time): temporary files (local, SFTP; by modification time) and
        incomplete multipart uploads (S3; by initiation time), none of which `list_keys` shows.
        The caller knows their writer is dead (a failed run under the policy lock). Returns
        what was removed, with the bytes each held. Raises TargetError."""
        ...

    def posture(self) -> Posture:
        """Read reachability and protection from the real target."""
        ...

    def close(self) -> None: ...


TargetFactory = Callable[[Any], BlobTarget]
_REGISTRY: dict[str, TargetFactory] = {}


def register_target(kind: str) -> Callable[[TargetFactory], TargetFactory]:
    """Class decorator: register a blob target for `type: kind`. Twice is an error."""

    def decorate(factory: TargetFactory) -> TargetFactory:
        if kind in _REGISTRY:
            raise RuntimeError(f"target type '{kind}' is registered twice")
        _REGISTRY[kind] = factory
        return factory

    return decorate


def build_target(config: Any) -> BlobTarget:
    """Instantiate the blob target for a target config model from `backupctl.policy.schema`."""
    _load_builtin(config.type)
    try:
        factory = _REGISTRY[config.type]
    except KeyError:
        raise ConfigError(f"target type '{config.type}' is not available as a blob target") from None
    return factory(config)


def is_blob_target(kind: str) -> bool:
    _load_builtin(kind)
    return kind in _REGISTRY


def _load_builtin(kind: str | None = None) -> None:
    """Import the implementation module of `kind` (or of every kind) for its registration.

    The modules are listed in the registry (backupctl.targets.registry), no scanning. Importing
    only what a policy uses keeps start-up fast (boto3 and paramiko alone cost about half a second).
    """
    import importlib

    from backupctl.targets.registry import KINDS

    for name, entry in KINDS.items():
        if (kind is not None and name != kind) or entry.blob_module is None:
            continue
        try:
            importlib.import_module(entry.blob_module)
        except ModuleNotFoundError as error:
            if error.name != entry.blob_module:
                raise


def snapshot_prefix(policy: str, snapshot_id: str) -> str:
    return f"{policy}/{snapshot_id}/"


MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
