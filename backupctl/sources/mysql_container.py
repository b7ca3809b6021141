"""`restore --to-container NAME --to-db URL` for MariaDB/MySQL: the container's own client.

The counterpart of `container:` dumps (sources/container.py) for MariaDB: the URL is the one
inside the container (usually `mysql://root@localhost/DB`), the `mariadb` client runs there
through `docker exec -i`, the stream goes in on its stdin. The password travels in the docker
CLI's environment and is handed on with `-e MYSQL_PWD` (the name only: never on an argv; an
option-file pipe like the local client's cannot cross into the container). `MysqlDumpSource`
uses this through the same two calls as its local client (`query`, `start`), so destination
checks, `--as`, the parallel restore and the row-count inventory are one code path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Protocol

from backupctl.core import runner
from backupctl.core.secrets import mask, register_secret
from backupctl.errors import ConfigError, SourceError

QUERY_TIMEOUT = 300.0
PASSWORD_VARIABLE = "MYSQL_PWD"  # read by the mariadb client (10.x and MySQL's mysql client)


class Endpoint(Protocol):
    """What this module reads of `sources.mysql.Endpoint` (no import: mysql imports this)."""

    @property
    def database(self) -> str: ...
    @property
    def password(self) -> str | None: ...
    def options(self) -> list[str]: ...
    def describe(self) -> str: ...


def client_rows(done: runner.Completed, purpose: str, place: str) -> list[list[str]]:
    """The tab-split rows a `mariadb --batch --skip-column-names` run printed; SourceError naming
    `purpose` and `place` (never a password) when it failed. For the host's and a container's
    client alike."""
    if done.returncode != 0:
        detail = mask(runner.last_lines(done.stderr, 1))
        raise SourceError(f"cannot {purpose} ({place}): {detail}")
    return [line.split("\t") for line in done.stdout.splitlines()]


class ContainerClient:
    """The `mariadb` client inside a running container, reached with `docker exec -i`."""

    def __init__(self, container: str, tool: str = "mariadb") -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", container):
            raise ConfigError(f"--to-container: '{container}' is not a container name or id")
        if shutil.which("docker") is None:
            raise ConfigError("--to-container needs the docker CLI on this host")
        self.container = container
        self.tool = tool

    def where(self) -> str:
        return f"container {self.container}"

    def _prefix(self, endpoint: Endpoint) -> tuple[list[str], dict[str, str] | None]:
        if endpoint.password is None:
            return ["docker", "exec", "-i", self.container], None
        register_secret(endpoint.password)
        prefix = ["docker", "exec", "-i", "-e", PASSWORD_VARIABLE, self.container]
        return prefix, {PASSWORD_VARIABLE: endpoint.password}

    def query(self, endpoint: Endpoint, sql: str, purpose: str) -> list[list[str]]:
        """Run SQL in `endpoint.database` inside the container; tab-split rows. Raises SourceError."""
        prefix, env = self._prefix(endpoint)
        argv = [*prefix, self.tool, *endpoint.options(), "--batch", "--skip-column-names",
                "--default-character-set=utf8mb4", f"--database={endpoint.database}"]  # fmt: skip
        done = runner.run(argv, env=env, input_text=sql, check=False, timeout=QUERY_TIMEOUT)
        return client_rows(done, purpose, f"{endpoint.describe()} in {self.where()}")

    def start(self, endpoint: Endpoint, options: list[str]) -> subprocess.Popen[bytes]:
        """Start the client reading SQL on stdin into `endpoint.database` (stdout discarded)."""
        prefix, env = self._prefix(endpoint)
        argv = [*prefix, self.tool, *endpoint.options(), *options, "--", endpoint.database]
        return runner.start(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
