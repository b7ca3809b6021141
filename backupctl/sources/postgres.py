"""PostgreSQL source: pg_dump (custom format) of one database, with exact row counts.

Consistency: we open a REPEATABLE READ READ ONLY transaction, export its snapshot and hand it
to `pg_dump --snapshot`; while pg_dump streams, a thread counts the rows of every dumped table in
that same transaction. The row counts in the manifest therefore describe exactly the data in the
artifact, however busy the database is.

Passwords go to pg_dump/pg_restore as PGPASSWORD and to psycopg as a connection keyword, never
on a command line; URLs given for a restore destination may contain one: it is taken out of the
URL before the URL reaches argv.

With `via: ssh://user@host`, pg_dump and the snapshot-holding session run on that host
(`backupctl.sources.postgres_remote`, same consistency guarantee). Restores never go through
`via`: pg_restore runs here, into the database that `--to-db` names.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backupctl.core import runner
from backupctl.core.secrets import mask, mask_url_password, register_secret
from backupctl.core.spool import default_jobs, restore_with_spool
from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import PostgresSource
from backupctl.sources.base import (
    DUMP_EXTENSIONS,
    DumpStream,
    RestoreOutcome,
    RestoreRequest,
    RestoreStage,
    RolesOutcome,
    count_rows_equal,
    register_source,
    remote_dump,
)
from backupctl.sources.pg_toc import DataOffsets
from backupctl.sources.restore_as import as_note, create_postgres_database

log = logging.getLogger("backupctl.sources.postgres")

CHUNK = 1 << 20
ESTIMATE_CONNECT_TIMEOUT = 5  # seconds: an unreachable server must not hold the backup up twice

from backupctl.sources.postgres_sql import (  # noqa: E402  # (connections, tables, row counts)
    SNAPSHOT_SESSION_SETTINGS,
    TABLE_SIZES_QUERY,
    Table,
    connect,
    count_rows,
    split_password,
    user_tables,
)


class _RowCounter(threading.Thread):
    """Counts rows in the snapshot transaction while pg_dump streams."""

    def __init__(self, connection: psycopg.Connection[Any], tables: list[Table]) -> None:
        super().__init__(daemon=True, name="pg-row-counter")
        self._connection = connection
        self._tables = tables
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.counts = count_rows(self._connection, self._tables)
        except BaseException as error:  # reported by finish(), never lost in the thread
            self.error = error


def _name_pattern(pattern: str) -> tuple[re.Pattern[str] | None, re.Pattern[str]]:
    """A psql-style pattern (as pg_dump -t/-n take) -> (schema regex or None, name regex).

    Outside double quotes letters fold to lower case, `*` and `?` are wildcards and `.`
    separates schema and name; inside them everything is literal (`""` is a quote).
    """
    parts = [""]
    quoted = False
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == '"':
            if quoted and pattern[position + 1 : position + 2] == '"':
                parts[-1] += re.escape('"')
                position += 1
            else:
                quoted = not quoted
        elif quoted:
            parts[-1] += re.escape(char)
        elif char == ".":
            parts.append("")
        elif char in "*?":
            parts[-1] += ".*" if char == "*" else "."
        else:
            parts[-1] += re.escape(char.lower())
        position += 1
    schema = re.compile(parts[-2], re.DOTALL) if len(parts) > 1 else None
    return schema, re.compile(parts[-1], re.DOTALL)


_Pattern = tuple[re.Pattern[str] | None, re.Pattern[str]]


def _matches(patterns: list[_Pattern], table: Table) -> bool:
    for schema, name in patterns:
        if schema is None and not table.visible:
            continue  # pg_dump resolves an unqualified pattern through the search_path
        if (schema is None or schema.fullmatch(table.schema)) and name.fullmatch(table.name):
            return True
    return False


@dataclass
class TableSelection:
    """Which tables, and whose data, pg_dump puts in the artifact given our dump_options.

    Without this, `--exclude-table=audit_log` would make every restore report audit_log
    missing. Understands -t/-T/-n/-N/--exclude-table-data/--schema-only/--section/
    --no-unlogged-table-data; other options do not change which rows are dumped.
    """

    tables: list[_Pattern] = field(default_factory=list)
    exclude_tables: list[_Pattern] = field(default_factory=list)
    schemas: list[re.Pattern[str]] = field(default_factory=list)
    exclude_schemas: list[re.Pattern[str]] = field(default_factory=list)
    exclude_data: list[_Pattern] = field(default_factory=list)
    data: bool = True
    unlogged_data: bool = True

    _VALUED = {
        "-t": "--table", "--table": "--table", "-T": "--exclude-table", "--exclude-table": "--exclude-table",
        "-n": "--schema", "--schema": "--schema", "-N": "--exclude-schema",
        "--exclude-schema": "--exclude-schema", "--exclude-table-data": "--exclude-table-data",
        "--section": "--section",
    }  # fmt: skip

    @classmethod
    def from_dump_options(cls, options: list[str]) -> TableSelection:
        """Parse pg_dump options (`--opt=v`, `--opt v`, `-tv`, `-t v`)."""
        selection = cls()
        sections: list[str] = []
        remaining = list(options)
        while remaining:
            option, value = remaining.pop(0), ""
            if option.startswith("--") and "=" in option:
                option, value = option.split("=", 1)
            elif option in cls._VALUED and remaining:
                value = remaining.pop(0)
            elif option[:2] in ("-t", "-T", "-n", "-N") and len(option) > 2:
                option, value = option[:2], option[2:]
            option = cls._VALUED.get(option, option)
            if option == "--table":
                selection.tables.append(_name_pattern(value))
            elif option == "--exclude-table":
                selection.exclude_tables.append(_name_pattern(value))
            elif option == "--schema":
                selection.schemas.append(_name_pattern(value)[1])
            elif option == "--exclude-schema":
                selection.exclude_schemas.append(_name_pattern(value)[1])
            elif option == "--exclude-table-data":
                selection.exclude_data.append(_name_pattern(value))
            elif option in ("-s", "--schema-only"):
                selection.data = False
            elif option == "--section":
                sections.append(value)
            elif option == "--no-unlogged-table-data":
                selection.unlogged_data = False
        if sections and "data" not in sections:
            selection.data = False
        return selection

    def includes(self, table: Table) -> bool:
        """Whether pg_dump dumps this table (its definition) at all."""
        if _matches(self.exclude_tables, table):
            return False
        if self.tables:  # -t selects tables regardless of -n/-N
            return _matches(self.tables, table)
        if self.schemas and not any(p.fullmatch(table.schema) for p in self.schemas):
            return False
        return not any(p.fullmatch(table.schema) for p in self.exclude_schemas)

    def has_data(self, table: Table) -> bool:
        """Whether the table's rows are in the artifact (else it is restored empty)."""
        if not self.data or (table.persistence == "u" and not self.unlogged_data):
            return False
        return not _matches(self.exclude_data, table)


def version_of(text: str) -> str:
    """The version number in a tool's or server's version text ("pg_dump (PostgreSQL) 15.8")."""
    found = re.search(r"\d+(?:\.\d+)+|\d+", text)
    return found.group(0) if found else text.strip()


@register_source("postgres")
class PostgresDumpSource:
    """A PostgreSQL database (`type: postgres`), dumped with pg_dump, restored with pg_restore."""

    format = "pgdump"
    extension = DUMP_EXTENSIONS["postgres"]

    def __init__(self, config: PostgresSource) -> None:
        self.config = config
        self.name = config.name
        params = conninfo_to_dict(config.url)
        self.database = str(params.get("dbname") or params.get("user") or "")  # libpq's default

    # ------------------------------------------------------------------ dump
    @contextmanager
    def dump(self) -> Iterator[DumpStream]:
        """Start pg_dump on an exported snapshot; yield its stdout; clean up on leaving.

        Raises SourceError when the database cannot be reached, and from `finish()` when pg_dump
        or the row count fails. With `via`, the errors of `postgres_remote.remote_dump`.
        """
        if self.config.via:
            with remote_dump("postgres")(self.config, self.database, self.format, self.extension) as remote:
                yield remote
            return
        password = self.config.password.resolve() if self.config.password else None
        selection = TableSelection.from_dump_options(self.config.dump_options)
        # `pg_dump --version` runs while we connect and the dump starts (Debian's pg_wrapper,
        # a Perl script, takes ~0.07 s to answer): its answer is read by finish().
        version = _VersionProbe(self.config.pg_dump)
        try:
            connection = connect(self.config.url, password, "the database to back up")
        except BaseException:
            version.close()
            raise
        process: subprocess.Popen[bytes] | None = None
        stderr: runner.StderrTail | None = None
        counter: _RowCounter | None = None
        try:
            from backupctl.sources.pg_roles import (
                check_password_access,
                database_grants,
                role_passwords,
                roles_needed,
            )

            if self.config.roles.passwords:
                check_password_access(connection)  # before anything starts: a clear refusal
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for setting in SNAPSHOT_SESSION_SETTINGS:
                connection.execute(setting)
            snapshot = self._scalar(connection, "SELECT pg_export_snapshot()")
            server_version = version_of(self._scalar(connection, "SELECT current_setting('server_version')"))
            tables = [table for table in user_tables(connection) if selection.includes(table)]
            roles = roles_needed(connection)  # same snapshot as the dump (pg_roles.py)
            grants = database_grants(connection)  # what only pg_restore --create would restore
            secrets = role_passwords(connection, roles) if self.config.roles.passwords else None
            argv = [
                self.config.pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}",
                f"--dbname={self.config.url}", *self.config.dump_options,
            ]  # fmt: skip
            process = runner.start(argv, env={"PGPASSWORD": password} if password else None)
            assert process.stdout is not None and process.stderr is not None
            runner.widen_pipe(process.stdout)
            stderr = runner.StderrTail(process.stderr)
            counter = _RowCounter(connection, tables)
            counter.start()
            running, tail, counting = process, stderr, counter

            def finish() -> dict[str, Any]:
                # Closing our end first turns "consumer stopped early" into a pg_dump error
                # instead of a deadlock on a full pipe.
                running.stdout.close()  # type: ignore[union-attr]
                status = running.wait()
                if status != 0:
                    raise SourceError(f"pg_dump of {self.name} exited with status {status}: {tail.text()}")
                counting.join()
                if counting.error is not None:
                    raise SourceError(f"counting rows of {self.name} failed: {mask(str(counting.error))}")
                connection.execute("COMMIT")
                # Tables whose data pg_dump leaves out are in the artifact, empty.
                counts = {t.key: counting.counts[t.key] if selection.has_data(t) else 0 for t in tables}
                return {
                    "row_counts": counts,
                    "server_version": server_version,
                    "pg_dump_version": version.result(),
                    "database": self.database,
                    "tables": len(counts),
                    "roles": roles,
                    "database_grants": grants,
                }

            yield DumpStream(process.stdout, self.format, self.extension, finish, secrets)  # type: ignore[arg-type]
        finally:
            version.close()
            if process is not None:
                process.stdout.close()  # type: ignore[union-attr]
                runner.stop(process)
            if stderr is not None:
                stderr.join()
            if counter is not None and counter.is_alive():
                connection.cancel_safe()  # a long count(*) must not hold up an aborted dump
                counter.join()
            connection.close()

    def estimate_size(self) -> int | None:
        """About the size of the dump: the on-disk size of the data (heap and TOAST) of the
        tables whose rows the dump holds, given the dump_options.

        Not `pg_database_size`: that adds the indexes and several MiB of system catalogs, which
        pg_dump does not copy. A table's on-disk size is close to, not equal to, its share of
        the dump (tuple headers and free space on one side, COPY text on the other).
        None with `via` (the server is reached only from that host) and on any error.
        """
        if self.config.via:
            return None
        try:
            password = self.config.password.resolve() if self.config.password else None
            selection = TableSelection.from_dump_options(self.config.dump_options)
            with psycopg.connect(
                self.config.url,
                autocommit=True,
                connect_timeout=ESTIMATE_CONNECT_TIMEOUT,
                application_name="backupctl",
                password=password,
            ) as connection:
                tables = user_tables(connection)
                rows = connection.execute(TABLE_SIZES_QUERY).fetchall()
        except Exception as error:  # an estimate must never fail a backup
            log.debug("cannot estimate the size of %s: %s", self.name, mask(str(error).strip()))
            return None
        sizes = {str(key): int(size or 0) for key, size in rows}
        return sum(
            sizes.get(table.key, 0)
            for table in tables
            if selection.includes(table) and selection.has_data(table)
        )

    # ------------------------------------------------------------------ restore
    def restore(self, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome:
        """pg_restore the stream into `request.to_db` and count the rows of the result.

        With `create`, `to_db` names the maintenance database to connect to and the dumped
        database (same name as the source's) is created. Raises ConfigError for a missing or
        non-empty destination (unless clean/force), SourceError when pg_restore fails.
        """
        if not request.to_db:
            raise ConfigError(
                f"restoring {self.name} needs a destination database URL (--to-db)"
                + (f" ({self._via_note()})" if self.config.via else "")
            )
        if request.container:  # through the engine: sources/container_restore.py
            from backupctl.sources.container_restore import restore_in_container

            return restore_in_container(self.name, stream, request)
        conninfo, url_password = split_password(request.to_db)
        password = request.password or url_password
        if request.password:
            register_secret(request.password)
        if request.as_name:  # a new database next to the live one: sources/restore_as.py
            conninfo = create_postgres_database(conninfo, password, request.as_name)
        self._check_destination(conninfo, password, request)
        argv = [self.config.pg_restore, f"--dbname={conninfo}", "--exit-on-error"]
        if request.clean:
            argv += ["--clean", "--if-exists"]
        if request.create:
            argv.append("--create")
        if request.no_owner:
            argv += ["--no-owner", "--no-privileges"]
        env = {"PGPASSWORD": password} if password else None
        notes = [self._via_note()] if self.config.via else []
        jobs = self._restore_jobs(argv, env, stream, request, notes)
        restored = make_conninfo(conninfo, dbname=self.database) if request.create else conninfo
        with connect(restored, password, "the restored database") as connection:
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            counts = count_rows(connection, user_tables(connection))
            connection.execute("COMMIT")
        return RestoreOutcome(
            destination=mask(mask_url_password(request.to_db)) + as_note(request.as_name),
            facts={"row_counts": counts},
            notes=notes,
            jobs=jobs,
        )

    def recreate_roles(
        self, recorded: dict[str, Any], request: RestoreRequest, stage: RestoreStage,
        secrets: dict[str, str] | None = None,
    ) -> RolesOutcome:  # fmt: skip
        """Before the data: create the roles the snapshot recorded (sources/pg_roles.py) that the
        destination cluster lacks (login roles with their password hash from `secrets` when the
        snapshot captured them), so pg_restore keeps owners and privileges (the dump's GRANTs).
        The destination is checked first, so a refused restore creates nothing. After the data
        (unless pg_restore --create did it): the database's own GRANTs and settings, on the
        restored database whatever its name. Raises ConfigError (a role cannot be created:
        nothing was) or SourceError (the data is restored, the database grants are not)."""
        roles = recorded.get("roles")
        if request.roles == "skip" or not request.to_db:
            return RolesOutcome()
        if stage == "after":
            return self._apply_database_grants(recorded, request)
        if not isinstance(roles, list):
            return RolesOutcome(notes=["the snapshot recorded no roles (made before roles were captured)"])
        if request.container:
            return RolesOutcome(notes=["roles are not recreated through --to-container"])
        conninfo, url_password = split_password(request.to_db)
        password = request.password or url_password
        with connect(conninfo, password, "the restore destination") as connection:
            if request.as_name:
                if connection.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (request.as_name,)
                ).fetchone():
                    return RolesOutcome()  # restore() refuses it, saying why: create nothing
            else:
                self._check_destination(conninfo, password, request)
            from backupctl.sources.pg_roles import create_missing_roles

            try:
                outcome = create_missing_roles(connection, roles, secrets)
            except psycopg.Error as error:
                raise ConfigError(
                    f"cannot create the roles {self.name} needs on the destination "
                    f"({mask(str(error).strip())}); nothing was restored: restore as a role with "
                    "CREATEROLE, or with --roles skip (and --no-owner if they do not exist)"
                ) from None
        if request.no_owner and outcome.created:
            outcome.notes.append("--no-owner: the dump's owners and privileges were not applied to them")
        return outcome

    def _apply_database_grants(self, recorded: dict[str, Any], request: RestoreRequest) -> RolesOutcome:
        """The recorded database-level GRANTs and settings, on the restored database: pg_restore
        applies them itself only with --create."""
        grants = recorded.get("database_grants")
        if not isinstance(grants, dict) or request.create or request.container or not request.to_db:
            return RolesOutcome()
        if request.no_owner:
            return RolesOutcome(notes=["--no-owner: the database's own grants and settings were not applied"])
        conninfo, url_password = split_password(request.to_db)
        database = request.as_name or str(conninfo_to_dict(conninfo).get("dbname") or "")
        from backupctl.sources.pg_roles import apply_database_grants

        try:
            with connect(conninfo, request.password or url_password, "the restore destination") as connection:
                applied = apply_database_grants(connection, database, grants)
        except psycopg.Error as error:
            raise SourceError(
                f"the data of {self.name} is restored, but its database grants and settings could not "
                f"be applied to {database} ({mask(str(error).strip())}): apply them as the database's "
                "owner or a superuser, or restore with --roles skip"
            ) from None
        return RolesOutcome(applied=applied)

    def _restore_jobs(
        self,
        argv: list[str],
        env: dict[str, str] | None,
        stream: BinaryIO,
        request: RestoreRequest,
        notes: list[str],
    ) -> int:
        """Run pg_restore, in parallel when possible; returns the jobs used.

        Parallel pg_restore seeks in the archive, so the stream is spooled to a private file
        first (backupctl.core.spool); without room for it, or when the disk fills while
        spooling, the restore streams with one job and a note says why. The spool's TOC gets
        each table's data position (sources/pg_toc.py) so the workers seek instead of scanning.
        """
        jobs = request.jobs if request.jobs > 0 else default_jobs()
        return restore_with_spool(
            stream, jobs, request.size_hint,
            serial=lambda plain: self._run_restore(argv, env, plain),
            parallel=lambda path, count: self._run_restore([*argv, f"--jobs={count}", str(path)], env, None),
            notes=notes,
            patch=DataOffsets(),
        )  # fmt: skip

    def _check_destination(self, conninfo: str, password: str | None, request: RestoreRequest) -> None:
        with connect(conninfo, password, "the restore destination") as connection:
            if request.create:
                exists = connection.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                ).fetchone()
                if exists and not request.clean:
                    # Never suggest dropping it: on a production server it is the live database.
                    raise ConfigError(
                        f"database {self.database} already exists on the destination; restore "
                        "under a new name instead: --as NEW_NAME (nothing was changed)"
                    )
                return
            tables = user_tables(connection)
        if tables and not (request.clean or request.force):
            same_name = conninfo_to_dict(conninfo).get("dbname") == self.database
            raise ConfigError(
                f"the destination database already has {len(tables)} tables; restore under a new "
                "name (--as NEW_NAME creates it)"
                + ("" if same_name else ", or use --clean (drop and recreate objects) or --force")
            )

    def _run_restore(self, argv: list[str], env: dict[str, str] | None, stream: BinaryIO | None) -> None:
        direct = _direct_fd(stream) if stream is not None else None
        stdin: int | None = subprocess.DEVNULL
        if stream is not None:
            stdin = direct if direct is not None else subprocess.PIPE
        process = runner.start(argv, env=env, stdin=stdin, stdout=subprocess.DEVNULL)
        assert process.stderr is not None
        tail = runner.StderrTail(process.stderr)
        try:
            if stream is not None and direct is None:
                assert process.stdin is not None
                try:
                    while chunk := stream.read(CHUNK):
                        process.stdin.write(chunk)
                    process.stdin.close()
                except BrokenPipeError:
                    pass  # pg_restore stopped reading: its exit status and stderr say why
            status = process.wait()
        except BaseException:
            runner.stop(process)
            raise
        finally:
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        if status != 0:
            raise SourceError(f"pg_restore of {self.name} exited with status {status}: {tail.text()}")
        tail.join()
        if stream is not None and direct is None:
            # Whoever feeds us may hash the whole stream (the decrypting pipeline does): read
            # what pg_restore did not need, so its producer is not cut off.
            while stream.read(CHUNK):
                pass

    # ------------------------------------------------------------------ the rest
    def compare(self, manifest_facts: dict[str, Any], restored_facts: dict[str, Any]) -> list[str]:
        """Per-table row count differences."""
        return count_rows_equal("postgres", manifest_facts, restored_facts)

    def describe(self) -> dict[str, Any]:
        """Secret-free description (the URL never holds a password: the schema refuses one)."""
        return {
            "name": self.name,
            "type": "postgres",
            "format": self.format,
            "url": mask_url_password(self.config.url),
            "database": self.database,
            "password": str(self.config.password) if self.config.password else None,
            "dump_options": list(self.config.dump_options),
            "via": self.config.via,
        }

    def _via_note(self) -> str:
        # `via` serves dumps only: a restore runs pg_restore on this host (the backup or staging
        # host) against --to-db, which must be reachable from here (directly or by a tunnel).
        return f"restores do not go through via {self.config.via}: pg_restore runs here, into --to-db"

    @staticmethod
    def _scalar(connection: psycopg.Connection[Any], query: str) -> str:
        row = connection.execute(query).fetchone()  # type: ignore[arg-type]
        return str(row[0]) if row else ""


class _VersionProbe:
    """`PROGRAM --version`, started now and read when needed (`result`); `close` stops it."""

    def __init__(self, program: str) -> None:
        self._program = program
        self._process = runner.start([program, "--version"])  # ConfigError when not installed

    def result(self) -> str:
        """The version it printed. Raises SourceError when it failed."""
        stdout, stderr = self._process.communicate(timeout=60)
        if self._process.returncode != 0:
            raise SourceError(f"{self._program} --version failed: {mask(runner.last_lines(stderr))}")
        return version_of(stdout.decode("utf-8", "replace"))

    def close(self) -> None:
        runner.stop(self._process)
        for pipe in (self._process.stdout, self._process.stderr):
            if pipe is not None:
                pipe.close()


def _direct_fd(stream: BinaryIO) -> int | None:
    """A descriptor pg_restore can read directly, or None when we must copy.

    Only safe when no bytes sit in a Python-level buffer: for a seekable file we move the OS
    offset to the logical position; an unbuffered FileIO has no buffer. Buffered pipes are
    copied, since what they may have read ahead cannot be seen.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    try:
        if stream.seekable():
            os.lseek(fd, stream.tell(), os.SEEK_SET)
            return fd
    except OSError:
        return None
    return fd if isinstance(stream, io.FileIO) else None
