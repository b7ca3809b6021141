"""Running a source's tools on another host: `via: ssh://user@host[:port]`.

Shared by the database sources (PostgreSQL and MySQL/MariaDB): connect with the strict host key
rules of `backupctl.core.ssh`, start commands whose stdout streams back, and hand a secret to the
remote tool without it ever appearing on a command line or in an SSH `env` request (servers
rarely `AcceptEnv` such names).

How a secret travels: the secret is written as the first line of the channel's stdin, and the
remote command line starts a constant shell wrapper that reads exactly that line (`read` takes
its input unbuffered from a pipe); every argument of the tool is shell-quoted after the script.
Two wrappers, one per way a tool accepts a password:

  as an environment variable (PGPASSWORD):
    sh -c 'IFS= read -r PGPASSWORD || exit 125; export PGPASSWORD; exec "$@"' backupctl pg_dump ...
  A tool that reads stdin too (psql) sees only what we send after that line. The secret then
  lives only in the tool's environment, which other users cannot read (/proc/PID/environ is
  private to the process owner).

  as the content of a pipe on a descriptor (an option file on /dev/fd/3, `SecretPipe`):
    sh -c 'unset s; IFS= read -r s || exit 125; printf LAYOUT "$s" | { exec 3<&0 </dev/null;
           exec "$@"; }' backupctl mariadb-dump --defaults-extra-file=/dev/fd/3 ...
  (one line in reality: csh-family login shells refuse line breaks inside quotes). printf is a
  builtin of every common sh (dash, bash, busybox ash), so the secret is on no argv; it passes
  through a pipe the tool reads once, and is in no environment. The tool's stdin is /dev/null.

Which SSH credentials, in this order of precedence:
  key file      1. BACKUPCTL_SSH_KEY_FILE (environment: an operator's override),
                2. the source's `via_key_file`,
                3. the SSH agent when SSH_AUTH_SOCK is set,
                4. ~/.ssh/id_ed25519 when it exists,
                5. the agent (which then fails with a clear "no SSH key" error).
                An explicit key file (1 or 2) must be an unencrypted private key.
  known_hosts   1. BACKUPCTL_SSH_KNOWN_HOSTS, 2. the source's `via_known_hosts` (default
                ~/.ssh/known_hosts). Unknown or changed keys are refused, never added.
Both paths may start with `~`. An explicit key file or the known_hosts file that does not exist
is a configuration error naming the source and the setting (or variable) it came from, raised
before any connection is attempted.

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


@dataclass(frozen=True)
class Credentials:
    """The key file (None: the SSH agent) and known_hosts file of a `via` connection, with the
    setting or environment variable each came from (named in error messages)."""

    key_file: str | None
    known_hosts: str
    key_file_from: str
    known_hosts_from: str

    def check(self, source: str, via: ViaHost) -> None:
        """Raise SshAuthError / SshHostKeyError (configuration errors) when an explicit key
        file or the known_hosts file does not exist, naming `source` and the setting."""
        if self.key_file is not None:
            key = Path(self.key_file)
            if not key.exists():
                raise ssh.SshAuthError(
                    f"source {source}: {self.key_file_from}: SSH key file {key} does not exist"
                )
            if not key.is_file():
                raise ssh.SshAuthError(
                    f"source {source}: {self.key_file_from}: SSH key file {key} is not a file"
                )
        known = Path(self.known_hosts)
        if not known.is_file():
            name = via.host if via.port == 22 else f"[{via.host}]:{via.port}"
            port_flag = f"-p {via.port} " if via.port != 22 else ""
            what = "does not exist" if not known.exists() else "is not a file"
            raise ssh.SshHostKeyError(
                f"source {source}: {self.known_hosts_from}: known_hosts file {known} {what}; verify the "
                f"host key of {name} on the server (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then "
                f"add it: ssh-keyscan {port_flag}{via.host} >> {known}"
            )


def credentials(key_file: str | None = None, known_hosts: str | None = None) -> Credentials:
    """The SSH credentials of a `via` connection: the environment variables override the
    source's `via_key_file` / `via_known_hosts` (`key_file`, `known_hosts`), which override the
    defaults; see the module docstring for the order. Paths come back with `~` expanded."""
    if os.environ.get(KNOWN_HOSTS_ENV):
        known, known_from = os.environ[KNOWN_HOSTS_ENV], KNOWN_HOSTS_ENV
    else:
        known, known_from = known_hosts or DEFAULT_KNOWN_HOSTS, "via_known_hosts"
    if os.environ.get(KEY_FILE_ENV):
        key, key_from = os.environ[KEY_FILE_ENV], KEY_FILE_ENV
    elif key_file:
        key, key_from = key_file, "via_key_file"
    else:
        key, key_from = None, "the SSH agent"
        if not os.environ.get("SSH_AUTH_SOCK"):
            # Like OpenSSH: agent keys first; without an agent, the usual identity file.
            default = Path(DEFAULT_KEY_FILE).expanduser()
            if default.is_file():
                key, key_from = str(default), f"the default key {DEFAULT_KEY_FILE}"
    return Credentials(
        key_file=str(Path(key).expanduser()) if key is not None else None,
        known_hosts=str(Path(known).expanduser()),
        key_file_from=key_from,
        known_hosts_from=known_from,
    )


def connect_via(
    url: str, source: str, *, key_file: str | None = None, known_hosts: str | None = None
) -> tuple[paramiko.SSHClient, ViaHost]:
    """Open the SSH connection of a source's `via`, with its `via_key_file` (`key_file`) and
    `via_known_hosts` (`known_hosts`) unless the environment overrides them.

    Raises ConfigError for a malformed address, SshAuthError / SshHostKeyError for a missing key
    or known_hosts file, and the `core.ssh` errors (same class, so exit code and transient flag
    are kept) with the source's name and, for authentication and host key problems, the setting
    that chooses the key or file.
    """
    if url.startswith("docker://"):  # `container: NAME`: the same commands over docker exec
        from backupctl.sources.container import connect_container

        return cast(tuple[paramiko.SSHClient, ViaHost], connect_container(url))
    try:
        via = ViaHost.parse(url)
    except ConfigError as error:
        raise ConfigError(f"source {source}: via: {error}") from None
    chosen = credentials(key_file, known_hosts)
    chosen.check(source, via)
    try:
        client = ssh.connect(via.host, via.port, via.user, chosen.key_file, None, chosen.known_hosts)
    except ssh.SshError as error:
        hint = ""
        if isinstance(error, ssh.SshAuthError):
            hint = f" (key from {chosen.key_file_from}{_override_note(chosen.key_file_from, 'via_key_file')})"
        elif isinstance(error, ssh.SshHostKeyError):
            where = chosen.known_hosts_from
            hint = f" (known_hosts file from {where}{_override_note(where, 'via_known_hosts')})"
        raise type(error)(f"source {source}: via {via}: {error}{hint}") from None
    return client, via


def _override_note(origin: str, setting: str) -> str:
    if origin in (KEY_FILE_ENV, KNOWN_HOSTS_ENV):
        return f", which overrides {setting}"
    if origin == setting:
        return ""
    return f"; set {setting} or load the key into the SSH agent"


@dataclass(frozen=True)
class SecretPipe:
    """Hand a secret to the remote tool as the content of a pipe on descriptor `fd` (3 to 9),
    which the tool opens as `path` (e.g. `--defaults-extra-file=/dev/fd/3`).

    `layout` is a printf format with exactly one `%s`, standing for the secret line, and no
    other `%` (e.g. an option file: `[client]\\npassword=%s\\n`). The secret sent must itself be
    one line: encode it for the file format first.
    """

    fd: int
    layout: str

    def __post_init__(self) -> None:
        if not 3 <= self.fd <= 9:
            raise ValueError(f"SecretPipe needs a descriptor from 3 to 9, not {self.fd}")
        if self.layout.count("%") != 1 or "%s" not in self.layout:
            raise ValueError(f"SecretPipe layout needs exactly one %s and no other %: {self.layout!r}")

    @property
    def path(self) -> str:
        return f"/dev/fd/{self.fd}"


def remote_command(argv: Sequence[str], secret: str | SecretPipe | None = None) -> str:
    """The command line for the remote user's shell: `argv` shell-quoted; with `secret` (an
    environment variable name or a SecretPipe), wrapped so that the first stdin line reaches the
    tool that way (see the module docstring). The returned text never contains a secret."""
    if secret is None:
        return shlex.join(argv)
    if isinstance(secret, SecretPipe):
        script = (
            f'unset s; IFS= read -r s || exit 125; printf {shlex.quote(secret.layout)} "$s" | '
            f'{{ exec {secret.fd}<&0 </dev/null; exec "$@"; }}'
        )
    elif _ENV_NAME.fullmatch(secret):
        script = f'IFS= read -r {secret} || exit 125; export {secret}; exec "$@"'
    else:
        raise ValueError(f"not an environment variable name: {secret!r}")
    # "backupctl" becomes $0: the shell's own messages ("exec: pg_dump: not found") carry it.
    return shlex.join(["sh", "-c", script, "backupctl", *argv])


class RemoteProcess:
    """One command on the remote host, on its own SSH channel.

    `stdout` streams the command's output; stderr is drained in the background (its tail is
    kept, masked) so a chatty tool never stalls stdout. With `secret=(NAME, value)` the value
    reaches the tool as environment variable NAME through stdin; with `secret=(SecretPipe, value)`
    as the content of a pipe on the SecretPipe's descriptor (the tool's stdin is then /dev/null).
    stdin is closed after that unless `keep_stdin` (then `send()` talks to the tool,
    `close_stdin()` ends its input).
    `window` is the SSH flow-control window: it bounds the bytes in flight, hence our memory.

    Raises SshUnreachable when the connection is gone, ConfigError for a secret that cannot be
    sent as one line.
    """

    def __init__(
        self,
        client: paramiko.SSHClient,
        argv: Sequence[str],
        *,
        secret: tuple[str | SecretPipe, str] | None = None,
        keep_stdin: bool = False,
        window: int = ssh.CHANNEL_WINDOW,
    ) -> None:
        self.argv = tuple(argv)
        if secret is not None and ("\n" in secret[1] or "\0" in secret[1]):
            what = secret[0] if isinstance(secret[0], str) else "password"
            raise ConfigError(f"the {what} secret contains a line break or NUL: it cannot be sent")
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


def run_to_end(
    client: paramiko.SSHClient, argv: Sequence[str], *, secret: tuple[str | SecretPipe, str] | None = None
) -> tuple[str, ssh.RemoteExit]:
    """Run a short command (no stdin but an optional `secret` as for RemoteProcess, small output)
    and return (stdout text, RemoteExit).

    Raises TimeoutError when it is silent for ANSWER_TIMEOUT seconds, SshUnreachable when the
    connection is gone.
    """
    process = RemoteProcess(client, argv, secret=secret, window=2 * 1024 * 1024)
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
