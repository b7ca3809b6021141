"""The one place that maps a YAML target `type:` to its implementation and its nature.

Everything else asks a target what it *is like* (`traits_of(config)`: deduplicating, networked,
...) or what it *holds* (a `SnapshotStore` from `open_store`, backupctl.targets.store), never
which kind it is. Adding a target kind touches its module, its schema model
(backupctl.policy.schema) and one entry of `KINDS` below (see docs/targets.md, "The target
contract").

Implementations are named by module path and imported only when a policy uses them: boto3 and
paramiko alone cost about half a second of start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoreTraits:
    """What a kind of target is like, known without contacting it.

    deduplicating: takes the *plain* stream and deduplicates, compresses and encrypts it itself
      (no age artifact, no age identity needed to read it back); its copies are made by backups
      only (stored bytes cannot be copied to or from another target), and reading means
      re-assembling chunks behind a key derivation per call, so it is the slowest copy to open;
    networked: reached over a network (a local directory or mounted share is not);
    declared_immutability: immutability cannot be read from the target, only declared;
    unreachable_hint: what an operator checks first when it does not answer;
    tool, tool_hint: the external program it runs (doctor checks its version) and how to get it;
    posture_refuses_backups: a posture problem (read from the target) fails its backups;
    local_directory: a directory of this host (`path`), whose free space doctor checks and where
      killed runs may leave temporary files (sweep);
    host_path_field: the config field naming where it writes, which is a directory of this host
      when it is an absolute path (local: `path`; restic: `repository`, else a URL): the
      directories a scheduled job's sandbox lets it write.
    """

    deduplicating: bool
    networked: bool
    declared_immutability: bool
    unreachable_hint: str
    tool: str | None = None
    tool_hint: str = ""
    posture_refuses_backups: bool = False
    local_directory: bool = False
    host_path_field: str | None = None

    @property
    def needs_identity(self) -> bool:
        """Reading a copy back needs the policy's age identity."""
        return not self.deduplicating


@dataclass(frozen=True)
class Kind:
    store: str  # "module:Class" of the SnapshotStore implementation
    blob_module: str | None  # module registering a BlobTarget (backupctl.targets.base), if any
    traits: StoreTraits


_BLOB_STORE = "backupctl.targets.blob_store:BlobSnapshotStore"

KINDS: dict[str, Kind] = {
    "local": Kind(_BLOB_STORE, "backupctl.targets.local", StoreTraits(
        deduplicating=False, networked=False, declared_immutability=False, local_directory=True,
        host_path_field="path",
        unreachable_hint="create the directory or mount the share, and make it writable by this user",
    )),
    "s3": Kind(_BLOB_STORE, "backupctl.targets.s3", StoreTraits(
        deduplicating=False, networked=True, declared_immutability=False, posture_refuses_backups=True,
        unreachable_hint="check endpoint_url, region, bucket, credentials and the network",
    )),
    "sftp": Kind(_BLOB_STORE, "backupctl.targets.sftp", StoreTraits(
        deduplicating=False, networked=True, declared_immutability=False,
        unreachable_hint="check host, port, user, key_file and known_hosts (try `ssh` by hand)",
    )),
    "restic": Kind("backupctl.targets.restic_store:ResticSnapshotStore", None, StoreTraits(
        deduplicating=True, networked=True, declared_immutability=True, tool="restic",
        host_path_field="repository",
        tool_hint="apt install restic, or see https://restic.readthedocs.io/en/stable/020_installation.html",
        unreachable_hint=(
            "check the repository location and password; `backupctl target setup` initialises it"
        ),
    )),
}  # fmt: skip


def kind_of(kind: str) -> Kind:
    """The registered kind `kind`. Raises KeyError for an unknown one (the schema rejects those)."""
    return KINDS[kind]


def holds_blobs(kind: str) -> bool:
    """Whether targets of `kind` are blob targets (a BlobTarget underneath): what log-segment
    archives (backupctl.pitr) need. False for an unknown kind."""
    known = KINDS.get(kind)
    return known is not None and known.blob_module is not None


def host_path(config: Any) -> str | None:
    """The directory of this host a target config writes (`host_path_field`, when absolute)."""
    field = traits_of(config).host_path_field
    value = getattr(config, field, None) if field else None
    return value if isinstance(value, str) and value.startswith("/") else None


def traits_of(config: Any) -> StoreTraits:
    """The traits of a target config model (backupctl.policy.schema) by its `type`."""
    return KINDS[config.type].traits


def load_class(path: str) -> Any:
    """Import "module:Class" and return the class."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
