"""The `local` blob target: a directory on a local disk or a mounted NAS share.

Layout: `<path>/<key>`, one file per object, directories for the `/` in keys. Writes go to a
temp file `.<name>.tmp-<random>` in the final directory (their writeback started as they grow:
`core.writebehind.WriteBehind`), are fsynced and renamed into place, and the directory is fsynced,
so a crash leaves either the old state or the complete object, plus at worst a temp file that
`list_keys` never shows and `sweep_temp_files` removes later.

The small helpers at the top (key checks, temp names, `GuardedWriter`) are shared with the SFTP
target, which keeps the same layout on a remote host.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from backupctl.core.durable import fsync_directory
from backupctl.core.writebehind import WriteBehind
from backupctl.errors import TargetError
from backupctl.policy.schema import LocalTarget
from backupctl.targets.base import ObjectInfo, Posture, ReadTiming, register_target

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK = 1024 * 1024
LOW_SPACE_BYTES = 1024**3  # posture warns below 1 GiB free
STALE_TEMP_SECONDS = 3600.0
_TEMP = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")
# Errors that a network file system (NFS/SMB share) gives while it is briefly unavailable.
_TRANSIENT_ERRNOS = {
    errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.EHOSTDOWN,
    errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET,
}  # fmt: skip


# --------------------------------------------------------------------------- shared helpers
def temp_name(name: str) -> str:
    """The temp name an object `name` is written under before its atomic rename."""
    return f".{name}.tmp-{secrets.token_hex(6)}"


def is_temp_name(name: str) -> bool:
    """True for a file name made by `temp_name` (never listed, swept when stale)."""
    return bool(_TEMP.match(name))


def check_key(key: str) -> list[str]:
    """Split a key into its path components; raise TargetError for keys that could escape the
    root or collide with temp files ('..', empty components, a leading '/')."""
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") or is_temp_name(part) for part in parts):
        raise TargetError(f"invalid object key '{key}'")
    return parts


class _Sink(Protocol):
    def write(self, data: bytes) -> object: ...


class GuardedWriter(io.BufferedIOBase):
    """The stream a target's `writer()` hands out: forwards writes to the temp file and turns
    storage errors into TargetError, so a caller can tell a full disk from its own failures."""

    def __init__(
        self,
        sink: _Sink,
        translate: Callable[[BaseException], TargetError],
        written: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._sink = sink
        self._translate = translate
        self._written = written  # told the bytes written so far after each write
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        chunk = data if isinstance(data, bytes) else bytes(data)  # paramiko accepts only bytes
        try:
            self._sink.write(chunk)
        except Exception as error:
            raise self._translate(error) from error
        self.bytes_written += len(chunk)
        if self._written is not None:
            self._written(self.bytes_written)
        return len(chunk)


# --------------------------------------------------------------------------- the target
@register_target("local")
class LocalBlobTarget:
    """Objects as files under `config.path` (created with mode 0700 on the first write)."""

    def __init__(self, config: LocalTarget) -> None:
        self.config = config
        self.name = config.name
        self.medium = config.medium
        self.offsite = config.offsite
        self.root = Path(config.path).expanduser()

    # ----------------------------------------------------------------- BlobTarget API
    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """Yield a binary writer; the object appears atomically when the block exits cleanly.

        Raises TargetError (disk full, permission denied, ...); the temp file is removed on
        any error, including one raised by the caller inside the block.
        """
        path = self._path(key)
        created = self._makedirs(path.parent)
        temp = path.parent / temp_name(path.name)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise self._error(error, path) from error
        file = os.fdopen(fd, "wb", buffering=CHUNK)
        behind = WriteBehind(fd)  # the fsync below then finds little left to write
        try:
            yield cast(BinaryIO, GuardedWriter(file, lambda error: self._error(error, path), behind.wrote))
            try:
                file.flush()
                os.fsync(file.fileno())
                file.close()
                os.replace(temp, path)
                # The rename is durable only once the directory entry is on disk, and so are
                # directories created for this object.
                for directory in {path.parent, *(made.parent for made in created)}:
                    fsync_directory(directory)
            except OSError as error:
                raise self._error(error, path) from error
        except BaseException:
            with suppress(OSError):
                file.close()  # may fail again (ENOSPC on flush); the fd is released regardless
            with suppress(FileNotFoundError):
                temp.unlink()
            raise

    @contextmanager
    def reader(self, key: str, timing: ReadTiming | None = None) -> Iterator[BinaryIO]:
        """Yield the object opened for binary reading. Raises TargetError when it is missing."""
        path = self._path(key)
        if timing is not None:
            timing.warmup_seconds = 0.0
        try:
            file = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise TargetError(f"target {self.name}: object '{key}' not found at {path}") from None
        except OSError as error:
            raise self._error(error, path) from error
        with file:
            yield file

    def list_keys(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with `prefix`, sorted by key; temp files skipped."""
        return sorted(
            (ObjectInfo(key=key, size=info.st_size) for key, info in self._walk(prefix) if
             not is_temp_name(key.rpartition("/")[2])),
            key=lambda item: item.key,
        )  # fmt: skip

    def delete(self, key: str) -> None:
        """Delete an object (a missing one is not an error) and prune emptied directories."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self._error(error, path) from error
        self._prune(path.parent)

    def posture(self) -> Posture:
        """Reachability, free space and the problems an operator should fix, read from disk."""
        problems: list[str] = []
        details: dict[str, object] = {"path": str(self.root)}
        existing = _nearest_existing(self.root)
        if self.root.is_dir():
            reachable = os.access(self.root, os.W_OK | os.X_OK)
            if not reachable:
                problems.append(f"{self.root} is not writable by this user (fix: chown or chmod it)")
        elif existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
            reachable = True
            details["created_on_first_write"] = True
        else:
            reachable = False
            problems.append(f"{self.root} does not exist and cannot be created (check the path or mount)")
        free: int | None = None
        if existing is not None:
            free = shutil.disk_usage(existing).free
            if free < LOW_SPACE_BYTES:
                problems.append(f"free space below 1 GiB at {existing} ({free} bytes left)")
            mount = _mount_point(existing)
            details["mount_point"] = str(mount)
            # An unmounted share silently fills the local disk: catch it before a backup does.
            if self.medium == "nas" and mount == Path("/"):
                problems.append(
                    f"medium is nas but {self.root} is on the root file system: is the share mounted?"
                )
        return Posture(
            reachable=reachable, medium=self.medium, offsite=self.offsite,
            free_bytes=free, problems=problems, details=details,
        )  # fmt: skip

    def close(self) -> None:
        """Nothing to release: files are closed by their context managers."""

    def sweep_partial(self, prefix: str, *, before: float, dry_run: bool = False) -> list[ObjectInfo]:
        """Temp files under `prefix` last written before `before` (Unix time), removed unless
        `dry_run`; their keys and sizes, sorted."""
        removed: list[ObjectInfo] = []
        for key, info in list(self._walk(prefix)):
            if is_temp_name(key.rpartition("/")[2]) and info.st_mtime < before:
                path = self.root.joinpath(*key.split("/"))
                if dry_run:
                    removed.append(ObjectInfo(key, info.st_size))
                    continue
                with suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(ObjectInfo(key, info.st_size))
                self._prune(path.parent)
        return sorted(removed, key=lambda item: item.key)

    # ----------------------------------------------------------------- maintenance
    def sweep_temp_files(self, prefix: str = "", older_than: float = STALE_TEMP_SECONDS) -> list[str]:
        """Remove temp files under `prefix` older than `older_than` seconds (left by a killed
        run; younger ones may belong to a running backup). Returns their keys, sorted."""
        return [info.key for info in self.sweep_partial(prefix, before=time.time() - older_than)]

    # ----------------------------------------------------------------- internals
    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def _makedirs(self, directory: Path) -> list[Path]:
        """mkdir -p with mode 0700 (the root included); returns the directories it created."""
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            if probe == probe.parent:
                break
            probe = probe.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                if not path.is_dir():
                    raise TargetError(f"target {self.name}: {path} exists and is not a directory") from None
            except OSError as error:
                raise self._error(error, path) from error
        return missing

    def _walk(self, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        """(key, stat) of every regular file whose key starts with `prefix`, temp files included."""
        # Start at the deepest directory the prefix names, not at the root: a prefix is usually
        # `<policy>/` or `<policy>/<snapshot>/`.
        directory = prefix.rpartition("/")[0]
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        try:
            for dirpath, dirnames, filenames in os.walk(start, onerror=_raise_unless_gone):
                dirnames.sort()
                relative = Path(dirpath).relative_to(self.root).as_posix()
                base = "" if relative == "." else relative + "/"
                for filename in filenames:
                    key = base + filename
                    if not key.startswith(prefix):
                        continue
                    try:
                        info = os.lstat(os.path.join(dirpath, filename))
                    except FileNotFoundError:
                        continue  # deleted while we walk
                    if stat.S_ISREG(info.st_mode):
                        yield key, info
        except OSError as error:
            raise self._error(error, start) from error

    def _prune(self, directory: Path) -> None:
        """Remove empty directories from `directory` up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or gone, or not ours to remove): stop here
            directory = directory.parent

    def _error(self, error: BaseException, path: Path) -> TargetError:
        """Translate an OSError into a TargetError an operator can act on."""
        if not isinstance(error, OSError):
            return TargetError(f"target {self.name}: {error} at {path}")
        code = error.errno
        if code in (errno.ENOSPC, errno.EDQUOT):
            free = _free_bytes(path)
            left = f"{free} bytes free" if free is not None else "free space unknown"
            return TargetError(
                f"target {self.name}: disk full at {path} ({left}; free space or prune old snapshots)"
            )
        if code in (errno.EACCES, errno.EPERM):
            return TargetError(
                f"target {self.name}: permission denied at {path} "
                f"(the user running backupctl must be able to write {self.root})"
            )
        if code == errno.EROFS:
            return TargetError(f"target {self.name}: {path} is on a read-only file system")
        return TargetError(
            f"target {self.name}: {error.strerror or error} at {path}", transient=code in _TRANSIENT_ERRNOS
        )


def _raise_unless_gone(error: OSError) -> None:
    # A missing start directory means "no objects"; a directory pruned while we walk is gone too.
    if not isinstance(error, FileNotFoundError):
        raise error



def _nearest_existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    existing = _nearest_existing(path)
    if existing is None:
        return None
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None
