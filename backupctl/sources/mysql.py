"""MySQL/MariaDB source: mariadb-dump (plain SQL) of one database, restored with the mariadb client.

Consistency of the artifact: `--single-transaction` makes mariadb-dump read every table inside
one REPEATABLE READ transaction started WITH CONSISTENT SNAPSHOT, so for tables of transactional
engines (InnoDB) the artifact is a single point in time, and writers are never blocked. Tables of
other engines (MyISAM, Aria, MEMORY, ...) are read whenever mariadb-dump reaches them; the facts
name them (`non_transactional_tables`). DDL during the dump (ALTER, DROP, RENAME, TRUNCATE TABLE)
is not isolated by the snapshot: per MariaDB's documentation the dump may then fail or hold
inconsistent contents for that table.

Consistency of the row counts: they are counted in the dump's own output as it streams past
(the row tuples of each table's INSERT statements), not by separate queries. MariaDB cannot share
the dump's snapshot with a second connection (PostgreSQL's exported snapshot has no equivalent),
and making two snapshots coincide needs FLUSH TABLES WITH READ LOCK / BACKUP STAGE (RELOAD) or a
LOCK TABLES ... READ held while mariadb-dump starts (writers stall, and the moment the dump's
snapshot is taken cannot be observed). Counting the output needs no lock, no query and no
privilege, and holds for every engine: `row_counts` is exactly what the artifact holds, which is
what a successful restore of it yields. The same scan counts views, triggers, routines and events.

Privileges of the backup user: SELECT, SHOW VIEW, TRIGGER and EVENT on the database (LOCK TABLES
is not used with --single-transaction), plus SELECT ON mysql.proc on MariaDB: without it
mariadb-dump silently leaves out routines defined by other users, so such a dump is refused.

Secrets: the password reaches mariadb-dump and mariadb through `--defaults-extra-file=/dev/fd/N`
(a pipe), never argv or MYSQL_PWD. User, host, port and socket go on argv, where they override
any option file. A `password=` in the invoking user's ~/.my.cnf, read after the extra file, would
override ours: keep passwords out of ~/.my.cnf on backup hosts.

With `via: ssh://user@host`, mariadb-dump and the preflight queries run on that host and the
dump streams back through the same scanner (`backupctl.sources.mysql_remote`). Restores never go
through `via`: the mariadb client runs here, into the database that `--to-db` names.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any, BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

from backupctl.core import runner
from backupctl.core.secrets import mask, mask_url_password, register_secret
from backupctl.core.spool import SpoolPlan, default_jobs, private_directory
from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import MysqlSource
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
from backupctl.sources.mysql_container import ContainerClient, client_rows
from backupctl.sources.mysql_parallel import CLIENT_OPTIONS, restore_parallel
from backupctl.sources.restore_as import as_note, check_name

log = logging.getLogger("backupctl.sources.mysql")

CHUNK = 1 << 20
QUERY_TIMEOUT = 300.0
ESTIMATE_TIMEOUT = 30.0  # a size hint for a progress bar must not hold up the backup
# Options that fix the output format the scanner reads; on argv they override option files.
DUMP_OPTIONS = [
    "--single-transaction", "--quick", "--routines", "--triggers", "--events", "--hex-blob",
    "--default-character-set=utf8mb4", "--skip-compact", "--comments", "--skip-complete-insert",
    "--no-tablespaces", "--max-allowed-packet=1G",
]  # fmt: skip
# With binlog archiving: the binlog position and GTID state the dump's snapshot is consistent
# with, read by MariaDB from the snapshot itself (binlog_snapshot_file/_position): no FLUSH TABLES
# WITH READ LOCK, no RELOAD privilege; BINLOG MONITOR (REPLICATION CLIENT) is needed.
BINLOG_DUMP_OPTIONS = ["--master-data=2", "--gtid"]
_BINLOG_COORDINATES = re.compile(rb"-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);")
_BINLOG_GTID = re.compile(rb"-- SET GLOBAL gtid_slave_pos='([^']*)';")
TRANSACTIONAL_ENGINES = frozenset({"InnoDB", "ROCKSDB", "TokuDB"})
OBJECT_KINDS = ("views", "triggers", "routines", "events")
_DESTINATION_SQL = """SELECT
    (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {name}),
    (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {name}),
    (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {name}),
    (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {name})"""
_OBJECTS_SQL = """SELECT
    (SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {name}),
    (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {name}),
    (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {name}),
    (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {name})"""
# Sequences (TABLE_TYPE 'SEQUENCE') and views have no data section in a dump: not counted.
_TABLES_SQL = """SELECT HEX(TABLE_NAME) FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = {name} AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME"""
_SIZE_SQL = """SELECT COALESCE(SUM(DATA_LENGTH), 0) FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = {name}"""
# Runs SQL for a purpose ("connect to the database to back up"), returns tab-split rows; raises
# SourceError naming the purpose and the tool's last stderr lines.
SqlRunner = Callable[[str, str], list[list[str]]]


# --------------------------------------------------------------------------- client plumbing
def option_file_value(value: str) -> str:
    """Quote a value for a MySQL option file: `#`, quotes, spaces and newlines survive intact."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


@contextmanager
def password_options(
    password: str | None, *, isolated: bool = False
) -> Iterator[tuple[list[str], list[int]]]:
    """Yield (leading options, fds to pass) that hand `password` to a MySQL client program.

    The option file lives in a pipe: mysys stat()s the path (a FIFO passes, its world-writable
    check is for regular files) and reads it once, sequentially. A memfd would also stay off
    disk, but it is a regular file of mode 0777, which mysys ignores as world-writable. The
    option must come first on argv. `isolated` uses --defaults-file (no other option file is
    read) instead of --defaults-extra-file. The pipe is closed on leaving.
    """
    if password is None:
        yield (["--no-defaults"] if isolated else []), []
        return
    register_secret(password)
    read_end, write_end = os.pipe()
    try:
        # A few bytes: far below the pipe's capacity, so this never blocks.
        os.write(write_end, f"[client]\npassword={option_file_value(password)}\n".encode())
        os.close(write_end)
        write_end = -1
        option = "--defaults-file" if isolated else "--defaults-extra-file"
        yield [f"{option}=/dev/fd/{read_end}"], [read_end]
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def quote_identifier(name: str) -> str:
    """`name` as a MySQL identifier: backticks, inner backticks doubled."""
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """`value` as a MySQL string literal (backslash escapes, the server's default mode)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect; the password never goes into `options()`."""

    user: str
    database: str
    host: str = "localhost"
    port: int = 3306
    socket: str | None = None
    password: str | None = None

    def options(self) -> list[str]:
        where = [f"--socket={self.socket}"] if self.socket else [f"--host={self.host}", f"--port={self.port}"]
        return [f"--user={self.user}", *where]

    def describe(self) -> str:
        where = f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database}"


def parse_url(url: str, password: str | None = None) -> Endpoint:
    """`mysql://user[:password]@host[:port]/database[?socket=/path]` (or `mariadb://`) -> Endpoint.

    `password` wins over one in the URL; both are registered for masking. Raises ConfigError.
    """
    shown = mask_url_password(url)
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as error:
        raise ConfigError(f"invalid MySQL URL {shown}: {error}") from None
    if parts.scheme not in ("mysql", "mariadb") or not parts.username:
        raise ConfigError(f"invalid MySQL URL {shown}: expected mysql://user@host[:port]/database")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError(f"invalid MySQL URL {shown}: it must name one database")
    url_password = unquote(parts.password) if parts.password is not None else None
    for secret in (password, url_password):
        if secret:
            register_secret(secret)
    socket = parse_qs(parts.query).get("socket", [None])[0]
    host = parts.hostname or "localhost"
    return Endpoint(unquote(parts.username), database, host, port, socket, password or url_password)


def run_sql(
    client: str, endpoint: Endpoint, sql: str, purpose: str, *, timeout: float = QUERY_TIMEOUT
) -> list[list[str]]:
    """Run SQL (stdin) with the mariadb client in `endpoint.database`; return tab-split rows.

    Raises SourceError naming `purpose` and the endpoint (never the password) on failure.
    """
    with password_options(endpoint.password) as (first, fds):
        argv = [client, *first, *endpoint.options(), "--batch", "--skip-column-names",
                "--default-character-set=utf8mb4", f"--database={endpoint.database}"]  # fmt: skip
        done = runner.run(argv, input_text=sql, check=False, timeout=timeout, pass_fds=fds)
    return client_rows(done, purpose, endpoint.describe())


def preflight(query: SqlRunner, endpoint: Endpoint) -> str:
    """Check that the database is reachable and its routines readable; return VERSION().

    `query` runs the SQL (with the local client, or on the `via` host). Raises SourceError.
    """
    rows = query("SELECT VERSION()", "connect to the database to back up")
    version = rows[0][0] if rows else ""
    probe = f"SELECT COUNT(*) FROM mysql.proc WHERE db = {quote_string(endpoint.database)}"
    try:
        query(probe, "read the stored routines")
    except SourceError as error:
        if "ERROR 1146" in str(error):
            return version  # MySQL 8 keeps routines in its data dictionary: nothing to probe
        if "ERROR 1142" not in str(error):
            raise
        raise SourceError(
            f"user {endpoint.user} cannot read stored routine definitions, and mariadb-dump would "
            f"silently leave out routines of other definers in {endpoint.database}: "
            f"GRANT SELECT ON mysql.proc TO the backup user"
        ) from None
    return version


class LocalClient:
    """The mariadb client of this host; the password in an option-file pipe (password_options).

    `sources.mysql_container.ContainerClient` offers the same calls for a client inside a
    container: restore, its destination checks and its inventory run through either.
    """

    def __init__(self, tool: str) -> None:
        self.tool = tool

    def where(self) -> str:
        return ""

    def query(self, endpoint: Endpoint, sql: str, purpose: str) -> list[list[str]]:
        return run_sql(self.tool, endpoint, sql, purpose)

    def start(self, endpoint: Endpoint, options: list[str]) -> subprocess.Popen[bytes]:
        with password_options(endpoint.password) as (first, fds):
            argv = [self.tool, *first, *endpoint.options(), *options, "--", endpoint.database]
            return runner.start(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=fds)


MysqlClient = LocalClient | ContainerClient


def _shown(client: MysqlClient, request: RestoreRequest) -> str:
    """The restore's destination as reported: URL without password, container, `--as` name."""
    url = mask(mask_url_password(request.to_db or ""))
    return (f"{client.where()}: {url}" if client.where() else url) + as_note(request.as_name)


def _find_tool(*names: str) -> str:
    for name in names[:-1]:
        try:
            return runner.require_tool(name)
        except ConfigError:
            continue
    return runner.require_tool(names[-1], "install the MariaDB or MySQL client package")


# --------------------------------------------------------------------------- the dump scanner
_QUOTED = rb"`(?:[^`]|``)*`"
_NAME = rb"`((?:[^`]|``)+)`"
_DEFINER = rb"DEFINER=" + _QUOTED + rb"(?:@" + _QUOTED + rb")?"
_INSERT = re.compile(rb"(?:INSERT(?: IGNORE)?|REPLACE) INTO " + _NAME + rb" VALUES")
_DATA = re.compile(rb"-- Dumping data for table " + _NAME)
_STRUCTURE = re.compile(rb"-- Table structure for table " + _NAME)
_ENGINE = re.compile(rb"\) ENGINE=(\w+)")
_PROGRAMS = {
    "triggers": re.compile(rb"/\*!50003 CREATE\*/ (?:/\*!50017 " + _DEFINER + rb"\*/ )?/\*!50003 TRIGGER "),
    "events": re.compile(rb"/\*!50106 CREATE\*/ (?:/\*!50117 " + _DEFINER + rb"\*/ )?/\*!50106 EVENT "),
    "routines": re.compile(rb"CREATE (?:" + _DEFINER + rb" )?(?:AGGREGATE )?(?:PROCEDURE|FUNCTION|PACKAGE)"),
}
_STRING_BODY = re.compile(rb"(?:[^'\\]++|\\.)*+", re.DOTALL)
_LITERAL = re.compile(rb"'" + _STRING_BODY.pattern + rb"'", re.DOTALL)
_VALUES_RUN = re.compile(rb"(?:[^';]++|" + _LITERAL.pattern + rb")*+", re.DOTALL)
_HEAD, _SKIP, _AFTER_VALUES, _ROWS, _VALUES, _STRING, _ESCAPE = range(7)
HEAD_LIMIT = 4096  # bytes of a line kept to recognise it; statement lines are far shorter


def _name(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "replace")


class DumpScanner:
    """Counts what mariadb-dump output holds while it streams past, in flat memory.

    Rows: the tuples of INSERT statements inside each `-- Dumping data for table` section.
    Dumped values are literals (numbers, NULL, quoted strings, 0x hex) and strings never hold a
    raw newline (mariadb-dump escapes it). So when a statement puts one row per line
    (`VALUES\n(...),\n(...);\n`, mariadb-dump 10.x), `\n(` starts a row and `;\n` ends the
    statement: counted at C speed. On one line (`VALUES (...),(...);`, mysqldump), `(` and `;`
    are counted outside string literals. Stored programs (between `DELIMITER ;;` and
    `DELIMITER ;`) are skipped, except for their CREATE lines.
    """

    def __init__(self) -> None:
        self.row_counts: dict[str, int] = {}
        self.engines: dict[str, str] = {}
        self.objects = dict.fromkeys(OBJECT_KINDS, 0)
        self.completed = False  # mariadb-dump's "-- Dump completed" trailer was seen
        self.binlog_position: dict[str, Any] = {}  # file, position, gtid (--master-data=2 --gtid)
        self._mode = _HEAD
        self._head = bytearray()
        self._data_table: str | None = None  # inside this table's data section
        self._structure_table: str | None = None  # inside this table's CREATE TABLE
        self._insert_table = ""
        self._program = False
        self._last = b""  # in _ROWS mode: the last byte of the previous chunk

    def feed(self, data: bytes) -> None:
        """Scan the next chunk of the dump."""
        pos, size = 0, len(data)
        while pos < size:
            if self._mode == _HEAD:
                pos = self._head_step(data, pos)
            elif self._mode == _SKIP:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    return
                pos, self._mode = newline + 1, _HEAD
            elif self._mode == _AFTER_VALUES:
                self._mode, self._last = (_ROWS, b"") if data[pos] == ord("\n") else (_VALUES, b"")
            elif self._mode == _ROWS:
                pos = self._rows_step(data, pos)
            elif self._mode == _VALUES:
                # Up to the ';' that ends the INSERT, a string the chunk cuts, or the chunk's end.
                end = _VALUES_RUN.match(data, pos).end()  # type: ignore[union-attr]  # matches ""
                self.row_counts[self._insert_table] += _LITERAL.sub(b"", data[pos:end]).count(b"(")
                if end == size:
                    return
                self._mode = _STRING if data[end] == ord("'") else _SKIP
                pos = end + 1
            elif self._mode == _STRING:
                # The body stops at the closing quote, or at a backslash that ends the chunk.
                end = _STRING_BODY.match(data, pos).end()  # type: ignore[union-attr]  # matches ""
                if end == size:
                    return
                if data[end] == ord("\\"):
                    self._mode = _ESCAPE
                    return
                pos, self._mode = end + 1, _VALUES
            else:  # _ESCAPE: the byte after a backslash that ended the previous chunk
                pos, self._mode = pos + 1, _STRING

    def _rows_step(self, data: bytes, pos: int) -> int:
        rows = self.row_counts
        if self._last:  # pairs split between the previous chunk and this one
            last, self._last = self._last, b""
            if last == b";" and data[pos] == ord("\n"):
                self._mode = _HEAD
                return pos + 1
            rows[self._insert_table] += last == b"\n" and data[pos] == ord("(")
        end = data.find(b";\n", pos)
        rows[self._insert_table] += data.count(b"\n(", pos, len(data) if end < 0 else end)
        if end < 0:
            self._last = data[-1:]
            return len(data)
        self._mode = _HEAD
        return end + 2

    def _head_step(self, data: bytes, pos: int) -> int:
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline
        take = min(end, pos + HEAD_LIMIT - len(self._head))
        self._head += data[pos:take]
        if self._data_table is not None and (insert := _INSERT.match(self._head)):
            self._insert_table = _name(insert.group(1))
            self.row_counts.setdefault(self._insert_table, 0)
            rest = bytes(self._head[insert.end() :])
            self._head.clear()
            self._mode = _AFTER_VALUES
            self.feed(rest)
            return take
        if take == newline:
            self._line(bytes(self._head).rstrip(b"\r"))
            self._head.clear()
            return newline + 1
        if len(self._head) >= HEAD_LIMIT:
            self._line(bytes(self._head))
            self._head.clear()
            self._mode = _SKIP
        return take

    def _line(self, line: bytes) -> None:
        if line.startswith(b"DELIMITER "):
            self._program = line.rstrip() == b"DELIMITER ;;"
        elif self._program:
            for kind, pattern in _PROGRAMS.items():
                if pattern.match(line):
                    self.objects[kind] += 1
        elif found := _DATA.match(line):
            self._data_table = _name(found.group(1))
            self.row_counts.setdefault(self._data_table, 0)
        elif line.startswith((b"UNLOCK TABLES", b"-- ")):
            self._data_table = None
            if found := _STRUCTURE.match(line):
                self._structure_table = _name(found.group(1))
            elif line.startswith(b"-- Final view structure for view "):
                self.objects["views"] += 1
            elif line.startswith(b"-- Dump completed"):
                self.completed = True
            elif found := _BINLOG_COORDINATES.match(line):
                self.binlog_position.update(file=found.group(1).decode(), position=int(found.group(2)))
            elif found := _BINLOG_GTID.match(line):
                self.binlog_position["gtid"] = found.group(1).decode()
        elif self._structure_table is not None and (found := _ENGINE.match(line)):
            self.engines[self._structure_table] = found.group(1).decode()
            self._structure_table = None

    def check_complete(self) -> None:
        """Raise SourceError unless the whole dump, up to its trailer, was scanned."""
        if not self.completed or self._mode in (_VALUES, _STRING, _ESCAPE):
            raise SourceError("the dump output ended before mariadb-dump's '-- Dump completed' trailer")


# --------------------------------------------------------------------------- streams
class ScanningReader(io.RawIOBase):
    """The dump's stdout as the consumer reads it, fed to a DumpScanner on the way."""

    def __init__(self, pipe: IO[bytes], scanner: DumpScanner) -> None:
        self._pipe = pipe
        self._scanner = scanner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        data = self._pipe.read(size if size and size > 0 else CHUNK)
        self._scanner.feed(data)
        return data


def version_of(text: str) -> str:
    """The version in a MySQL/MariaDB tool's `--version` output."""
    found = re.search(r"Distrib (\S+?),|Ver (\S+)", text)
    return (found.group(1) or found.group(2)) if found else text.strip()


def dump_facts(
    scanner: DumpScanner, server_version: str, dump_tool: str, tool_version: str, database: str
) -> dict[str, Any]:
    """The manifest facts of a finished dump whose output `scanner` has read to its end."""
    return {
        "row_counts": dict(sorted(scanner.row_counts.items())),
        "tables": len(scanner.row_counts),
        "objects": dict(scanner.objects),
        "non_transactional_tables": {
            table: scanner.engines.get(table, "unknown")
            for table in sorted(scanner.row_counts)
            if scanner.engines.get(table) not in TRANSACTIONAL_ENGINES
        },
        "server_version": server_version,
        "dump_tool": dump_tool.rsplit("/", 1)[-1],
        "dump_tool_version": tool_version,
        "database": database,
        **({"binlog_position": dict(scanner.binlog_position)} if scanner.binlog_position else {}),
    }


# --------------------------------------------------------------------------- the source
@register_source("mysql")
class MysqlDumpSource:
    """A MySQL or MariaDB database (`type: mysql`), dumped with mariadb-dump, restored with mariadb."""

    format = "sql"
    extension = DUMP_EXTENSIONS["mysql"]

    def __init__(self, config: MysqlSource) -> None:
        self.config = config
        self.name = config.name

    # ------------------------------------------------------------------ dump
    @contextmanager
    def dump(self) -> Iterator[DumpStream]:
        """Start mariadb-dump on one database; yield its output; kill it on leaving.

        Raises ConfigError for a missing tool, SourceError when the database cannot be reached or
        routines cannot be read; `finish()` raises SourceError when mariadb-dump fails or its
        output is incomplete. With `via`, the errors of `mysql_remote.remote_dump`.
        """
        if self.config.via:
            with remote_dump("mysql")(self.config, self.format, self.extension) as remote:
                yield remote
            return
        config = self.config
        password = config.password.resolve() if config.password else None
        endpoint = Endpoint(config.user, config.database, config.host, config.port, config.socket, password)
        dump_tool = _find_tool("mariadb-dump", "mysqldump")
        client = _find_tool("mariadb", "mysql")
        server_version = preflight(lambda sql, purpose: run_sql(client, endpoint, sql, purpose), endpoint)
        tool_version = version_of(runner.run([dump_tool, "--version"], timeout=60).stdout)
        from backupctl.sources.mariadb_grants import account_secrets, accounts_needed

        def query(sql: str) -> list[list[str]]:
            return run_sql(client, endpoint, sql, "read the database's grants")

        accounts = accounts_needed(query, endpoint.database)  # they travel with it (mariadb_grants.py)
        # Before the dump starts: an account whose password cannot be read refuses the backup.
        secrets = account_secrets(query, accounts, config.user) if config.roles.passwords else None
        scanner = DumpScanner()
        with password_options(password) as (first, fds):
            binlog = BINLOG_DUMP_OPTIONS if config.pitr else []
            argv = [dump_tool, *first, *endpoint.options(), *DUMP_OPTIONS, *binlog, "--", endpoint.database]
            process = runner.start(argv, pass_fds=fds)
        assert process.stdout is not None and process.stderr is not None
        runner.widen_pipe(process.stdout)  # as pg_dump's: fewer wake-ups per MiB
        stderr = runner.StderrTail(process.stderr)
        try:

            def finish() -> dict[str, Any]:
                # Closing our end first turns "the consumer stopped early" into a failed dump
                # instead of a deadlock on a full pipe.
                process.stdout.close()  # type: ignore[union-attr]
                status = process.wait()
                if status != 0:
                    raise SourceError(
                        f"mariadb-dump of {self.name} exited with status {status}: {stderr.text()}"
                    )
                scanner.check_complete()
                if config.pitr and "position" not in scanner.binlog_position:
                    raise SourceError(
                        f"the dump of {self.name} has no binlog position: binary logging is off on the "
                        "server (log_bin); restores to a point in time need it (backupctl doctor)"
                    )
                facts = dump_facts(scanner, server_version, dump_tool, tool_version, endpoint.database)
                return {**facts, "accounts": accounts}

            reader = ScanningReader(process.stdout, scanner)
            yield DumpStream(cast(BinaryIO, reader), self.format, self.extension, finish, secrets)
        finally:
            process.stdout.close()
            runner.stop(process)
            stderr.join()

    # ------------------------------------------------------------------ restore
    def restore(self, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome:
        """Feed the stream to the mariadb client in `request.to_db`; count what was restored.

        `create` creates a missing database. An existing database must be empty unless `force`
        or `clean` (the dump drops and recreates the objects it holds; others are kept). Raises
        ConfigError before writing anything, SourceError when the client fails. The stream is
        always read to its end. With `via`, the restore still runs here (see `_via_note`).
        """
        if not request.to_db:
            raise ConfigError(
                f"restoring {self.name} needs a destination database URL (--to-db)"
                + (f" ({self._via_note()})" if self.config.via else "")
            )
        if request.no_owner:
            raise ConfigError(
                "--no-owner is not supported for MySQL sources: restore as a user allowed to set "
                "other definers (SET USER or SUPER)"
            )
        endpoint = parse_url(request.to_db, request.password)
        if request.as_name:  # a new database next to the live one (created below, must not exist)
            check_name(request.as_name)
            endpoint, request = replace(endpoint, database=request.as_name), replace(request, create=True)
        # Through the engine (--to-container): the container's own client; the URL is the one inside it.
        client: MysqlClient = (
            ContainerClient(request.container)
            if request.container
            else LocalClient(_find_tool("mariadb", "mysql"))
        )
        notes = [self._via_note()] if self.config.via else []
        self._prepare_destination(client, endpoint, request)
        options = list(CLIENT_OPTIONS)
        jobs = request.jobs if request.jobs > 0 else default_jobs()
        if jobs > 1:
            plan = SpoolPlan.decide(request.size_hint)
            if plan.possible:
                return self._restore_parallel(stream, request, endpoint, client, options, jobs, plan, notes)
            notes.append(f"restored with one connection: {plan.reason}")
        process = client.start(endpoint, options)
        assert process.stdin is not None and process.stderr is not None
        stderr = runner.StderrTail(process.stderr)
        try:
            try:
                while chunk := stream.read(CHUNK):
                    process.stdin.write(chunk)
                process.stdin.close()
            except BrokenPipeError:
                pass  # the client stopped reading: its status and stderr say why
            status = process.wait()
        finally:
            runner.stop(process)
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
        # Whoever feeds us may hash the whole stream: read what the client did not take.
        while stream.read(CHUNK):
            pass
        if status != 0:
            raise SourceError(f"mariadb restore of {self.name} exited with status {status}: {stderr.text()}")
        stderr.join()
        facts = self._inventory(client, endpoint)
        return RestoreOutcome(destination=_shown(client, request), facts=facts, notes=notes)

    def recreate_roles(
        self, recorded: dict[str, Any], request: RestoreRequest, stage: RestoreStage,
        secrets: dict[str, str] | None = None,
    ) -> RolesOutcome:  # fmt: skip
        """After the data (table grants need the tables): create the accounts the snapshot
        recorded (sources/mariadb_grants.py) that the destination server lacks, with their
        recorded authentication when `secrets` hold it (else locked), and their grants on the
        restored database. Raises SourceError naming what to do."""
        accounts = recorded.get("accounts")
        if stage != "after" or request.roles == "skip" or not request.to_db:
            return RolesOutcome()
        if not isinstance(accounts, list):
            return RolesOutcome(notes=["the snapshot recorded no accounts (made before they were captured)"])
        if request.container:
            return RolesOutcome(notes=["accounts are not recreated through --to-container"])
        endpoint = parse_url(request.to_db, request.password)
        database = request.as_name or endpoint.database
        client = _find_tool("mariadb", "mysql")
        from backupctl.sources.mariadb_grants import create_missing_accounts

        try:
            return create_missing_accounts(
                lambda sql: run_sql(client, endpoint, sql, "create the accounts the database needs"),
                accounts, str(recorded.get("database") or self.config.database), database, secrets,
            )  # fmt: skip
        except SourceError as error:
            raise SourceError(
                f"{error}; the data of {self.name} is restored, its accounts are not: create them by hand "
                "or restore as a user with CREATE USER and GRANT OPTION (--roles skip to restore data only)"
            ) from None

    def _restore_parallel(
        self,
        stream: BinaryIO,
        request: RestoreRequest,
        endpoint: Endpoint,
        client: MysqlClient,
        options: list[str],
        jobs: int,
        plan: SpoolPlan,
        notes: list[str],
    ) -> RestoreOutcome:
        """Structure, then table data over `jobs` connections, then triggers/views/routines
        (backupctl.sources.mysql_parallel). Raises SourceError."""

        def start_client() -> subprocess.Popen[bytes]:
            return client.start(endpoint, options)

        with private_directory(plan.directory) as spool:
            try:
                note = restore_parallel(stream, spool, jobs, start_client, f"mariadb restore of {self.name}")
            finally:
                while stream.read(CHUNK):  # whoever feeds us may hash the whole stream
                    pass
        if note:
            notes.append(note)
        facts = self._inventory(client, endpoint)
        return RestoreOutcome(destination=_shown(client, request), facts=facts, notes=notes, jobs=jobs)

    def _prepare_destination(self, client: MysqlClient, endpoint: Endpoint, request: RestoreRequest) -> None:
        """Check (and with `create`, create) the destination database. Raises ConfigError."""
        server = replace(endpoint, database="information_schema")  # the database may not exist yet
        sql = _DESTINATION_SQL.format(name=quote_string(endpoint.database))
        (row,) = client.query(server, sql, "inspect the restore destination")
        exists, tables, programs = int(row[0]), int(row[1]), int(row[2]) + int(row[3])
        if exists and request.as_name:
            raise ConfigError(
                f"database {endpoint.database} already exists on the destination; choose another "
                "--as name (nothing was changed)"
            )
        if not exists and not request.create:
            raise ConfigError(f"database {endpoint.database} does not exist on the destination; use --create")
        if (tables or programs) and not (request.force or request.clean):
            raise ConfigError(
                f"the destination database {endpoint.database} already has {tables} tables or views and "
                f"{programs} routines or events; restore into an empty database, or use --clean or --force"
            )
        if not exists:
            create = f"CREATE DATABASE {quote_identifier(endpoint.database)} CHARACTER SET utf8mb4"
            client.query(server, create, "create the restore destination")

    def _inventory(self, client: MysqlClient, endpoint: Endpoint) -> dict[str, Any]:
        """Exact row counts of the base tables, and counts of views/triggers/routines/events."""
        name = quote_string(endpoint.database)
        listed = client.query(endpoint, _TABLES_SQL.format(name=name), "list the restored tables")
        tables = [bytes.fromhex(row[0]).decode() for row in listed]  # HEX: any name survives --batch
        counting = "".join(f"SELECT COUNT(*) FROM {quote_identifier(table)};\n" for table in tables)
        counts = client.query(endpoint, counting, "count the restored rows") if tables else []
        (objects,) = client.query(endpoint, _OBJECTS_SQL.format(name=name), "count the restored objects")
        return {
            "row_counts": {table: int(row[0]) for table, row in zip(tables, counts, strict=True)},
            "objects": dict(zip(OBJECT_KINDS, map(int, objects), strict=True)),
        }

    # ------------------------------------------------------------------ the rest
    def compare(self, manifest_facts: dict[str, Any], restored_facts: dict[str, Any]) -> list[str]:
        """Per-table row count differences, and missing or extra views/triggers/routines/events."""
        problems = count_rows_equal("mysql", manifest_facts, restored_facts)
        want, got = manifest_facts.get("objects"), restored_facts.get("objects")
        if want is not None and got is not None:
            for kind in OBJECT_KINDS:
                if want.get(kind, 0) != got.get(kind, 0):
                    before, after = want.get(kind, 0), got.get(kind, 0)
                    problems.append(f"mysql has {after} {kind} after restore, the snapshot had {before}")
        return problems

    def describe(self) -> dict[str, Any]:
        """Secret-free description: the password appears as its reference only."""
        return {
            "name": self.name,
            "type": "mysql",
            "format": self.format,
            "host": self.config.host,
            "port": self.config.port,
            "socket": self.config.socket,
            "user": self.config.user,
            "database": self.config.database,
            "password": str(self.config.password) if self.config.password else None,
            "via": self.config.via,
        }

    def estimate_size(self) -> int | None:
        """Bytes of the database's table data on the server (information_schema's DATA_LENGTH;
        indexes are not in the dump; an estimate for InnoDB, not the dump's size), for progress
        bars. None with `via` (the server may be reachable from that host only) and whenever it
        cannot be read: it never raises.
        """
        if self.config.via:
            return None
        config = self.config
        try:
            password = config.password.resolve() if config.password else None
            endpoint = Endpoint(
                config.user, config.database, config.host, config.port, config.socket, password
            )
            sql = _SIZE_SQL.format(name=quote_string(config.database))
            client = _find_tool("mariadb", "mysql")
            rows = run_sql(client, endpoint, sql, "estimate the database size", timeout=ESTIMATE_TIMEOUT)
            return int(rows[0][0])
        except Exception as error:  # a hint only: whatever fails, the dump reports it properly
            log.debug("no size estimate for %s: %s", self.name, mask(str(error)))
            return None

    def _via_note(self) -> str:
        # `via` serves dumps only: the mariadb client restores from this host (the backup or
        # staging host) into --to-db, which must be reachable from here (directly or by a tunnel).
        return f"restores do not go through via {self.config.via}: the mariadb client runs here, into --to-db"
