"""Running a source's tools on another host: `via: ssh://user@host[:port]`.

Shared by the database sources (PostgreSQL now, MySQL/MariaDB next): connect with the strict
host key rules of `backupctl.core.ssh`, start commands whose stdout streams back, and hand a
secret to the remote tool without it ever appearing on a command line or in an SSH `env`
request (servers rarely `AcceptEnv` such names).

How a secret travels: the remote command line is

    sh -c 'IFS= read -r PGPASSWORD || exit 125; export PGPASSWORD; exec "$@"' backupctl pg_dump ...

where the script text is constant and every argument of the tool is shell-quoted after it; the
secret itself is written as the first line of the channel's stdin. The shell's `read` consumes
exactly that line (it reads unbuffered from a pipe), so a tool that reads stdin too (psql)
sees only what we send after it. The secret then lives only in the tool's environment, which
other users cannot read (/proc/PID/environ is private to the process owner).

Which SSH credentials (the policy schema has no keys for them yet):
  BACKUPCTL_SSH_KEY_FILE     private key to authenticate with (unencrypted, or use the agent);
                             default: the SSH agent when SSH_AUTH_SOCK is set, else
                             ~/.ssh/id_ed25519 when it exists, else the agent (which then fails
                             with a clear "no SSH key" error).
  BACKUPCTL_SSH_KNOWN_HOSTS  known_hosts file holding the host's key; default ~/.ssh/known_hosts.
                             Unknown or changed keys are refused, never added.

Errors: connecting raises the errors of `core.ssh` (SshHostKeyError and SshAuthError are
configuration errors, SshUnreachable is transient), their message prefixed with the source;
starting a command on a dropped connection raises SshUnreachable. A remote tool's failure is
reported by `RemoteProcess.finish()` as a RemoteExit (status, masked stderr tail) for the
caller to turn into a SourceError with `failure()`.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import paramiko

from backupctl.core import runner, ssh
from backupctl.core.secrets import mask
from backupctl.errors import ConfigError

KEY_FILE_ENV = "BACKUPCTL_SSH_KEY_FILE"
KNOWN_HOSTS_ENV = "BACKUPCTL_SSH_KNOWN_HOSTS"
DEFAULT_KEY_FILE = "~/.ssh/id_ed25519"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

ANSWER_TIMEOUT = 120.0  # a short command (--version, a handshake query) that says nothing for this long
NOT_FOUND = 127  # the shell's status for a program it cannot find

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ViaHost:
    """The parsed `via:` address."""

    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ViaHost:
        """`ssh://user@host[:port]` -> ViaHost. Raises ConfigError for anything else."""
        user, host, port = ssh.parse_ssh_url(url)
        return cls(user, host, port)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def credentials() -> tuple[str | None, str]:
    """(key file or None for the agent, known_hosts path) from the environment and defaults."""
    known_hosts = os.environ.get(KNOWN_HOSTS_ENV) or DEFAULT_KNOWN_HOSTS
    key_file = os.environ.get(KEY_FILE_ENV) or None
    if key_file is None and not os.environ.get("SSH_AUTH_SOCK"):
        # Like OpenSSH: agent keys first; without an agent, the usual identity file.
        default = Path(DEFAULT_KEY_FILE).expanduser()
        key_file = str(default) if default.is_file() else None
    return key_file, known_hosts


def connect_via(url: str, source: str) -> tuple[paramiko.SSHClient, ViaHost]:
    """Open the SSH connection of a source's `via`.

    Raises ConfigError for a malformed address, and the `core.ssh` errors (same class, so exit
    code and transient flag are kept) with the source's name and, for authentication problems,
    the environment variables that choose the key.
    """
    try:
        via = ViaHost.parse(url)
    except ConfigError as error:
        raise ConfigError(f"source {source}: via: {error}") from None
    key_file, known_hosts = credentials()
    try:
        client = ssh.connect(via.host, via.port, via.user, key_file, None, known_hosts)
    except ssh.SshError as error:
        hint = ""
        if isinstance(error, ssh.SshAuthError):
            hint = f" (for 'via', choose the key with {KEY_FILE_ENV} or load it into the SSH agent)"
        elif isinstance(error, ssh.SshHostKeyError) and KNOWN_HOSTS_ENV not in os.environ:
            hint = f" (another known_hosts file can be chosen with {KNOWN_HOSTS_ENV})"
        raise type(error)(f"source {source}: via {via}: {error}{hint}") from None
    return client, via


def remote_command(argv: Sequence[str], secret_env: str | None = None) -> str:
    """The command line for the remote user's shell: `argv` shell-quoted; with `secret_env`,
    wrapped so that the first stdin line becomes that environment variable (see the module
    docstring). The returned text never contains a secret."""
    if secret_env is None:
        return shlex.join(argv)
    if not _ENV_NAME.fullmatch(secret_env):
        raise ValueError(f"not an environment variable name: {secret_env!r}")
    script = f'IFS= read -r {secret_env} || exit 125; export {secret_env}; exec "$@"'
    # "backupctl" becomes $0: the shell's own messages ("exec: pg_dump: not found") carry it.
    return shlex.join(["sh", "-c", script, "backupctl", *argv])


class RemoteProcess:
    """One command on the remote host, on its own SSH channel.

    `stdout` streams the command's output; stderr is drained in the background (its tail is
    kept, masked) so a chatty tool never stalls stdout. With `secret=(NAME, value)` the value
    reaches the tool as environment variable NAME through stdin. stdin is closed after that
    unless `keep_stdin` (then `send()` talks to the tool, `close_stdin()` ends its input).
    `window` is the SSH flow-control window: it bounds the bytes in flight, hence our memory.

    Raises SshUnreachable when the connection is gone, ConfigError for a secret that cannot be
    sent as one line.
    """

    def __init__(
        self,
        client: paramiko.SSHClient,
        argv: Sequence[str],
        *,
        secret: tuple[str, str] | None = None,
        keep_stdin: bool = False,
        window: int = ssh.CHANNEL_WINDOW,
    ) -> None:
        self.argv = tuple(argv)
        if secret is not None and ("\n" in secret[1] or "\0" in secret[1]):
            raise ConfigError(f"the {secret[0]} secret contains a line break or NUL: it cannot be sent")
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise ssh.SshUnreachable("the SSH connection is closed")
        command = remote_command(argv, secret[0] if secret else None)
        try:
            self._channel = transport.open_session(
                window_size=window, max_packet_size=ssh.CHANNEL_PACKET, timeout=ssh.CONNECT_TIMEOUT
            )
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise ssh.SshUnreachable(f"cannot open an SSH channel: {error}") from None
        try:
            ssh.log.debug("ssh %s: %s", transport.getpeername()[0], mask(command))
            self._channel.exec_command(command)
            if secret is not None:
                self._channel.sendall(f"{secret[1]}\n".encode())
            if not keep_stdin:
                self._channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException) as error:
            self._channel.close()
            raise ssh.SshUnreachable(f"cannot start {self.program} on the remote host: {error}") from None
        self._tail = bytearray()
        self._stderr = threading.Thread(target=self._drain_stderr, name="ssh-stderr", daemon=True)
        self._stderr.start()
        self.stdout = cast(BinaryIO, self._channel.makefile("rb", ssh.STREAM_CHUNK))

    def _drain_stderr(self) -> None:
        try:
            while chunk := self._channel.recv_stderr(32768):
                self._tail.extend(chunk)
                del self._tail[: -ssh.STDERR_TAIL]
        except (OSError, paramiko.SSHException):
            pass  # the exit status tells the story

    def send(self, text: str) -> None:
        """Write to the command's stdin. Raises OSError once the command is gone."""
        self._channel.sendall(text.encode())

    def close_stdin(self) -> None:
        """Send EOF on stdin (the command still runs and may still write)."""
        self._channel.shutdown_write()

    def readline(self, timeout: float | None = ANSWER_TIMEOUT) -> str | None:
        """The next stdout line without its line break, None at end of output.

        Raises TimeoutError when nothing complete arrives within `timeout` seconds.
        """
        self._channel.settimeout(timeout)
        try:
            line = self.stdout.readline()
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            raise TimeoutError(f"no answer from the remote {self.program} within {timeout:.0f}s") from None
        finally:
            self._channel.settimeout(None)
        if not line:
            return None
        return line.decode("utf-8", "replace").rstrip("\r\n")

    def finish(self, *, drain: bool = False) -> ssh.RemoteExit:
        """Wait for the command to end and return its exit status and stderr tail.

        If its output has not been read to the end, `drain=True` reads (and discards) the rest;
        otherwise the channel is closed first, which stops the command (SIGPIPE on its next
        write, EOF on its stdin): a caller that stopped reading early does not wait for it.
        """
        if drain:
            try:
                while self.stdout.read(ssh.STREAM_CHUNK):
                    pass
            except (OSError, paramiko.SSHException):
                pass  # the connection is gone: the status below is -1
        if not self._channel.exit_status_ready() and not self._channel.eof_received:
            self._channel.close()
        status = self._channel.recv_exit_status()
        self._stderr.join(timeout=5)
        self._channel.close()
        text = mask(bytes(self._tail).decode("utf-8", "replace").strip())
        return ssh.RemoteExit(self.argv, status, text)

    def abort(self) -> None:
        """Close the channel: the remote command sees EOF on stdin and SIGPIPE on its output."""
        self._channel.close()

    @property
    def program(self) -> str:
        return self.argv[0].rsplit("/", 1)[-1]


def run_to_end(client: paramiko.SSHClient, argv: Sequence[str]) -> tuple[str, ssh.RemoteExit]:
    """Run a short command (no stdin, small output) and return (stdout text, RemoteExit).

    Raises TimeoutError when it is silent for ANSWER_TIMEOUT seconds, SshUnreachable when the
    connection is gone.
    """
    process = RemoteProcess(client, argv, window=2 * 1024 * 1024)
    lines: list[str] = []
    try:
        while (line := process.readline(ANSWER_TIMEOUT)) is not None:
            lines.append(line)
    finally:
        done = process.finish(drain=True)
    return "\n".join(lines), done


def failure(what: str, where: ViaHost, done: ssh.RemoteExit) -> str:
    """An operator's message for a remote command that failed: what, where, status, stderr."""
    status = f"status {done.status}" if done.status >= 0 else "no exit status (killed or connection lost)"
    hint = ""
    if done.status == NOT_FOUND:
        hint = f" ({done.argv[0]} was not found on {where.host}: install it there or give its full path)"
    return f"{what} on {where} exited with {status}: {runner.last_lines(done.stderr)}{hint}"
