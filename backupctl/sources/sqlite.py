"""SQLite source: a consistent copy made with SQLite's online backup API.

The copy is taken into a private temporary directory, checked (`PRAGMA integrity_check`) and
counted there, so the facts describe exactly the bytes that are shipped; the live database is
only opened read-only and never created when missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from backupctl.core.durable import fsync_directory
from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import SqliteSource
from backupctl.sources.base import (
    DUMP_EXTENSIONS,
    DumpStream,
    RestoreOutcome,
    RestoreRequest,
    RestoreStage,
    RolesOutcome,
    count_rows_equal,
    register_source,
)

log = logging.getLogger("backupctl.sources.sqlite")

CHUNK = 1 << 20
BUSY_TIMEOUT = 60.0  # seconds to wait for a writer's lock before giving up


def table_row_counts(connection: sqlite3.Connection) -> dict[str, int]:
    """Row count of every table (internal sqlite_* tables excluded), keyed by table name."""
    names = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY name"
        )
    ]
    counts: dict[str, int] = {}
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        counts[name] = int(connection.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])
    return counts


def integrity_problems(connection: sqlite3.Connection) -> list[str]:
    """The output of `PRAGMA integrity_check`, empty when the database is sound."""
    rows = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows


@register_source("sqlite")
class SqliteBackupSource:
    """A SQLite database file (`type: sqlite`), copied with the online backup API."""

    format = "sqlite3"
    extension = DUMP_EXTENSIONS["sqlite"]

    def __init__(self, config: SqliteSource) -> None:
        self.config = config
        self.name = config.name
        self.path = Path(config.path)

    @contextmanager
    def dump(self) -> Iterator[DumpStream]:
        """Copy the database to a temporary file and yield it as the stream.

        Raises SourceError when the database is missing, unreadable or its copy is corrupt.
        The temporary copy is removed when the context is left.
        """
        if not self.path.is_file():
            raise SourceError(f"SQLite database {self.path} of source {self.name} does not exist")
        workdir = Path(tempfile.mkdtemp(prefix="backupctl-sqlite-"))
        stream: BinaryIO | None = None
        try:
            copy = workdir / "copy.sqlite"
            facts = self._copy(copy)
            stream = open(copy, "rb")  # noqa: SIM115 - closed when the context is left
            yield DumpStream(stream, self.format, self.extension, lambda: facts)
        finally:
            if stream is not None:
                stream.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def estimate_size(self) -> int | None:
        """The size of the copy `dump` will stream: page count times page size as the database
        reports it (committed pages still in the WAL included). When the database cannot be
        opened right away, the file's size plus its WAL's. None when neither works."""
        try:
            uri = self.path.absolute().as_uri() + "?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as connection:
                pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
                page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
            return pages * page_size
        except (sqlite3.Error, OSError, ValueError, TypeError) as error:
            log.debug("cannot read the page count of %s (%s): using its file size", self.path, error)
        try:
            wal = self.path.with_name(self.path.name + "-wal")
            return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        except OSError:
            return None

    def _copy(self, copy: Path) -> dict[str, Any]:
        # mode=ro: a missing or mistyped path must fail, not create an empty database.
        uri = self.path.absolute().as_uri() + "?mode=ro"
        try:
            with (
                closing(sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)) as source,
                closing(sqlite3.connect(copy)) as target,
            ):
                # One step (pages=-1): the source is read in a single read transaction, so the
                # copy is one consistent state even while other processes write.
                source.backup(target, pages=-1)
        except sqlite3.Error as error:
            raise SourceError(f"cannot copy SQLite database {self.path}: {error}") from None
        counts = _checked_counts(copy, f"the copy of SQLite database {self.path}")
        with closing(sqlite3.connect(copy)) as check:
            page_size = int(check.execute("PRAGMA page_size").fetchone()[0])
        return {
            "row_counts": counts,
            "sqlite_version": sqlite3.sqlite_version,
            "page_size": page_size,
            "bytes": copy.stat().st_size,
        }

    def restore(self, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome:
        """Write the stream to `request.to_file` atomically (temp name, fsync, check, rename).

        Raises ConfigError when no file is given, its directory is missing, or it exists
        without `force`; SourceError when the restored file fails integrity_check.
        """
        if request.to_file is None:
            raise ConfigError(f"restoring {self.name} needs a destination file (--to-file)")
        target = Path(request.to_file).absolute()
        if target.exists() and not request.force:
            raise ConfigError(f"{target} already exists; use --force to replace it")
        if not target.parent.is_dir():
            raise ConfigError(f"directory {target.parent} does not exist")
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
            dir=target.parent, prefix=f".{target.name}.", suffix=".restoring", delete=False
        )
        partial = Path(handle.name)
        notes: list[str] = []
        try:
            with handle:
                shutil.copyfileobj(stream, handle, CHUNK)
                handle.flush()
                os.fsync(handle.fileno())
            counts = _checked_counts(partial, "the restored SQLite database")
            # A journal or WAL left by the database we replace would be replayed into ours.
            for suffix in ("-wal", "-shm", "-journal"):
                stale = target.with_name(target.name + suffix)
                if stale.exists():
                    stale.unlink()
                    notes.append(f"removed {stale.name} of the replaced database")
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)
        return RestoreOutcome(destination=str(target), facts={"row_counts": counts}, notes=notes)

    def recreate_roles(
        self, recorded: dict[str, Any], request: RestoreRequest, stage: RestoreStage,
        secrets: dict[str, str] | None = None,
    ) -> RolesOutcome:  # fmt: skip
        """Nothing to do: SQLite files carry no roles."""
        return RolesOutcome()

    def compare(self, manifest_facts: dict[str, Any], restored_facts: dict[str, Any]) -> list[str]:
        """Per-table row count differences."""
        return count_rows_equal("sqlite", manifest_facts, restored_facts)

    def describe(self) -> dict[str, Any]:
        """Secret-free description."""
        return {"name": self.name, "type": "sqlite", "format": self.format, "path": str(self.path)}


def _checked_counts(path: Path, what: str) -> dict[str, int]:
    """Row counts of a database file after `integrity_check`; SourceError when it is not sound."""
    try:
        with closing(sqlite3.connect(path)) as check:
            problems = integrity_problems(check)
            if problems:
                raise SourceError(f"{what} fails integrity_check: {'; '.join(problems[:5])}")
            return table_row_counts(check)
    except sqlite3.DatabaseError as error:
        raise SourceError(f"{what} is not a usable SQLite database: {error}") from None

