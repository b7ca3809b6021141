"""Dump a database running in a Docker container with the container's own tools: `container: NAME`.

The `via` machinery (backupctl.sources.remote: the snapshot session in psql, pg_dump/mariadb-dump
streaming back, secrets as the first stdin line, never on argv) runs unchanged over `docker exec
-i NAME sh -c ...` instead of an SSH channel: `DockerExecClient` offers the few parts of
paramiko's client and channel API that `RemoteProcess` uses. So a container source records the
same integrity facts as a local or `via` one (row counts from the dump's own snapshot, versions),
with `dumped_on: container NAME`. The URL is the one *inside* the container (usually
`postgresql://postgres@localhost/DB`); the docker CLI must reach the engine (root or the docker
group). Restores run here into --to-db (a URL this host reaches, e.g. a published port), or
through the engine with `restore --to-container` (container_restore.py, mysql_container.py).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import IO, Any

from backupctl.core.secrets import mask

SCHEME = "docker://"


@dataclass(frozen=True)
class ContainerHost:
    """Where a container source's tools run; shaped like remote.ViaHost for its messages."""

    host: str  # the container name or id
    user: str = "docker"
    port: int = 0

    def __str__(self) -> str:
        return f"container {self.host}"


class _ExecChannel:
    """One `docker exec -i CONTAINER sh -c COMMAND`, with the channel methods RemoteProcess calls."""

    def __init__(self, container: str) -> None:
        self._container = container
        self._process: subprocess.Popen[bytes] | None = None
        self.eof_received = False

    def exec_command(self, command: str) -> None:
        self._process = subprocess.Popen(
            ["docker", "exec", "-i", self._container, "sh", "-c", command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise OSError("docker exec was not started")
        return self._process

    def sendall(self, data: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(data)
        stdin.flush()

    def shutdown_write(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()

    def recv_stderr(self, size: int) -> bytes:
        stderr = self.process.stderr
        assert stderr is not None
        return os.read(stderr.fileno(), size)

    def makefile(self, mode: str, size: int) -> IO[bytes]:
        stdout = self.process.stdout
        assert stdout is not None
        return stdout

    def settimeout(self, timeout: float | None) -> None:
        pass  # a pipe has none: the tools' own timeouts (connect_timeout) bound the handshake

    def exit_status_ready(self) -> bool:
        return self.process.poll() is not None

    def recv_exit_status(self) -> int:
        return self.process.wait()

    def close(self) -> None:
        if self._process is None:
            return
        try:
            self.shutdown_write()
        except OSError:
            pass
        if self._process.poll() is None:
            self._process.terminate()  # the docker CLI forwards the signal to the exec'd tool
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class _Transport:
    def __init__(self, container: str) -> None:
        self._container = container

    def is_active(self) -> bool:
        return True

    def open_session(self, **_: Any) -> _ExecChannel:
        return _ExecChannel(self._container)

    def getpeername(self) -> tuple[str, int]:
        return (f"container {self._container}", 0)


class DockerExecClient:
    """Stands in for paramiko.SSHClient in backupctl.sources.remote."""

    def __init__(self, container: str) -> None:
        self.container = container

    def get_transport(self) -> _Transport:
        return _Transport(self.container)

    def close(self) -> None:
        pass


def connect_container(url: str) -> tuple[DockerExecClient, ContainerHost]:
    """`docker://NAME` -> (client, where). The container is found when the first tool starts."""
    name = url[len(SCHEME) :]
    return DockerExecClient(name), ContainerHost(mask(name))
