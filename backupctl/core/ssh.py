"""SSH connections with strict host key checking, shared by the SFTP target and remote sources.

Host keys are checked against one known_hosts file and never added automatically: an unknown
or changed key is refused with the server's fingerprint and the command that adds it after the
operator has verified it. Authentication is by one key file (its passphrase a secret reference)
or, without a key file, by the SSH agent.

Errors: `SshHostKeyError` and `SshAuthError` are configuration problems (exit 2, never worth a
retry); `SshUnreachable` is a transient network failure. Callers wrap them into their own kind
(the SFTP target into TargetError, a remote source into SourceError).
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn, Protocol, cast
from urllib.parse import urlsplit

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_INIT, CMD_VERSION, SFTPError

from backupctl.core.secrets import SecretRef, mask
from backupctl.errors import BackupctlError, ConfigError, JobFailed

log = logging.getLogger("backupctl.ssh")

CONNECT_TIMEOUT = 15.0
KEEPALIVE_SECONDS = 30
STREAM_CHUNK = 1024 * 1024
STDERR_TAIL = 64 * 1024  # bytes of a remote command's stderr kept for the error message


class SshError(BackupctlError):
    """Base of SSH connection errors; `transient` marks those worth retrying."""

    transient = False


class SshHostKeyError(SshError, ConfigError):
    """The server's host key is unknown or differs from the one in known_hosts."""


class SshAuthError(SshError, ConfigError):
    """The key (or agent) was refused, or the key file cannot be used."""


class SshUnreachable(SshError, JobFailed):
    """The host could not be reached or the connection dropped (transient)."""

    transient = True


class _UnknownHostKey(paramiko.SSHException):
    """Raised by our policy so that `connect` can report the offered key and its fingerprint."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"host key for {hostname} is not known")
        self.hostname = hostname
        self.key = key


class _RejectUnknownHost(paramiko.RejectPolicy):
    """Refuse unknown host keys (never add them), remembering what the server offered."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(hostname, key)


def connect(
    host: str,
    port: int,
    user: str,
    key_file: str | None = None,
    passphrase: SecretRef | None = None,
    known_hosts: str = "~/.ssh/known_hosts",
    *,
    timeout: float = CONNECT_TIMEOUT,
) -> paramiko.SSHClient:
    """Open an authenticated SSH connection to `user@host:port`.

    `key_file` (with an optional `passphrase` secret) authenticates; without it the SSH agent
    does. The host key must be in `known_hosts`. `timeout` bounds the TCP connect, the banner,
    authentication and opening channels. Raises SshHostKeyError, SshAuthError (permanent) or
    SshUnreachable (transient).
    """
    where = f"{user}@{host}:{port}"
    known_path = Path(known_hosts).expanduser()
    pkey = _load_key(key_file, passphrase) if key_file else None
    client = paramiko.SSHClient()
    if known_path.exists():
        try:
            client.load_host_keys(str(known_path))
        except Exception as error:  # paramiko raises several kinds for a malformed file
            raise SshHostKeyError(f"cannot read known_hosts file {known_path}: {error}") from error
    client.set_missing_host_key_policy(_RejectUnknownHost())
    try:
        client.connect(
            hostname=host, port=port, username=user, pkey=pkey,
            allow_agent=pkey is None, look_for_keys=False,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
        )  # fmt: skip
    except _UnknownHostKey as error:
        client.close()
        raise SshHostKeyError(_unknown_key_message(host, port, error.key, known_path)) from None
    except paramiko.BadHostKeyException as error:
        client.close()
        raise SshHostKeyError(_changed_key_message(host, port, error, known_path)) from None
    except paramiko.AuthenticationException as error:
        client.close()
        how = f"key {key_file}" if key_file else "the keys of the SSH agent"
        raise SshAuthError(
            f"SSH authentication to {where} with {how} failed ({error}); the public key must be in "
            f"~{user}/.ssh/authorized_keys on {host}"
        ) from None
    except (OSError, EOFError, paramiko.SSHException) as error:
        # OSError covers refused/unreachable/timeouts/DNS (NoValidConnectionsError is one);
        # other SSHExceptions here are protocol failures such as a banner that never came.
        client.close()
        if isinstance(error, paramiko.SSHException) and "No authentication methods" in str(error):
            raise SshAuthError(
                f"no SSH key for {where}: set key_file, or start an SSH agent (SSH_AUTH_SOCK) with the key"
            ) from None
        raise SshUnreachable(f"cannot connect to {where}: {_describe(error)}") from None
    transport = client.get_transport()
    if transport is not None:
        # Keepalives let a dead peer surface as an error instead of a hang on a long stream.
        transport.set_keepalive(KEEPALIVE_SECONDS)
    return client


def parse_ssh_url(url: str) -> tuple[str, str, int]:
    """`ssh://user@host[:port]` -> (user, host, port). Raises ConfigError for anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port or 22
    except ValueError:
        raise ConfigError(f"invalid port in '{url}'") from None
    if parts.scheme != "ssh" or not parts.hostname or not parts.username or parts.password:
        raise ConfigError(f"expected ssh://user@host[:port], got '{mask(url)}'")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"an ssh:// address names only user, host and port, got '{url}'")
    return parts.username, parts.hostname, port


@dataclass(frozen=True)
class RemoteExit:
    """How a remote command ended: its exit status (-1 if killed or the connection was lost)
    and the tail of its stderr (secrets masked)."""

    argv: tuple[str, ...]
    status: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


def run_streaming(
    client: paramiko.SSHClient,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float | None = None,
) -> tuple[BinaryIO, Callable[[], RemoteExit]]:
    """Start `argv` on the remote host and stream its stdout.

    The command line is `shlex.join(argv)`, run by the remote user's shell. `env` is sent as
    SSH environment requests (never on the command line); the server must accept each name with
    `AcceptEnv`, otherwise SshError says so. stdin is closed. stderr is collected in the
    background (its tail is kept), so a chatty command cannot stall stdout.

    Returns `(stdout, finish)`: read `stdout` to EOF, then `finish()` waits for the exit and
    returns a RemoteExit; calling it early drops the rest of the output. `timeout` bounds each
    wait for data. Raises SshUnreachable when the connection is gone.
    """
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise SshUnreachable("the SSH connection is closed")
    command = shlex.join(argv)
    try:
        channel = transport.open_session(timeout=timeout or CONNECT_TIMEOUT)
        for name, value in (env or {}).items():
            _set_env(channel, name, value)
        channel.settimeout(timeout)
        log.debug("ssh %s: %s", transport.getpeername()[0], mask(command))
        channel.exec_command(command)
        channel.shutdown_write()
    except paramiko.SSHException as error:
        raise SshUnreachable(f"cannot start remote command: {_describe(error)}") from None
    tail = bytearray()

    def collect_stderr() -> None:
        try:
            while chunk := channel.recv_stderr(32768):
                tail.extend(chunk)
                del tail[:-STDERR_TAIL]
        except (OSError, paramiko.SSHException):
            pass  # the exit status tells the story

    reader = threading.Thread(target=collect_stderr, name="ssh-stderr", daemon=True)
    reader.start()
    stdout = channel.makefile("rb", STREAM_CHUNK)

    def finish() -> RemoteExit:
        if not channel.exit_status_ready() and not channel.eof_received:
            channel.close()  # the caller stopped reading early: stop the command
        status = channel.recv_exit_status()
        reader.join(timeout=5)
        channel.close()
        text = mask(bytes(tail).decode("utf-8", "replace").strip())
        return RemoteExit(tuple(argv), status, text)

    return cast(BinaryIO, stdout), finish


# --------------------------------------------------------------------------- SFTP
CHANNEL_WINDOW = 8 * 1024 * 1024  # SSH flow-control window (paramiko's 2 MiB halves throughput)
CHANNEL_PACKET = 256 * 1024
SAFE_REQUEST = 32 * 1024  # read/write size every SFTP server accepts
LARGE_REQUEST = 255 * 1024  # upper bound when the server announces larger limits
SFTP_TIMEOUT = 120.0  # a stalled server fails the operation instead of hanging the backup


class _SessionInternals(Protocol):
    """Private paramiko SFTP calls used below (not in the type stubs); paramiko's own
    posix_rename and check() go through `_request` the same way."""

    def _request(self, kind: int, *args: object) -> tuple[int | None, paramiko.Message | None]: ...
    def _send_packet(self, kind: int, packet: paramiko.Message) -> None: ...
    def _read_packet(self) -> tuple[int, bytes]: ...
    def _read_response(self, waitfor: int | None = None) -> tuple[int | None, paramiko.Message | None]: ...


class _FileInternals(Protocol):
    _reqs: deque[int]  # request ids of pipelined writes whose replies are not read yet
    _closed: bool


class SftpSession(paramiko.SFTPClient):
    """An SFTP client that remembers the extensions the server announced.

    paramiko discards the extension list of the server's VERSION packet, so this reads it
    itself; `fsync@openssh.com` and `statvfs@openssh.com` are then sent only when offered.
    """

    extensions: dict[str, bytes]
    _request_size: int | None = None

    def _send_version(self) -> int:
        internals = cast(_SessionInternals, self)
        hello = paramiko.Message()
        hello.add_int(3)
        internals._send_packet(CMD_INIT, hello)
        kind, data = internals._read_packet()
        if kind != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version = reply.get_int()
        self.extensions = {}
        while len(reply.get_remainder()) >= 8:  # pairs of (name, data) strings
            name = reply.get_text()
            self.extensions[name] = reply.get_string()
        return version

    def finish_writes(self, file: paramiko.SFTPFile) -> None:
        """Wait for the replies to every pipelined write of `file`; raise OSError on the first
        failure. (paramiko's close() does not check them: a full disk would go unnoticed.)"""
        pending = cast(_FileInternals, file)._reqs
        while pending:
            cast(_SessionInternals, self)._read_response(pending.popleft())

    def fsync(self, file: paramiko.SFTPFile) -> None:
        cast(_SessionInternals, self)._request(CMD_EXTENDED, "fsync@openssh.com", file.handle)

    def request_size(self) -> int:
        """Bytes per read/write request: the server's limits@openssh.com, else 32 KiB.
        (paramiko's per-packet overhead makes 32 KiB requests about half as fast.)"""
        if self._request_size is None:
            self._request_size = SAFE_REQUEST
            if "limits@openssh.com" in self.extensions:
                kind, reply = cast(_SessionInternals, self)._request(CMD_EXTENDED, "limits@openssh.com")
                if kind == CMD_EXTENDED_REPLY and reply is not None:
                    _packet, max_read, max_write = (reply.get_int64() for _ in range(3))
                    # 0 means "no limit" in the extension.
                    limits = [limit for limit in (max_read, max_write) if limit] + [LARGE_REQUEST]
                    self._request_size = max(SAFE_REQUEST, min(limits))
        return self._request_size

    def open_sized(self, path: str, mode: str) -> paramiko.SFTPFile:
        """Open a file whose reads and writes use `request_size()` bytes per request."""
        file = self.open(path, mode, bufsize=STREAM_CHUNK if "w" in mode else -1)
        file.MAX_REQUEST_SIZE = self.request_size()
        return file

    def free_bytes(self, path: str) -> int | None:
        """Space available to this user under `path` (statvfs f_bavail * f_frsize), if known."""
        if "statvfs@openssh.com" not in self.extensions:
            return None
        kind, reply = cast(_SessionInternals, self)._request(CMD_EXTENDED, "statvfs@openssh.com", path)
        if kind != CMD_EXTENDED_REPLY or reply is None:
            return None
        _bsize, frsize, _blocks, _bfree, bavail = (reply.get_int64() for _ in range(5))
        return frsize * bavail


def open_sftp(client: paramiko.SSHClient, *, timeout: float = SFTP_TIMEOUT) -> SftpSession:
    """Start an SFTP session (a new channel) on `client`; `timeout` bounds every wait for the
    server. Raises SshUnreachable when the connection is gone, SshError without sftp."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise SshUnreachable("the SSH connection is closed")
    try:
        sftp = SftpSession.from_transport(transport, CHANNEL_WINDOW, CHANNEL_PACKET)
    except (OSError, EOFError) as error:
        raise SshUnreachable(f"cannot start SFTP: {_describe(error)}") from None
    except paramiko.SSHException as error:
        hint = "is `Subsystem sftp` enabled in the server's sshd_config?"
        raise SshError(f"cannot start SFTP: {_describe(error)} ({hint})") from None
    if sftp is None:
        raise SshUnreachable("cannot start SFTP: the connection closed")
    channel = sftp.get_channel()
    if channel is not None:
        channel.settimeout(timeout)
    return sftp


def abandon(file: paramiko.SFTPFile) -> None:
    """Forget an open SFTP file without flushing it: closing its session closes the handle on
    the server, and paramiko's __del__ would otherwise flush into a closed channel."""
    cast(_FileInternals, file)._closed = True


class _TransportInternals(Protocol):
    def _send_user_message(self, data: paramiko.Message) -> None: ...


class _ChannelInternals(Protocol):
    """The private paramiko calls `Channel.exec_command` itself uses; not in the type stubs."""

    remote_chanid: int
    transport: _TransportInternals

    def _event_pending(self) -> None: ...
    def _wait_for_event(self) -> None: ...


def _set_env(channel: paramiko.Channel, name: str, value: str) -> None:
    # paramiko's set_environment_variable asks for no reply, so a server without `AcceptEnv`
    # drops the variable silently (e.g. PGPASSWORD) and the tool fails obscurely later.
    # Asking for a reply turns that into a clear error; paramiko closes the channel on refusal.
    internals = cast(_ChannelInternals, channel)
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    message.add_int(internals.remote_chanid)
    message.add_string("env")
    message.add_boolean(True)
    message.add_string(name)
    message.add_string(value)
    internals._event_pending()
    internals.transport._send_user_message(message)
    try:
        internals._wait_for_event()
    except paramiko.SSHException:
        raise SshError(
            f"the SSH server refused environment variable {name}: add `AcceptEnv {name}` to its "
            "sshd_config (secrets are never passed on the remote command line)"
        ) from None


def _load_key(key_file: str, passphrase: SecretRef | None) -> paramiko.PKey:
    path = Path(key_file).expanduser()
    secret = passphrase.resolve() if passphrase is not None else None
    # PKey.from_path hands the password to `cryptography`, which wants bytes (the stubs say str).
    password = cast(str | None, secret.encode() if secret is not None else None)
    try:
        return paramiko.PKey.from_path(path, password)
    except FileNotFoundError:
        raise SshAuthError(f"SSH key file {path} does not exist") from None
    except PermissionError:
        raise SshAuthError(f"SSH key file {path} is not readable by this user") from None
    except TypeError:
        # cryptography's way of saying that the passphrase is missing, or not needed.
        if secret is None:
            raise SshAuthError(f"SSH key file {path} is encrypted: set key_passphrase") from None
        raise SshAuthError(f"key_passphrase is set but SSH key file {path} is not encrypted") from None
    except (paramiko.SSHException, ValueError) as error:
        if secret is not None:  # cryptography's message for a wrong passphrase is misleading
            raise SshAuthError(f"cannot decrypt SSH key file {path}: wrong key_passphrase?") from None
        raise SshAuthError(f"cannot load SSH key file {path}: {error}") from None


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _unknown_key_message(host: str, port: int, key: paramiko.PKey, known: Path) -> str:
    port_flag = f"-p {port} " if port != 22 else ""
    missing = "" if known.exists() else f" ({known} does not exist yet)"
    return (
        f"the host key of {_known_hosts_name(host, port)} is not in {known}{missing}; "
        f"the server offered {key.get_name()} {key.fingerprint}. Verify that fingerprint on the "
        f"server (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add the key: "
        f"ssh-keyscan {port_flag}{host} >> {known}"
    )


def _changed_key_message(host: str, port: int, error: paramiko.BadHostKeyException, known: Path) -> str:
    name = _known_hosts_name(host, port)
    port_flag = f"-p {port} " if port != 22 else ""
    return (
        f"the host key of {name} has CHANGED: {known} has {error.expected_key.get_name()} "
        f"{error.expected_key.fingerprint}, the server offered {error.key.get_name()} "
        f"{error.key.fingerprint}. This may be an attack; refusing to connect. If the server was "
        f"legitimately re-installed, verify the new fingerprint on it, then replace the key: "
        f"ssh-keygen -R '{name}' -f {known} && ssh-keyscan {port_flag}{host} >> {known}"
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        # One error per address tried; its own text is a bare "[Errno None] Unable to connect".
        codes = [getattr(cause, "errno", None) for cause in error.errors.values()]
        reasons = {os.strerror(code) if code else str(error) for code in codes}
        return ", ".join(sorted(reasons))
    text = str(error) or type(error).__name__
    return mask(text)
