"""PostgreSQL dump through `via: ssh://user@host[:port]`: pg_dump runs on that host.

The same guarantee as a local dump: the row counts in the manifest come from the very snapshot
pg_dump dumps. The database may listen only on the remote host's localhost, so the session that
holds the snapshot runs there too: `psql` on a second SSH channel, driven through its stdin.

    channel 1  pg_dump --version                          -> pg_dump_version
    channel 2  psql: BEGIN REPEATABLE READ READ ONLY; pg_export_snapshot(); server_version;
               the user tables (as JSON: names may hold any character)
    channel 3  pg_dump --snapshot=ID ...                  -> the stream we yield
    channel 2  count(*) per dumped table (runs remotely while pg_dump streams)
    finish():  pg_dump's exit status; the counts; COMMIT; psql's exit status

The transaction stays open until pg_dump has finished. Both tools get the password as the
first line of their stdin (see `backupctl.sources.remote`), never on a command line. psql is
taken from the directory of `pg_dump` when that is a path, else from the remote PATH.

A simpler design, forwarding the database port over SSH and keeping the snapshot session in
psycopg here, was rejected: servers often forbid TCP forwarding, and a URL naming a Unix
socket on the remote host could not be reached that way. psql reaches whatever pg_dump reaches.
"""

from __future__ import annotations

import json
import posixpath
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paramiko
from psycopg.conninfo import make_conninfo

from backupctl.core import ssh
from backupctl.errors import SourceError
from backupctl.policy.schema import PostgresSource
from backupctl.sources import remote
from backupctl.sources.base import DumpStream
from backupctl.sources.postgres import TableSelection, version_of
from backupctl.sources.postgres_sql import SNAPSHOT_SESSION_SETTINGS, TABLES_QUERY, Table, count_query

# jsonb, not json_agg: json_agg puts line breaks between elements, and we read one line per answer.
_TABLES_JSON = f"SELECT coalesce(jsonb_agg(t), '[]') FROM ({TABLES_QUERY}) t"


class _SnapshotSession:
    """A remote psql holding a REPEATABLE READ READ ONLY transaction with an exported snapshot."""

    def __init__(self, process: remote.RemoteProcess, where: remote.ViaHost, source: str) -> None:
        self._process = process
        self._where = where
        self._source = source
        self._writer: threading.Thread | None = None

    @classmethod
    def open(
        cls, client: paramiko.SSHClient, config: PostgresSource, password: str | None, where: remote.ViaHost
    ) -> tuple[_SnapshotSession, str, str, list[Table]]:
        """Start psql and the transaction: (session, snapshot id, server version, user tables)."""
        psql = posixpath.join(posixpath.dirname(config.pg_dump), "psql")
        # application_name as the local path's psycopg session; a connect timeout so that an
        # unreachable server fails instead of hanging the handshake.
        conninfo = make_conninfo(config.url, application_name="backupctl", connect_timeout="30")
        argv = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", f"--dbname={conninfo}"]
        secret = ("PGPASSWORD", password) if password else None
        session = cls(remote.RemoteProcess(client, argv, secret=secret, keep_stdin=True), where, config.name)
        try:
            session._send(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                + "".join(f"{setting};\n" for setting in SNAPSHOT_SESSION_SETTINGS)
                + "SELECT pg_export_snapshot();\n"
                "SELECT current_setting('server_version');\n"
                f"{_TABLES_JSON};\n"
            )
            snapshot = session._answer(remote.ANSWER_TIMEOUT)
            server_version = version_of(session._answer(remote.ANSWER_TIMEOUT))
            answer = session._answer(remote.ANSWER_TIMEOUT)
            try:
                rows = json.loads(answer)
            except ValueError:
                raise SourceError(
                    f"listing the tables of {config.name} on {where}: unexpected answer {answer[:80]!r}"
                ) from None
        except BaseException:
            session.abort()
            raise
        tables = [
            Table(row["nspname"], row["relname"], row["relkind"], row["relpersistence"],
                  row["pg_table_is_visible"])
            for row in rows
        ]  # fmt: skip
        return session, snapshot, server_version, tables

    def start_counting(self, tables: list[Table]) -> None:
        """Send a count(*) per table; psql runs them while pg_dump streams.

        A thread sends them: with thousands of tables the statements may exceed the channel
        window, and the sender must then wait for psql, which must not hold up the dump.
        """
        script = "".join(f"{count_query(table).as_string(None)};\n" for table in tables)

        def send() -> None:
            try:
                self._process.send(script)
            except (OSError, EOFError, paramiko.SSHException):
                pass  # psql is gone: reading the counts reports its exit status and stderr

        self._writer = threading.Thread(target=send, name="psql-count-writer", daemon=True)
        self._writer.start()

    def counts(self, tables: list[Table]) -> dict[str, int]:
        """Read the answers of `start_counting`, keyed "schema.table"."""
        counts: dict[str, int] = {}
        for table in tables:
            answer = self._answer(None)  # a count(*) of a huge table may take its time
            try:
                counts[table.key] = int(answer)
            except ValueError:
                raise SourceError(
                    f"counting rows of {self._source} on {self._where}: unexpected answer {answer[:80]!r}"
                ) from None
        if self._writer is not None:
            self._writer.join()
        return counts

    def commit(self) -> None:
        """End the transaction and psql; SourceError when psql failed."""
        try:
            self._process.send("COMMIT;\n")
            self._process.close_stdin()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # psql already exited: its status below says why
        done = self._process.finish(drain=True)
        if not done.ok:
            raise SourceError(self._failure(done))

    def abort(self) -> None:
        """Close psql's channel: it sees EOF and ends, rolling the transaction back."""
        self._process.abort()

    def _send(self, text: str) -> None:
        try:
            self._process.send(text)
        except (OSError, EOFError, paramiko.SSHException):
            raise SourceError(self._failure(self._process.finish())) from None

    def _answer(self, timeout: float | None) -> str:
        """psql's next answer line; SourceError with its stderr when it exited instead."""
        try:
            line = self._process.readline(timeout)
        except TimeoutError as error:
            raise SourceError(f"the snapshot session of {self._source}: {error}") from None
        if line is None:
            raise SourceError(self._failure(self._process.finish()))
        return line

    def _failure(self, done: ssh.RemoteExit) -> str:
        return remote.failure(f"the snapshot session (psql) of {self._source}", self._where, done)


@contextmanager
def remote_dump(
    config: PostgresSource, database: str, artifact_format: str, extension: str
) -> Iterator[DumpStream]:
    """Dump `config` through its `via` host; see the module docstring. Same contract as
    `PostgresDumpSource.dump`: leaving the context stops every remote command and disconnects.

    Connects with the source's `via_key_file` and `via_known_hosts` (the environment may
    override them, see `backupctl.sources.remote`). Raises the `core.ssh` errors for the
    connection (host key, authentication, unreachable; a missing key or known_hosts file is one
    of them, before connecting), SourceError when a remote tool fails (its exit status and
    stderr in the message).
    """
    assert config.via is not None
    password = config.password.resolve() if config.password else None
    selection = TableSelection.from_dump_options(config.dump_options)
    client, where = remote.connect_via(
        config.via, config.name, key_file=config.via_key_file, known_hosts=config.via_known_hosts
    )
    session: _SnapshotSession | None = None
    dump: remote.RemoteProcess | None = None
    try:
        try:
            version_text, done = remote.run_to_end(client, [config.pg_dump, "--version"])
            if not done.ok:
                raise SourceError(remote.failure(f"{config.pg_dump} --version", where, done))
            pg_dump_version = version_of(version_text)
            session, snapshot, server_version, all_tables = _SnapshotSession.open(
                client, config, password, where
            )
            tables = [table for table in all_tables if selection.includes(table)]
            argv = [
                config.pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}",
                f"--dbname={config.url}", *config.dump_options,
            ]  # fmt: skip
            secret = ("PGPASSWORD", password) if password else None
            dump = remote.RemoteProcess(client, argv, secret=secret)
        except (ssh.SshError, TimeoutError) as error:
            raise SourceError(f"source {config.name} via {where}: {error}") from None
        session.start_counting(tables)
        running, holder = dump, session

        def finish() -> dict[str, Any]:
            ended = running.finish()
            if not ended.ok:
                raise SourceError(remote.failure(f"pg_dump of {config.name}", where, ended))
            counted = holder.counts(tables)
            holder.commit()
            # Tables whose data pg_dump leaves out are in the artifact, empty.
            counts = {t.key: counted[t.key] if selection.has_data(t) else 0 for t in tables}
            return {
                "row_counts": counts,
                "server_version": server_version,
                "pg_dump_version": pg_dump_version,
                "database": database,
                "tables": len(counts),
                "dumped_on": str(where),
            }

        yield DumpStream(dump.stdout, artifact_format, extension, finish)
    finally:
        if dump is not None:
            dump.abort()
        if session is not None:
            session.abort()
        client.close()
