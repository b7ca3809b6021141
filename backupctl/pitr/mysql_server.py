"""Talking to a MySQL/MariaDB server about its binary logs: state, rotation, fetching a file.

Capture design (docs/pitr-mysql.md has the measurements): backupctl *collects closed binlogs*.
Each `binlog collect` pass issues FLUSH BINARY LOGS when transactions were written since the
newest archived file (the server then closes the current file with a ROTATE event and opens the
next), and copies every closed file not yet archived with `mariadb-binlog
--read-from-remote-server --raw` (the replication protocol: it works against a remote server and
needs no access to its data directory). Only files the server has closed are ever archived, so a
partial file is never presented as complete, and a server restart or a killed collector leaves no
hole: the next pass copies what is missing, from the server's own files. What can leave a hole
is the server purging a file before a pass copied it (binlog_expire_logs_seconds, PURGE BINARY
LOGS, RESET MASTER): the pass then reports the missing names loudly, and verify/status show the
gap until a new dump starts a fresh chain after it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from backupctl.core import runner
from backupctl.core.secrets import mask
from backupctl.errors import SourceError
from backupctl.pitr.mysql_binlog import BinlogInfo, parse_binlog_file
from backupctl.sources.mysql import Endpoint, _find_tool, password_options, run_sql

FETCH_TIMEOUT = 3600.0
# Server variables doctor and collect read; missing ones (older servers, MySQL) read as "".
VARIABLES = ("log_bin", "log_bin_basename", "binlog_format", "server_id", "gtid_binlog_pos",
             "binlog_expire_logs_seconds", "expire_logs_days", "version")  # fmt: skip


@dataclass(frozen=True)
class ServerBinlogs:
    """The server's binary logs right now: `files` oldest first, the last one being written."""

    files: list[tuple[str, int]]  # (name, size)
    gtid_binlog_pos: str

    @property
    def closed(self) -> list[str]:
        """Names of the files the server will not append to any more (all but the last)."""
        return [name for name, _size in self.files[:-1]]

    @property
    def current(self) -> str | None:
        return self.files[-1][0] if self.files else None


class BinlogServer:
    """The binlog side of one MySQL/MariaDB server, reached as `endpoint` (its database unused)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client = _find_tool("mariadb", "mysql")

    def query(self, sql: str, purpose: str) -> list[list[str]]:
        """Tab-split rows of `sql`; raises SourceError naming `purpose`."""
        return run_sql(self.client, self.endpoint, sql, purpose, timeout=120)

    def variables(self) -> dict[str, str]:
        """The VARIABLES of the server ("" for the ones it does not have)."""
        listed = ",".join(f"'{name}'" for name in VARIABLES)
        rows = self.query(
            f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({listed})", "read the server's binlog settings"
        )
        found = {row[0]: (row[1] if len(row) > 1 else "") for row in rows}
        return {name: found.get(name, "") for name in VARIABLES}

    def grants(self) -> list[str]:
        """SHOW GRANTS of the connecting user."""
        return [row[0] for row in self.query("SHOW GRANTS", "read the backup user's privileges")]

    def binlogs(self) -> ServerBinlogs:
        """SHOW BINARY LOGS and @@gtid_binlog_pos. Raises SourceError (e.g. log_bin off)."""
        rows = self.query("SHOW BINARY LOGS", "list the server's binary logs")
        (position,) = self.query("SELECT @@GLOBAL.gtid_binlog_pos", "read the binlog GTID position")
        return ServerBinlogs([(row[0], int(row[1])) for row in rows], position[0])

    def flush(self) -> None:
        """FLUSH BINARY LOGS: close the current file (needs RELOAD). Raises SourceError."""
        self.query("FLUSH BINARY LOGS", "close the current binary log (FLUSH BINARY LOGS)")

    def fetch(self, name: str, directory: Path) -> tuple[Path, BinlogInfo]:
        """Copy binlog `name` from the server into `directory`; return its path and what it covers.

        Uses the replication protocol (REPLICATION SLAVE privilege). The copy is written under a
        temporary directory and moved into place only once parsed: a killed fetch leaves no file
        that looks whole. Raises SourceError when the copy fails or is not a whole binlog.
        """
        tool = _find_tool("mariadb-binlog", "mysqlbinlog")
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=directory) as scratch:
            with password_options(self.endpoint.password) as (first, fds):
                argv = [tool, *first, *self.endpoint.options(), "--read-from-remote-server", "--raw",
                        f"--result-file={scratch}/", "--", name]  # fmt: skip
                done = runner.run(argv, check=False, timeout=FETCH_TIMEOUT, pass_fds=fds)
            copied = Path(scratch) / name
            if done.returncode != 0 or not copied.is_file():
                detail = mask(runner.last_lines(done.stderr, 2)) or f"exit status {done.returncode}"
                raise SourceError(f"cannot copy binlog {name} from {self.endpoint.describe()}: {detail}")
            info = parse_binlog_file(copied, allow_truncated_tail=True)
            final = directory / name
            copied.replace(final)
        return final, info
