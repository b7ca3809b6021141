"""Replaying archived binlogs on top of a restored dump: `mariadb-binlog ... | mariadb`.

`mariadb-binlog --start-position=P` (P: the dump's position, applied to the first file only)
`--stop-datetime=T` (the first event at or after T stops it; a transaction cut there has no
COMMIT, so the client's session ends and the server rolls it back) `--database=SOURCE` (only
events of the dumped database: row events by their table's database, statements by their default
database) and `--rewrite-db=SOURCE->DEST` for a restore under another name. TZ=UTC for the
binlog tool: --stop-datetime is read in its local time zone.

Known limits of binlog filtering (the same as replication's binlog-do-db): a statement (DDL)
run without the database as default (`USE shop`) is filtered out, and a statement that names
its tables with the database (`ALTER TABLE shop.t`) is not rewritten by --rewrite-db.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backupctl.core import runner
from backupctl.errors import SourceError
from backupctl.sources.mysql import CHUNK, Endpoint, _find_tool, password_options

REPLAY_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class Replay:
    """What `replay` did: the bytes of SQL the client read, and how long it took."""

    sql_bytes: int
    seconds: float


def binlog_argv(
    tool: str, files: Sequence[Path], start_position: int, stop: datetime | None, database: str, into: str
) -> list[str]:
    """The mariadb-binlog command line of a replay (no secret on it: the files are local)."""
    argv = [tool, "--no-defaults", f"--start-position={start_position}", f"--database={database}"]
    if stop is not None:
        argv.append(f"--stop-datetime={stop.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')}")
    if into != database:
        argv.append(f"--rewrite-db={database}->{into}")
    return [*argv, "--", *map(str, files)]


def replay(
    files: Sequence[Path], start_position: int, stop: datetime | None, database: str, destination: Endpoint
) -> Replay:
    """Pipe the decoded binlogs into the mariadb client connected to `destination.database`.

    Raises SourceError naming the failing program and its last stderr lines.
    """
    started = time.monotonic()
    tool = _find_tool("mariadb-binlog", "mysqlbinlog")
    client = _find_tool("mariadb", "mysql")
    argv = binlog_argv(tool, files, start_position, stop, database, destination.database)
    with password_options(destination.password) as (first, fds):
        client_argv = [client, *first, *destination.options(), "--binary-mode", "--batch",
                       "--max-allowed-packet=1G", "--", destination.database]  # fmt: skip
        applier = runner.start(client_argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=fds)
    decoder = runner.start(argv, env={"TZ": "UTC"})
    assert decoder.stdout is not None and decoder.stderr is not None
    assert applier.stdin is not None and applier.stderr is not None
    decoder_errors, applier_errors = runner.StderrTail(decoder.stderr), runner.StderrTail(applier.stderr)
    sql_bytes = 0
    try:
        # Through Python rather than a direct pipe, to count the bytes; flat memory, 1 MiB chunks.
        try:
            while chunk := decoder.stdout.read(CHUNK):
                sql_bytes += len(chunk)
                applier.stdin.write(chunk)
            applier.stdin.close()
        except BrokenPipeError:
            pass  # the client stopped reading: its status says why
        decoder.stdout.close()  # a decoder still writing gets SIGPIPE instead of blocking
        applied, decoded = applier.wait(), decoder.wait()
    finally:
        for process in (decoder, applier):
            runner.stop(process)
        try:
            applier.stdin.close()
        except BrokenPipeError:
            pass
    if applied != 0:
        raise SourceError(
            f"replaying the binlogs into {destination.describe()} failed: {applier_errors.text()}"
        )
    if decoded != 0:
        raise SourceError(f"mariadb-binlog exited with status {decoded}: {decoder_errors.text()}")
    return Replay(sql_bytes, time.monotonic() - started)
