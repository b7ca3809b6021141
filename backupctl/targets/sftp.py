"""The `sftp` blob target: a directory on an SSH host, written over SFTP.

Same layout and atomicity as the local target (`<path>/<key>`, temp name `.<name>.tmp-<random>`,
then a POSIX rename), over one lazily opened SSH connection with strict host key checking
(backupctl.core.ssh). Memory stays flat: writes are pipelined through a 1 MiB buffer, reads are
prefetched in bounded windows. OpenSSH extensions are used when the server announces them:
posix-rename (atomic replace), fsync (durability before the rename) and statvfs (free space).
"""

from __future__ import annotations

import io
import posixpath
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, BinaryIO, cast

import paramiko

from backupctl.core import ssh
from backupctl.errors import TargetError
from backupctl.policy.schema import SftpTarget
from backupctl.targets.base import ObjectInfo, Posture, ReadTiming, register_target
from backupctl.targets.local import (
    CHUNK,
    LOW_SPACE_BYTES,
    STALE_TEMP_SECONDS,
    GuardedWriter,
    check_key,
    is_temp_name,
    temp_name,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

READ_WINDOW = 8 * 1024 * 1024  # bytes prefetched at a time: the reader's memory bound
MAX_IN_FLIGHT = 32  # concurrent read requests


class _WindowedReader(io.RawIOBase):
    """Reads a remote file through paramiko's prefetch, one bounded window at a time.

    `SFTPFile.prefetch` would queue the whole file and buffer whatever arrives faster than the
    consumer (a restore) reads it; windows of `READ_WINDOW` bytes keep that bounded.
    """

    def __init__(self, file: paramiko.SFTPFile, size: int, target: SftpBlobTarget, path: str) -> None:
        super().__init__()
        self._file = file
        self._size = size
        self._target = target
        self._path = path
        self._next_offset = 0  # where the next window starts
        self._blocks: Iterator[bytes] = iter(())
        self._block = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        target = memoryview(buffer).cast("B")
        while not self._block:
            block = next(self._blocks, None)
            if block is None:
                if self._next_offset >= self._size:
                    return 0
                self._open_window()
                continue
            if not block:
                return 0  # the file shrank under us: stop at its end
            self._block = memoryview(block)
        count = min(len(target), len(self._block))
        target[:count] = self._block[:count]
        self._block = self._block[count:]
        return count

    def _open_window(self) -> None:
        start = self._next_offset
        end = min(start + READ_WINDOW, self._size)
        request = self._file.MAX_REQUEST_SIZE
        chunks = [(offset, min(request, end - offset)) for offset in range(start, end, request)]
        self._next_offset = end
        try:
            blocks = self._file.readv(chunks, MAX_IN_FLIGHT)
            self._blocks = _translated(blocks, self._target, self._path)
        except Exception as error:
            raise self._target._error(error, self._path) from error


def _translated(blocks: Iterator[bytes], target: SftpBlobTarget, path: str) -> Iterator[bytes]:
    try:
        yield from blocks
    except Exception as error:
        raise target._error(error, path) from error


@register_target("sftp")
class SftpBlobTarget:
    """Objects as files under `config.path` on `config.host`, reached over SSH/SFTP."""

    def __init__(self, config: SftpTarget) -> None:
        self.config = config
        self.name = config.name
        self.medium = config.medium
        self.offsite = config.offsite
        self.root = posixpath.normpath(config.path)
        self._client: paramiko.SSHClient | None = None
        self._sftp: ssh.SftpSession | None = None

    # ----------------------------------------------------------------- BlobTarget API
    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """Yield a binary writer; the object appears atomically when the block exits cleanly.

        Raises TargetError; the remote temp file is removed on any error when the connection
        still works (otherwise `sweep_temp_files` removes it later).
        """
        path = self._path(key)
        parent, name = posixpath.split(path)
        sftp = self._session()
        temp = posixpath.join(parent, temp_name(name))
        try:
            self._makedirs(sftp, parent)
            # A channel of its own: paramiko matches pipelined write replies by order, so another
            # request on a shared session (a list_keys while writing) would swallow them.
            session = self._open_sftp(cast(paramiko.SSHClient, self._client))
        except Exception as error:
            raise self._error(error, path) from error
        try:
            file = session.open_sized(temp, "wb")
        except Exception as error:
            session.close()
            raise self._error(error, path) from error
        try:
            file.set_pipelined(True)
            yield cast(BinaryIO, GuardedWriter(file, lambda error: self._error(error, path)))
            try:
                file.flush()
                session.finish_writes(file)  # raises for the first write the server refused
                if "fsync@openssh.com" in session.extensions:
                    session.fsync(file)
                file.close()
                self._rename(session, temp, path)
            except Exception as error:
                raise self._error(error, path) from error
        except BaseException:
            # Drop unsent data instead of flushing it: closing the channel closes the handle on
            # the server, and paramiko's __del__ would otherwise flush into a closed channel.
            ssh.abandon(file)
            with suppress(Exception):
                session.close()
            alive = self._alive_session()  # after a lost connection, the next sweep removes it
            if alive is not None:
                with suppress(Exception):
                    alive.remove(temp)
            raise
        finally:
            session.close()

    @contextmanager
    def reader(self, key: str, timing: ReadTiming | None = None) -> Iterator[BinaryIO]:
        """Yield a streaming reader of the object. Raises TargetError when it is missing."""
        path = self._path(key)
        if timing is not None:
            timing.warmup_seconds = 0.0
        sftp = self._session()
        try:
            file = sftp.open_sized(path, "rb")
            size = file.stat().st_size or 0
        except FileNotFoundError:
            raise TargetError(
                f"target {self.name}: object '{key}' not found at {self._where(path)}"
            ) from None
        except Exception as error:
            raise self._error(error, path) from error
        try:
            with io.BufferedReader(_WindowedReader(file, size, self, path), CHUNK) as stream:
                yield cast(BinaryIO, stream)
        finally:
            with suppress(Exception):
                file.close()

    def list_keys(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with `prefix`, sorted by key; temp files skipped."""
        found = (
            ObjectInfo(key=key, size=attrs.st_size or 0)
            for key, attrs in self._walk(prefix)
            if not is_temp_name(key.rpartition("/")[2])
        )
        return sorted(found, key=lambda item: item.key)

    def delete(self, key: str) -> None:
        """Delete an object (a missing one is not an error) and prune emptied directories."""
        path = self._path(key)
        sftp = self._session()
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass
        except Exception as error:
            raise self._error(error, path) from error
        self._prune(sftp, posixpath.dirname(path))

    def posture(self) -> Posture:
        """Connect, stat the root and read free space; failures become problems, not errors."""
        details: dict[str, object] = {"host": self.config.host, "port": self.config.port, "path": self.root}
        try:
            sftp = self._session()
            details["extensions"] = sorted(sftp.extensions)
            probe, problems = self.root, []
            while probe not in ("/", ""):
                try:
                    sftp.stat(probe)
                    break
                except FileNotFoundError:
                    probe = posixpath.dirname(probe)
            if probe != self.root:
                details["created_on_first_write"] = True
            free = sftp.free_bytes(probe)
        except TargetError as error:
            return Posture(reachable=False, medium=self.medium, offsite=self.offsite,
                           problems=[str(error)], details=details)  # fmt: skip
        except Exception as error:
            problem = str(self._error(error, self.root))
            return Posture(reachable=False, medium=self.medium, offsite=self.offsite,
                           problems=[problem], details=details)  # fmt: skip
        if free is not None and free < LOW_SPACE_BYTES:
            problems.append(f"free space below 1 GiB at {self._where(probe)} ({free} bytes left)")
        return Posture(reachable=True, medium=self.medium, offsite=self.offsite,
                       free_bytes=free, problems=problems, details=details)  # fmt: skip

    def close(self) -> None:
        """Close the SFTP session and the SSH connection (reopened on the next use)."""
        if self._sftp is not None:
            with suppress(Exception):
                self._sftp.close()
        if self._client is not None:
            self._client.close()
        self._sftp = None
        self._client = None

    def sweep_partial(self, prefix: str, *, before: float, dry_run: bool = False) -> list[ObjectInfo]:
        """Temp files under `prefix` last written before `before` (Unix time), removed unless
        `dry_run`; their keys and sizes, sorted."""
        sftp = self._session()
        removed: list[ObjectInfo] = []
        for key, attrs in list(self._walk(prefix)):
            if is_temp_name(key.rpartition("/")[2]) and (attrs.st_mtime or 0) < before:
                found = ObjectInfo(key, attrs.st_size or 0)
                if dry_run:
                    removed.append(found)
                    continue
                path = posixpath.join(self.root, key)
                try:
                    sftp.remove(path)
                    removed.append(found)
                except FileNotFoundError:
                    pass
                except Exception as error:
                    raise self._error(error, path) from error
                self._prune(sftp, posixpath.dirname(path))
        return sorted(removed, key=lambda item: item.key)

    def sweep_temp_files(self, prefix: str = "", older_than: float = STALE_TEMP_SECONDS) -> list[str]:
        """Remove temp files under `prefix` older than `older_than` seconds (left by a killed
        run). Returns their keys, sorted."""
        return [info.key for info in self.sweep_partial(prefix, before=time.time() - older_than)]

    # ----------------------------------------------------------------- internals
    def _alive_session(self) -> ssh.SftpSession | None:
        transport = self._client.get_transport() if self._client is not None else None
        return self._sftp if transport is not None and transport.is_active() else None

    def _session(self) -> ssh.SftpSession:
        """The open SFTP session, (re)connecting when there is none or it has dropped."""
        alive = self._alive_session()
        if alive is not None:
            return alive
        self.close()
        config = self.config
        try:
            client = ssh.connect(config.host, config.port, config.user, config.key_file,
                                 config.key_passphrase, config.known_hosts,
                                 timeout=config.connect_timeout.total_seconds())  # fmt: skip
        except ssh.SshError as error:
            raise TargetError(f"target {self.name}: {error}", transient=error.transient) from None
        try:
            sftp = self._open_sftp(client)
        except TargetError:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        return sftp

    def _open_sftp(self, client: paramiko.SSHClient) -> ssh.SftpSession:
        """A new SFTP session (one channel) on the SSH connection."""
        try:
            return ssh.open_sftp(client, timeout=self.config.read_timeout.total_seconds())
        except ssh.SshError as error:
            raise TargetError(f"target {self.name}: {error}", transient=error.transient) from None

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, *check_key(key))

    def _where(self, path: str) -> str:
        return f"{self.config.user}@{self.config.host}:{path}"

    def _makedirs(self, sftp: ssh.SftpSession, directory: str) -> None:
        """mkdir -p (new directories 0700), checking from the deepest level up."""
        missing: list[str] = []
        probe = directory
        while probe not in ("/", ""):
            try:
                if not stat.S_ISDIR(sftp.stat(probe).st_mode or 0):
                    raise TargetError(f"target {self.name}: {self._where(probe)} is not a directory")
                break
            except FileNotFoundError:
                missing.append(probe)
                probe = posixpath.dirname(probe)
        for path in reversed(missing):
            try:
                sftp.mkdir(path, 0o700)
            except OSError:
                # A concurrent writer may have created it; anything else fails the stat again.
                if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    raise

    def _rename(self, sftp: ssh.SftpSession, temp: str, path: str) -> None:
        if "posix-rename@openssh.com" in sftp.extensions:
            sftp.posix_rename(temp, path)
            return
        # Plain SFTP rename fails when the destination exists. Without posix-rename there is a
        # short window where neither exists; objects are written once, so this is rare.
        with suppress(FileNotFoundError):
            sftp.remove(path)
        sftp.rename(temp, path)

    def _walk(self, prefix: str) -> Iterator[tuple[str, paramiko.SFTPAttributes]]:
        """(key, attributes) of every regular file whose key starts with `prefix`."""
        directory = prefix.rpartition("/")[0]
        sftp = self._session()
        pending = [directory]
        while pending:
            relative = pending.pop()
            remote = posixpath.join(self.root, relative) if relative else self.root
            try:
                entries = sftp.listdir_attr(remote)
            except FileNotFoundError:
                continue  # no such prefix, or pruned while we walk
            except Exception as error:
                raise self._error(error, remote) from error
            for entry in entries:
                key = f"{relative}/{entry.filename}" if relative else entry.filename
                mode = entry.st_mode or 0
                if stat.S_ISDIR(mode) and (key + "/").startswith(prefix[: len(key) + 1]):
                    pending.append(key)
                elif stat.S_ISREG(mode) and key.startswith(prefix):
                    yield key, entry

    def _prune(self, sftp: ssh.SftpSession, directory: str) -> None:
        """Remove empty directories from `directory` up to (not including) the root."""
        while directory != self.root and directory.startswith(self.root + "/"):
            try:
                sftp.rmdir(directory)
            except Exception:
                return  # not empty, or not ours: stop here
            directory = posixpath.dirname(directory)

    def _error(self, error: BaseException, path: str) -> TargetError:
        """Translate a paramiko/OS error into a TargetError an operator can act on."""
        if isinstance(error, TargetError):
            return error
        where = self._where(path)
        if isinstance(error, ssh.SshError):
            return TargetError(f"target {self.name}: {error}", transient=error.transient)
        if isinstance(error, FileNotFoundError):
            return TargetError(f"target {self.name}: {where} not found")
        if isinstance(error, PermissionError):
            return TargetError(
                f"target {self.name}: permission denied at {where} "
                f"(user {self.config.user} must be able to write {self.root})"
            )
        if self._alive_session() is None or isinstance(
            error, EOFError | paramiko.SSHException | TimeoutError | ConnectionError
        ):
            self.close()  # the next operation reconnects
            return TargetError(f"target {self.name}: connection to {where} lost: {error}", transient=True)
        # OpenSSH reports most failures (ENOSPC included) as a bare SSH_FX_FAILURE: look at
        # the free space to tell the operator what probably happened.
        free = None
        with suppress(Exception):
            free = self._sftp.free_bytes(self.root) if self._sftp is not None else None
        if free is not None and free < CHUNK * 4:
            return TargetError(f"target {self.name}: disk full at {where} ({free} bytes free)")
        return TargetError(f"target {self.name}: {error or type(error).__name__} at {where}")
