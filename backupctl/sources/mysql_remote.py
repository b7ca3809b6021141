"""MySQL/MariaDB dump through `via: ssh://user@host[:port]`: mariadb-dump runs on that host.

The same guarantees as a local dump (`backupctl.sources.mysql`): the same mariadb-dump options,
the same refusal of a backup user blind to other definers' routines, and row counts counted by
the same DumpScanner in the output as it streams back, so they describe exactly what the artifact
holds. The database may listen only on the remote host's localhost or socket: every tool runs
there, each on its own SSH channel.

    channel 1  sh: command -v mariadb-dump mysqldump mariadb mysql     -> the remote tools
    channel 2  mariadb-dump --version                                   -> dump_tool_version
    channel 3  mariadb --execute='SELECT VERSION()'                     -> server_version
    channel 4  mariadb --execute='SELECT COUNT(*) FROM mysql.proc ...'  -> the routines check
    channel 5  mariadb-dump --defaults-extra-file=/dev/fd/3 ... -- DB   -> the stream we yield

The preflight (channels 3 and 4) runs remotely rather than being skipped: it is what turns a
user without SELECT on mysql.proc from a silently incomplete dump into a refusal, and the mariadb
client ships in the same package as mariadb-dump (mariadb-client, mysql-client), so it is there.

The password: `--defaults-extra-file=/dev/fd/3` as for a local dump, the option file built on
the remote side. The option-file-quoted password is the first line of the channel's stdin; a
constant shell wrapper reads it and printf's it (a shell builtin) into a pipe on fd 3 of the
tool (`remote.SecretPipe`). So it is on no command line on either host, in no environment
(not MYSQL_PWD), in no SSH `env` request and on no disk. User, host, port and socket go on argv
and refer to the remote host: `host: localhost` is the server next to mariadb-dump there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

import paramiko

from backupctl.core import ssh
from backupctl.core.secrets import register_secret
from backupctl.errors import SourceError
from backupctl.policy.schema import MysqlSource
from backupctl.sources import remote
from backupctl.sources.base import DumpStream
from backupctl.sources.mysql import (
    DUMP_OPTIONS,
    DumpScanner,
    Endpoint,
    ScanningReader,
    dump_facts,
    option_file_value,
    preflight,
    version_of,
)

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENTS = ("mariadb", "mysql")
# The remote side's option file; the password line is sent already quoted (one line, always).
OPTION_FILE = remote.SecretPipe(3, "[client]\\npassword=%s\\n")
# Prints the path of each program found on the remote PATH, in the order given.
_FIND_PROGRAMS = 'for program do command -v "$program" || :; done'


class _RemoteTools:
    """The MySQL tools on the `via` host and the way the password reaches them."""

    def __init__(
        self, client: paramiko.SSHClient, where: remote.ViaHost, source: str, password: str | None
    ) -> None:
        self.client = client
        self.where = where
        self.source = source
        self.secret = (OPTION_FILE, option_file_value(password)) if password else None
        found = self._find_programs([*DUMP_TOOLS, *CLIENTS])
        self.dump_tool = self._pick(found, DUMP_TOOLS, "to dump the database")
        self.client_tool = self._pick(
            found, CLIENTS, "to check that the database and its routines are readable"
        )

    def leading_options(self) -> list[str]:
        """The option that must come first on the tools' argv: the password's option file."""
        return [f"--defaults-extra-file={OPTION_FILE.path}"] if self.secret else []

    def dump_tool_version(self) -> str:
        text, done = remote.run_to_end(self.client, [self.dump_tool, "--version"])
        if not done.ok:
            raise SourceError(remote.failure(f"{self.dump_tool} --version", self.where, done))
        return version_of(text)

    def sql(self, endpoint: Endpoint, sql: str, purpose: str) -> list[list[str]]:
        """Run SQL with the remote client in `endpoint.database`; tab-split rows (a SqlRunner).

        Raises SourceError naming `purpose`, the endpoint and the client's exit status and stderr.
        """
        argv = [
            self.client_tool, *self.leading_options(), *endpoint.options(), "--batch", "--skip-column-names",
            "--default-character-set=utf8mb4", f"--database={endpoint.database}", f"--execute={sql}",
        ]  # fmt: skip
        try:
            text, done = remote.run_to_end(self.client, argv, secret=self.secret)
        except (ssh.SshError, TimeoutError) as error:
            raise SourceError(f"cannot {purpose} ({endpoint.describe()}) via {self.where}: {error}") from None
        if not done.ok:
            program = self.client_tool.rsplit("/", 1)[-1]
            raise SourceError(
                f"cannot {purpose} ({endpoint.describe()}): {remote.failure(program, self.where, done)}"
            )
        return [line.split("\t") for line in text.splitlines()]

    def _find_programs(self, names: list[str]) -> list[str]:
        text, done = remote.run_to_end(self.client, ["sh", "-c", _FIND_PROGRAMS, "backupctl", *names])
        if done.status < 0:  # `command -v` fails for each missing name: only a lost channel counts
            raise SourceError(remote.failure("looking for the MySQL tools", self.where, done))
        return [line for line in text.splitlines() if line]

    def _pick(self, found: list[str], names: tuple[str, ...], needed_for: str) -> str:
        for name in names:
            for path in found:
                if path.rsplit("/", 1)[-1] == name:
                    return path
        raise SourceError(
            f"source {self.source}: neither {' nor '.join(names)} was found on the PATH of "
            f"{self.where.user}'s SSH commands on {self.where.host} (needed {needed_for}): install the "
            f"MariaDB or MySQL client package there"
        )


@contextmanager
def remote_dump(config: MysqlSource, artifact_format: str, extension: str) -> Iterator[DumpStream]:
    """Dump `config` through its `via` host; see the module docstring. Same contract as
    `MysqlDumpSource.dump`: leaving the context stops the remote mariadb-dump and disconnects.

    Connects with the source's `via_key_file` and `via_known_hosts` (the environment may override
    them, see `backupctl.sources.remote`). Raises the `core.ssh` errors for the connection (host
    key, authentication, unreachable; a missing key or known_hosts file before connecting),
    SourceError when a remote tool is missing or fails (its exit status and stderr in the
    message); `finish()` raises SourceError when mariadb-dump fails or its output is incomplete.
    """
    assert config.via is not None
    password = config.password.resolve() if config.password else None
    if password:
        register_secret(password)
    endpoint = Endpoint(config.user, config.database, config.host, config.port, config.socket, password)
    client, where = remote.connect_via(
        config.via, config.name, key_file=config.via_key_file, known_hosts=config.via_known_hosts
    )
    dump: remote.RemoteProcess | None = None
    try:
        try:
            tools = _RemoteTools(client, where, config.name, password)
            tool_version = tools.dump_tool_version()
            server_version = preflight(lambda sql, purpose: tools.sql(endpoint, sql, purpose), endpoint)
            argv = [
                tools.dump_tool, *tools.leading_options(), *endpoint.options(), *DUMP_OPTIONS,
                "--", endpoint.database,
            ]  # fmt: skip
            dump = remote.RemoteProcess(client, argv, secret=tools.secret)
        except (ssh.SshError, TimeoutError) as error:
            raise SourceError(f"source {config.name} via {where}: {error}") from None
        scanner = DumpScanner()
        running = dump

        def finish() -> dict[str, Any]:
            # Before the end of the output, this closes the channel: a consumer that stopped
            # early gets a failed dump, not a wait for the rest.
            ended = running.finish()
            if not ended.ok:
                raise SourceError(remote.failure(f"mariadb-dump of {config.name}", where, ended))
            scanner.check_complete()
            facts = dump_facts(scanner, server_version, tools.dump_tool, tool_version, endpoint.database)
            return {**facts, "dumped_on": str(where)}

        reader = ScanningReader(dump.stdout, scanner)
        yield DumpStream(cast(BinaryIO, reader), artifact_format, extension, finish)
    finally:
        if dump is not None:
            dump.abort()
        client.close()
