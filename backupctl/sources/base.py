"""The source interface and its registry.

A source produces a *plain* byte stream (pg_dump custom format, a tar stream, a SQLite file)
plus integrity facts (row counts, file count, tree hash, tool versions) that go into the
manifest, and restores such a stream into a destination. Compression and encryption are not a
source's business: the pipeline does them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, cast

from backupctl.errors import ConfigError


@dataclass
class DumpStream:
    """A running dump: read `stream` to its end, then call `finish()`.

    `finish()` waits for the producer (process or thread), raises SourceError when it failed
    (with the tool's stderr, masked), and returns the integrity facts for the manifest.
    """

    stream: BinaryIO
    format: str  # e.g. "pgdump", "tar", "sqlite3", "sql"
    extension: str  # file name part before ".zst.age", e.g. "pgdump"
    finish: Callable[[], dict[str, Any]]
    # Password hashes of the roles/accounts the database needs (`roles: {passwords: true}`), as
    # JSON: stored as a separate encrypted artifact (core.manifest.secrets_source), never in the
    # facts (the manifest is readable without the private key). None when not captured.
    secrets: bytes | None = None


@dataclass
class RestoreRequest:
    """Where and how to restore one artifact. Exactly one destination applies per source kind."""

    to_db: str | None = None  # database URL (postgres, mysql)
    to_dir: Path | None = None  # directory (files)
    to_file: Path | None = None  # file path (sqlite)
    force: bool = False  # allow a non-empty destination directory / existing file
    clean: bool = False  # drop objects before recreating them (pg_restore --clean --if-exists)
    create: bool = False  # create the database first (pg_restore --create)
    jobs: int = 0  # parallel restore jobs where the tool supports them; 0 = one per CPU
    size_hint: int | None = None  # plain bytes the manifest recorded (spool space check)
    no_owner: bool = False  # skip ownership/privileges (restoring under another role)
    password: str | None = None  # password for the destination, never on argv
    as_name: str | None = None  # create this database on the destination server and restore into it
    container: str | None = None  # restore with the tools inside this Docker container
    roles: RolesMode = "create-missing"  # roles/accounts the manifest recorded (Source.recreate_roles)


RolesMode = Literal["create-missing", "skip"]
ROLES_MODES: tuple[RolesMode, ...] = ("create-missing", "skip")
RestoreStage = Literal["before", "after"]


@dataclass
class RolesOutcome:
    """What `Source.recreate_roles` did: roles/accounts created, found existing (left alone,
    never altered), and notes (e.g. "created without a password"). Empty for kinds with none."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # database-level grants/settings applied

    def merge(self, other: RolesOutcome) -> RolesOutcome:
        return RolesOutcome(
            self.created + other.created, self.existing + other.existing, self.notes + other.notes,
            self.applied + other.applied,
        )  # fmt: skip


@dataclass
class RestoreOutcome:
    """What a restore did, and the facts measured on the result (compared with the manifest)."""

    destination: str
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    jobs: int = 1  # parallel jobs the restore used


class Source(Protocol):
    """One kind of data source. Instances are built from the policy's source config."""

    name: str
    extension: str  # of its dumps (DumpStream.extension), known before a dump starts

    def dump(self) -> AbstractContextManager[DumpStream]:
        """Start a dump. Leaving the context cleans up (kills the tool) whatever happened."""
        ...

    def restore(self, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome:
        """Restore a plain stream (as produced by `dump`) into the request's destination.

        Raises ConfigError for an unusable destination (e.g. non-empty without force) before
        writing anything, SourceError when the restore tool fails.
        """
        ...

    def recreate_roles(
        self, recorded: dict[str, Any], request: RestoreRequest, stage: RestoreStage,
        secrets: dict[str, str] | None = None,
    ) -> RolesOutcome:  # fmt: skip
        """Create the roles/accounts the manifest's facts `recorded` (and their grants) that the
        request's destination lacks; existing ones are never altered or dropped. `secrets`: the
        password hashes the snapshot's secrets artifact holds (by role/account), set on the ones
        created; without them no password is set. The restore action calls it with stage "before"
        (ahead of the data) and "after"; each kind acts in the stage it needs (PostgreSQL before,
        so pg_restore keeps owners and privileges; MariaDB after, its table grants need the
        tables). Does nothing with `request.roles == "skip"` or for kinds without roles.
        Raises ConfigError (nothing written) or SourceError.
        """
        ...

    def compare(self, manifest_facts: dict[str, Any], restored_facts: dict[str, Any]) -> list[str]:
        """Differences between the facts recorded at backup time and those of a restore."""
        ...

    def describe(self) -> dict[str, Any]:
        """A secret-free description for `policy show` and reports."""
        ...

    def estimate_size(self) -> int | None:
        """About how many plain bytes `dump` will stream (the total of a progress bar).

        Must be cheap (a query, a stat, a bounded walk) and never raise: None when the size is
        unknown or finding it failed. Only progress display uses it; nothing relies on it.
        """
        ...


# The name part of each built-in kind's dumps: "shop-db.pgdump.zst.age" on a blob target,
# "shop-db.pgdump" in restic. Known here, not only on the classes, so that a backup can start
# restic for a stream before importing the source's module (psycopg alone: ~70 ms).
DUMP_EXTENSIONS = {"postgres": "pgdump", "mysql": "sql", "sqlite": "sqlite", "files": "tar"}


# Kinds whose dump is a tree of files: blob stores keep its tar stream, a store that keeps
# trees itself (targets.store.PlainStore.store_tree: restic) takes the tree instead.
TREE_KINDS = ("files",)


def dumps_a_tree(config: Any) -> bool:
    """Whether the source `config` describes is a file tree (its dump a tar stream of it)."""
    return config.type in TREE_KINDS


def dump_extension(config: Any) -> str:
    """The extension of the dumps of the source `config` describes."""
    return DUMP_EXTENSIONS.get(config.type) or build_source(config).extension


SourceFactory = Callable[[Any], Source]
_REGISTRY: dict[str, SourceFactory] = {}


def register_source(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    """Class decorator: register a source implementation for `type: kind`. Twice is an error."""

    def decorate(factory: SourceFactory) -> SourceFactory:
        if kind in _REGISTRY:
            raise RuntimeError(f"source type '{kind}' is registered twice")
        _REGISTRY[kind] = factory
        return factory

    return decorate


def build_source(config: Any) -> Source:
    """Instantiate the source for a config model from `backupctl.policy.schema`."""
    _load_builtin(config.type)
    try:
        factory = _REGISTRY[config.type]
    except KeyError:
        raise ConfigError(f"source type '{config.type}' is not available in this build") from None
    return factory(config)


def registered_sources() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin(kind: str | None = None) -> None:
    """Import the implementation module of `kind` (or of every kind) for its registration.

    An explicit list, no scanning. Importing only what a policy uses keeps start-up fast
    (boto3 and paramiko alone cost about half a second).
    """
    import importlib

    for module in ("postgres", "sqlite", "files", "mysql"):
        if kind is not None and module != kind:
            continue
        try:
            importlib.import_module(f"backupctl.sources.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"backupctl.sources.{module}":
                raise


# Dumps through `via: ssh://...`, by source kind: "module:function". Named here, not imported by
# the source modules, because each remote module builds on its source module (shared queries,
# scanners): a direct import back would be an import cycle.
_REMOTE_DUMPS = {
    "postgres": "backupctl.sources.postgres_remote:remote_dump",
    "mysql": "backupctl.sources.mysql_remote:remote_dump",
}


def remote_dump(kind: str) -> Callable[..., AbstractContextManager[DumpStream]]:
    """The `via` dump of source kind `kind` (imported now: paramiko costs start-up time that
    local dumps need not pay). Its arguments and errors: see that module's `remote_dump`."""
    import importlib

    module, _, name = _REMOTE_DUMPS[kind].partition(":")
    return cast(
        Callable[..., AbstractContextManager[DumpStream]], getattr(importlib.import_module(module), name)
    )


def count_rows_equal(kind: str, expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Shared comparison of per-table row counts (`facts['row_counts']`)."""
    problems: list[str] = []
    want: dict[str, int] = expected.get("row_counts", {})
    got: dict[str, int] = actual.get("row_counts", {})
    for table in sorted(set(want) | set(got)):
        if table not in got:
            problems.append(f"{kind} table {table} is missing after restore (expected {want[table]} rows)")
        elif table not in want:
            problems.append(f"{kind} table {table} exists after restore but not in the snapshot")
        elif want[table] != got[table]:
            problems.append(f"{kind} table {table} has {got[table]} rows, the snapshot had {want[table]}")
    return problems
