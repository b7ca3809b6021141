"""Files source: a directory tree as a PAX tar stream, plus a tree hash to prove restores.

The tar is written by a producer thread into a pipe whose read end is the dump stream, so memory
stays flat whatever the tree's size. Each file is read exactly once: the bytes going into the tar
are the bytes hashed.

Walk order: depth first, each directory's entries sorted by name with directories compared as
`name + "/"`. That is exactly the sorted order of the relative paths of all files and symlinks,
so the tree hash can be computed as the walk goes.

Tree hash (`tree_sha256`): the sha256 of one line per regular file and symlink, in sorted
(code point) order of its '/'-separated path relative to the root:

    regular file:  f"{path}\\0{sha256 hex of its content}\\n"
    symlink:       f"{path}\\0->{link target}\\n"

encoded as UTF-8 (undecodable bytes of file names kept via surrogateescape). Directories, empty
or not, and skipped entries (sockets, fifos, devices, excluded paths) do not contribute; a
hard-linked file counts once per path. The same function hashes a restored tree, so equal
hashes mean equal names, contents and link targets.
"""

from __future__ import annotations

import fcntl
import functools
import grp
import hashlib
import logging
import os
import pwd
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, BinaryIO, cast

from backupctl.core import tarfilter
from backupctl.errors import ConfigError, IntegrityError, SourceError
from backupctl.policy.schema import FilesSource
from backupctl.sources.base import (
    DUMP_EXTENSIONS,
    DumpStream,
    RestoreOutcome,
    RestoreRequest,
    RestoreStage,
    RolesOutcome,
    register_source,
)
from backupctl.sources.targuard import MemberGuard

log = logging.getLogger("backupctl.sources.files")

CHUNK = 1 << 20
# estimate_size gives up (returns None) on trees with more entries than this: it must stay cheap.
ESTIMATE_ENTRY_LIMIT = 200_000
# What _tarinfo(...).tobuf(PAX) writes per member: a ustar header plus a PAX extended header
# (sub-second mtimes always need one) of one block.
_HEADER_BYTES = 3 * tarfile.BLOCKSIZE
_SPECIAL = {stat.S_IFSOCK: "socket", stat.S_IFIFO: "fifo", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}


@dataclass(frozen=True)
class Entry:
    """One walked path: `kind` is "dir", "file", "symlink" or the special kind to skip;
    `size` is a regular file's size when the walk saw it (0 for other kinds)."""

    relpath: str
    path: str
    kind: str
    size: int = 0


def leaves_tree(relpath: str, linkname: str) -> bool:
    """Whether a symlink at `relpath` (relative to the root) points outside the tree."""
    resolved = os.path.normpath(os.path.join(os.path.dirname(relpath), linkname))
    return os.path.isabs(linkname) or resolved == ".." or resolved.startswith("../")


def walk_tree(
    root: Path, exclude: Sequence[str] = (), on_skip: Callable[[str, str], None] | None = None
) -> Iterator[Entry]:
    """Entries below `root` (not root itself) in hash order; symlinks are never followed.

    `exclude` globs are matched against the relative path and the base name; an excluded
    directory is not entered. Entries vanishing during the walk are reported to `on_skip`.
    Raises OSError when the root or a directory cannot be read.
    """
    patterns = [pattern.rstrip("/") for pattern in exclude]

    def children(directory: str, relative: str) -> Iterator[Entry]:
        found: list[tuple[str, Entry]] = []
        try:
            with os.scandir(directory) as listing:
                for item in listing:
                    relpath = f"{relative}/{item.name}" if relative else item.name
                    if any(fnmatchcase(relpath, p) or fnmatchcase(item.name, p) for p in patterns):
                        continue
                    try:
                        info = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        if on_skip:
                            on_skip(relpath, "vanished during the backup")
                        continue
                    mode = info.st_mode
                    kind = (
                        "dir" if stat.S_ISDIR(mode)
                        else "file" if stat.S_ISREG(mode)
                        else "symlink" if stat.S_ISLNK(mode)
                        else _SPECIAL.get(stat.S_IFMT(mode), "unknown file type")
                    )  # fmt: skip
                    size = info.st_size if kind == "file" else 0
                    found.append(
                        (
                            item.name + "/" if kind == "dir" else item.name,
                            Entry(relpath, item.path, kind, size),
                        )
                    )
        except FileNotFoundError:
            if not relative:
                raise  # the root itself is gone: that is an error, not a skip
            if on_skip:
                on_skip(relative, "vanished during the backup")
        found.sort(key=lambda pair: pair[0])
        return iter([entry for _, entry in found])

    stack = [children(str(root), "")]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        yield entry
        if entry.kind == "dir":
            stack.append(children(entry.path, entry.relpath))


@dataclass
class TreeHasher:
    """Accumulates the tree hash and counts; feed entries in walk order."""

    digest: Any = field(default_factory=hashlib.sha256)
    file_count: int = 0
    symlink_count: int = 0
    total_bytes: int = 0

    def add_file(self, relpath: str, content_sha256: str, size: int) -> None:
        self.digest.update(f"{relpath}\0{content_sha256}\n".encode("utf-8", "surrogateescape"))
        self.file_count += 1
        self.total_bytes += size

    def add_symlink(self, relpath: str, target: str) -> None:
        self.digest.update(f"{relpath}\0->{target}\n".encode("utf-8", "surrogateescape"))
        self.symlink_count += 1

    def facts(self) -> dict[str, Any]:
        return {
            "file_count": self.file_count,
            "symlink_count": self.symlink_count,
            "total_bytes": self.total_bytes,
            "tree_sha256": self.digest.hexdigest(),
        }


def tree_facts(root: Path) -> dict[str, Any]:
    """file_count, symlink_count, total_bytes and tree_sha256 of a directory (see module doc)."""
    hasher = TreeHasher()
    for entry in walk_tree(root):
        if entry.kind == "symlink":
            hasher.add_symlink(entry.relpath, os.readlink(entry.path))
        elif entry.kind == "file":
            content = hashlib.sha256()
            size = 0
            with open(os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
                while chunk := handle.read(CHUNK):
                    content.update(chunk)
                    size += len(chunk)
            hasher.add_file(entry.relpath, content.hexdigest(), size)
    return hasher.facts()


@functools.lru_cache(maxsize=256)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=256)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _tarinfo(relpath: str, info: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(relpath)
    member.type = kind
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid, member.gid = info.st_uid, info.st_gid
    member.uname, member.gname = _user_name(info.st_uid), _group_name(info.st_gid)
    member.mtime = info.st_mtime
    member.size = info.st_size if kind == tarfile.REGTYPE else 0
    return member


class _TarWriter:
    """A streaming PAX tar writer: headers from `TarInfo.tobuf`, data copied in 1 MiB chunks.

    We do not use TarFile for writing because it remembers every member and inode it wrote,
    so its memory grows with the number of files.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def add(self, member: tarfile.TarInfo) -> None:
        """Write a header of a member without data (directory, link)."""
        self._write(member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def add_file(self, member: tarfile.TarInfo, handle: BinaryIO) -> tuple[str, bool]:
        """Write a regular file of `member.size` bytes from `handle`, hashing what is written.

        Returns (sha256 hex, whether the file shrank while read: then it is padded with zeros,
        as GNU tar does, so the archive stays valid and the hash matches its content).
        """
        self.add(member)
        digest = hashlib.sha256()
        remaining = member.size
        shrank = False
        while remaining:
            chunk = handle.read(min(CHUNK, remaining)) if not shrank else b""
            if not chunk:
                shrank = True
                chunk = bytes(min(CHUNK, remaining))
            digest.update(chunk)
            self._write(chunk)
            remaining -= len(chunk)
        self._pad(tarfile.BLOCKSIZE)
        return digest.hexdigest(), shrank

    def close(self) -> None:
        """Write the end-of-archive blocks and fill the last record, like tar does."""
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        self._pad(tarfile.RECORDSIZE)

    def _pad(self, size: int) -> None:
        if self._written % size:
            self._write(bytes(size - self._written % size))


class _TarProducer(threading.Thread):
    """Writes the tar of `root` into the pipe's write end; records its error for finish()."""

    def __init__(self, root: Path, exclude: Sequence[str], write_fd: int, symlinks: str = "keep") -> None:
        super().__init__(daemon=True, name="tar-producer")
        self.root = root
        self.exclude = exclude
        self.symlinks = symlinks
        self.write_fd = write_fd
        self.hasher = TreeHasher()
        self.skipped: list[str] = []
        self.warnings: list[str] = []
        self.error: BaseException | None = None
        # Only inodes with several links are remembered, so memory does not grow with file count.
        self._hardlinks: dict[tuple[int, int], tuple[str, str]] = {}

    def run(self) -> None:
        try:
            # Closing the write end (also on error) is what lets the reader see EOF.
            with os.fdopen(self.write_fd, "wb", buffering=CHUNK) as pipe:
                tar = _TarWriter(pipe)
                for entry in walk_tree(self.root, self.exclude, self._skip):
                    self._add(tar, entry)
                tar.close()
        except BaseException as error:
            self.error = error

    def _skip(self, relpath: str, reason: str) -> None:
        log.warning("skipping %s: %s", relpath, reason)
        self.skipped.append(f"{relpath}: {reason}")

    def _add(self, tar: _TarWriter, entry: Entry) -> None:
        try:
            info = os.lstat(entry.path)
        except FileNotFoundError:
            self._skip(entry.relpath, "vanished during the backup")
            return
        if entry.kind == "dir":
            tar.add(_tarinfo(entry.relpath, info, tarfile.DIRTYPE))
        elif entry.kind == "symlink":
            self._add_symlink(tar, entry, info)
        elif entry.kind == "file":
            self._add_file(tar, entry)
        else:
            self._skip(entry.relpath, f"{entry.kind} not archived")

    def _add_symlink(self, tar: _TarWriter, entry: Entry, info: os.stat_result) -> None:
        """Archive a symlink as a link (never followed), as `symlinks:` says."""
        linkname = os.readlink(entry.path)
        if leaves_tree(entry.relpath, linkname):
            if self.symlinks == "refuse":
                raise SourceError(
                    f"{entry.relpath} is a symlink to {linkname}, outside the tree (symlinks: refuse)"
                )
            if self.symlinks == "skip":
                self._skip(entry.relpath, f"symlink to {linkname} outside the tree (symlinks: skip)")
                return
            # keep: restored verbatim as a link; what it points to is not in this backup.
            self.warnings.append(
                f"{entry.relpath}: symlink to {linkname} leads outside the tree; kept as a link, "
                "its target is not backed up"
            )
        member = _tarinfo(entry.relpath, info, tarfile.SYMTYPE)
        member.linkname = linkname
        tar.add(member)
        self.hasher.add_symlink(entry.relpath, linkname)

    def _add_file(self, tar: _TarWriter, entry: Entry) -> None:
        try:
            # O_NOFOLLOW: a file swapped for a symlink since the walk is not followed.
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._skip(entry.relpath, "vanished during the backup")
            return
        with open(fd, "rb", buffering=0) as handle:
            info = os.fstat(fd)  # of the file we read, not of what the walk saw
            member = _tarinfo(entry.relpath, info, tarfile.REGTYPE)
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and key in self._hardlinks:
                first, content = self._hardlinks[key]
                member.type, member.linkname, member.size = tarfile.LNKTYPE, first, 0
                tar.add(member)
                self.hasher.add_file(entry.relpath, content, info.st_size)
                return
            content, shrank = tar.add_file(member, handle)
        if shrank:
            self.warnings.append(f"{entry.relpath}: shrank while being read; archived padded with zeros")
        if info.st_nlink > 1:
            self._hardlinks[key] = (entry.relpath, content)
        self.hasher.add_file(entry.relpath, content, member.size)


@register_source("files")
class FilesTarSource:
    """A directory tree (`type: files`) archived as a PAX tar stream."""

    format = "tar"
    extension = DUMP_EXTENSIONS["files"]

    def __init__(self, config: FilesSource) -> None:
        self.config = config
        self.name = config.name
        self.root = Path(config.path)

    @contextmanager
    def dump(self) -> Iterator[DumpStream]:
        """Start the tar producer and yield the pipe's read end.

        Raises SourceError when the root is not a directory, and from `finish()` when archiving
        failed (unreadable file, vanished root, consumer stopped reading).
        """
        if not self.root.is_dir():
            raise SourceError(f"directory {self.root} of source {self.name} does not exist")
        read_fd, write_fd = os.pipe()
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, CHUNK)  # fewer wake-ups than 64 KiB
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for unprivileged users: the default works
        reader = os.fdopen(read_fd, "rb")
        producer = _TarProducer(self.root, self.config.exclude, write_fd, self.config.symlinks)
        producer.start()

        def finish() -> dict[str, Any]:
            # Closing the read end first makes a producer stuck on a full pipe fail, not hang.
            reader.close()
            producer.join()
            if isinstance(producer.error, BrokenPipeError):
                raise SourceError(f"archiving {self.root}: the stream was not read to its end")
            if producer.error is not None:
                raise SourceError(f"archiving {self.root} failed: {producer.error}") from producer.error
            return {**producer.hasher.facts(), "skipped": producer.skipped, "warnings": producer.warnings}

        try:
            yield DumpStream(reader, self.format, self.extension, finish)
        finally:
            reader.close()  # unblocks a producer waiting to write, so the join returns
            producer.join()

    def estimate_size(self) -> int | None:
        """About how many bytes the tar stream will have: a header per archived entry, each
        regular file's size padded to a block, the end-of-archive record. The same walk as
        `dump` (excludes honoured, symlinks not followed), without reading any file.

        None for a tree of more than ESTIMATE_ENTRY_LIMIT entries (the walk would cost too
        much) and on any error: an estimate only feeds a progress bar.
        """
        total = 0
        try:
            for count, entry in enumerate(walk_tree(self.root, self.config.exclude), start=1):
                if count > ESTIMATE_ENTRY_LIMIT:
                    return None
                if entry.kind in ("dir", "file", "symlink"):
                    total += _HEADER_BYTES + -(-entry.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        except Exception as error:  # an estimate must never fail a backup
            log.debug("cannot estimate the size of %s: %s", self.root, error)
            return None
        total += 2 * tarfile.BLOCKSIZE
        return -(-total // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def restore(self, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome:
        """Extract the tar stream into `request.to_dir` and hash the result.

        Raises ConfigError when no directory is given or it is not empty (without `force`),
        IntegrityError naming the member for an absolute path, a `..` component, a link leading
        outside the destination, a special file, or a write through a symlink.
        """
        return self.restore_tree(lambda directory: _extract(stream, directory), request)

    def restore_tree(self, fill: Callable[[Path], None], request: RestoreRequest) -> RestoreOutcome:
        """Restore into `request.to_dir` what `fill(directory)` puts into an empty directory
        (the tar extraction of `restore`, or a store that keeps the tree itself: restic), and
        hash the result. The destination rules are the same for both: ConfigError when no
        directory is given or it is not empty (without `force`); a new tree goes into a hidden
        sibling renamed into place only when complete.
        """
        if request.to_dir is None:
            raise ConfigError(f"restoring {self.name} needs a destination directory (--to-dir)")
        destination = Path(request.to_dir).absolute()
        if destination.is_symlink():
            destination = destination.resolve()  # a link to a directory: restore where it leads
        in_place = False
        if destination.exists() or destination.is_symlink():
            if not destination.is_dir():
                raise ConfigError(f"{destination} exists and is not a directory")
            if any(destination.iterdir()):
                if not request.force:
                    raise ConfigError(f"{destination} is not empty; use --force to restore into it anyway")
                in_place = True
        if in_place:
            # --force into a non-empty directory: no sibling to swap in; say what is left on failure.
            try:
                fill(destination.resolve())
            except (IntegrityError, SourceError) as error:
                raise type(error)(
                    f"{error} (restored with --force into {destination}: files extracted before "
                    "this member are left there)"
                ) from None
            return RestoreOutcome(destination=str(destination), facts=tree_facts(destination))
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Extract into a hidden sibling and rename it into place only when complete, so a failed
        # restore leaves nothing half-written under the destination's name.
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.restoring-", dir=destination.parent))
        try:
            staging.chmod(0o755)
            fill(staging.resolve())
            facts = tree_facts(staging)
            if destination.exists():
                destination.rmdir()  # empty, checked above
            os.rename(staging, destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return RestoreOutcome(destination=str(destination), facts=facts)

    def recreate_roles(
        self, recorded: dict[str, Any], request: RestoreRequest, stage: RestoreStage,
        secrets: dict[str, str] | None = None,
    ) -> RolesOutcome:  # fmt: skip
        """Nothing to do: file trees carry no roles."""
        return RolesOutcome()

    def compare(self, manifest_facts: dict[str, Any], restored_facts: dict[str, Any]) -> list[str]:
        """Differences in tree hash, file count, symlink count and total bytes."""
        problems = []
        for key, label in (
            ("file_count", "file count"),
            ("symlink_count", "symlink count"),
            ("total_bytes", "total bytes"),
            ("tree_sha256", "tree hash"),
        ):
            if key in manifest_facts and manifest_facts[key] != restored_facts.get(key):
                restored = restored_facts.get(key)
                problems.append(f"files {label} differs: snapshot {manifest_facts[key]}, restored {restored}")
        return problems

    def describe(self) -> dict[str, Any]:
        """Secret-free description."""
        return {
            "name": self.name,
            "type": "files",
            "format": self.format,
            "path": str(self.root),
            "exclude": list(self.config.exclude),
            "symlinks": self.config.symlinks,
        }


def _extract(stream: BinaryIO, destination: Path) -> None:
    """Extract member by member with the 'data' filter plus our stricter checks."""
    directories: list[tarfile.TarInfo] = []
    guard = MemberGuard()
    keep_owner = os.geteuid() == 0  # like tar as root; the data filter alone would drop owners
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
            while (member := tar.next()) is not None:
                # TarFile remembers every member it read; in stream mode nothing looks back at
                # them (links are made with os.link), so forget them to keep memory flat.
                cast(Any, tar).members.clear()
                safe = _checked(member, destination, guard)
                if keep_owner:
                    safe = tarfilter.with_attrs(
                        safe, uid=member.uid, gid=member.gid, uname=member.uname, gname=member.gname
                    )
                target = destination / safe.name
                if target.is_symlink():
                    target.unlink()  # replace a link, never write through it
                # Directory attributes are set last, so a read-only directory does not block its files.
                try:
                    tar.extract(safe, destination, set_attrs=not safe.isdir(), **tarfilter.extract_options())
                except OSError as error:
                    raise SourceError(f"cannot extract tar member '{member.name}': {error}") from None
                if safe.isdir():
                    directories.append(safe)
            # The archive ends before the stream does (zero padding of the last record): read
            # it all, since whoever feeds us may hash the whole stream.
            while stream.read(CHUNK):
                pass
            for info in sorted(directories, key=lambda item: item.name, reverse=True):
                path = str(destination / info.name)
                tar.chown(info, path, numeric_owner=False)
                tar.utime(info, path)
                tar.chmod(info, path)
    except tarfile.ReadError as error:
        raise SourceError(f"the stream is not a valid tar archive: {error}") from None


def _checked(member: tarfile.TarInfo, destination: Path, guard: MemberGuard) -> tarfile.TarInfo:
    """The member after the shared guard (see targuard) and the data filter, or IntegrityError
    saying why it is refused. Symlinks are kept verbatim whatever they point to: they are
    created as links and nothing is ever written through one."""

    def refuse(reason: str) -> IntegrityError:
        return IntegrityError(f"refusing tar member '{member.name}': {reason}")

    guard.check(member)
    parent = destination
    for part in Path(member.name).parts[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise refuse(f"it would be written through the symlink {parent.relative_to(destination)}")
    if member.issym():
        # The data filter refuses absolute or escaping link targets; we keep them as links.
        return member  # ownership is applied only as root (tarfile.chown), as for other members
    try:
        return tarfilter.data_filter(member, str(destination))
    except tarfilter.RefusedMember as error:
        raise refuse(str(error)) from None
