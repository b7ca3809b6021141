"""The spool of the asynchronous WAL archiver: acknowledgements, per-segment locks, liveness.

Standard library (and blake3) only, and nothing else of backupctl: `wal push`'s fast path
(backupctl.cli.fastpath) imports this module before click, pydantic or boto3 are loaded. It
even avoids pathlib, dataclasses, typing and json (5 to 16 ms each to import on this machine
with `python -S -X importtime`, more than hashing a 16 MiB segment): paths are `str`.

Layout, under the policy's `pitr.archiver.spool` (every directory 0700, owned by the server's
system user that runs both the archiver and archive_command):

    <spool>/<policy>/<source>/archiver.lock   held (flock) by the running archiver; its pid
    <spool>/<policy>/<source>/acks/<name>.ack  the segment is durable on every WAL target
    <spool>/<policy>/<source>/acks/<name>.lock held (flock) by whoever is pushing <name>

An ack is a few `key value` lines after a `backupctl-wal-ack 1` header: the identity of the
file it was made from (second line, when the archiver could record one: `identity_of`), the
segment name, the plain digest of the content that was archived (`blake3:<hex>`, the digest of the signed
record), its size, the WAL targets and the time (not JSON: importing json costs the fast path
more than the rest of its work, `python -X importtime`). It
is written to a temporary name, fsync'd, renamed and its directory fsync'd: an ack that is
visible is complete and survives a crash. It is written only after `push_to_all` returned, i.e.
once the segment and its record are durable on every WAL target.

The per-segment lock keeps the archiver and a fallback `wal push` from pushing the same segment
at the same time (two writers of one segment could leave a record beside the other writer's
ciphertext); the kernel drops it when its holder dies, so a killed archiver blocks nothing.
"""

from __future__ import annotations

import fcntl
import os
import time

from backupctl.core.durable import fsync_directory

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (see the module docstring)
    StrPath = str | os.PathLike[str]

ACK_FORMAT = "backupctl-wal-ack"
ACK_VERSION = "1"
ACKS = "acks"
ARCHIVER_LOCK = "archiver.lock"


class Ack:
    """What an acknowledgement says: `name` is durable on `targets` with content `digest`."""

    __slots__ = ("acked_at", "digest", "identity", "name", "size", "targets")

    def __init__(
        self,
        name: str,
        digest: str,
        size: int,
        targets: tuple[str, ...],
        acked_at: float,
        identity: str | None = None,
    ) -> None:
        self.name = name
        self.digest = digest  # blake3:<hex> of the plain segment, as in the signed record
        self.size = size
        self.targets = targets
        self.acked_at = acked_at  # time.time() when written
        self.identity = identity  # identity_of() the file that was archived, when it was stable

    def to_bytes(self) -> bytes:
        lines = [f"{ACK_FORMAT} {ACK_VERSION}"]
        if self.identity is not None:
            # the second line: archive_command's shell line reads exactly two lines
            # (pitr.archive_command); readers of version 1 ignore keys they do not know
            lines.append(f"identity {self.identity}")
        lines += [
            f"name {self.name}",
            f"digest {self.digest}",
            f"size {self.size}",
            f"targets {','.join(self.targets)}",
            f"acked_at {self.acked_at:.6f}",
        ]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Ack | None:
        """The ack in `data`; None when it is not a complete ack of this format."""
        try:
            header, *lines = data.decode().splitlines()
            if header != f"{ACK_FORMAT} {ACK_VERSION}":
                return None
            fields = dict(line.split(" ", 1) for line in lines)
            return cls(
                fields["name"],
                fields["digest"],
                int(fields["size"]),
                tuple(t for t in fields["targets"].split(",") if t),
                float(fields["acked_at"]),
                fields.get("identity"),
            )
        except (ValueError, KeyError):
            return None


def source_dir(spool: StrPath, policy: str, source: str) -> str:
    return os.path.join(spool, policy, source)


def acks_dir(spool: StrPath, policy: str, source: str) -> str:
    return os.path.join(spool, policy, source, ACKS)


def ack_path(spool: StrPath, policy: str, source: str, name: str) -> str:
    return os.path.join(spool, policy, source, ACKS, f"{name}.ack")


def lock_path(spool: StrPath, policy: str, source: str, name: str) -> str:
    return os.path.join(spool, policy, source, ACKS, f"{name}.lock")


def prepare(spool: StrPath, policy: str, source: str) -> str:
    """Create the spool directories private (0700) and return the acks directory."""
    directories = [os.fspath(spool), os.path.join(spool, policy), source_dir(spool, policy, source)]
    for directory in [*directories, acks_dir(spool, policy, source)]:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    return acks_dir(spool, policy, source)


def private(directory: StrPath) -> bool:
    """Whether `directory` is ours and closed to others: acks anyone else could write are ignored."""
    try:
        info = os.stat(directory)
    except OSError:
        return False
    return info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0


# --------------------------------------------------------------------------- acks
def write_ack(spool: StrPath, policy: str, source: str, ack: Ack) -> str:
    """Write `ack` atomically and durably (temp file, fsync, rename, fsync of the directory)."""
    path = ack_path(spool, policy, source, ack.name)
    directory = os.path.dirname(path)
    temp = os.path.join(directory, f".{ack.name}.ack.{os.getpid()}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, ack.to_bytes())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temp, path)
    fsync_directory(directory)
    return path


def read_ack(spool: StrPath, policy: str, source: str, name: str) -> Ack | None:
    """The ack of segment `name`; None when absent, unreadable or malformed (never trusted then)."""
    try:
        with open(ack_path(spool, policy, source, name), "rb") as handle:
            ack = Ack.from_bytes(handle.read())
    except OSError:
        return None
    return ack if ack is not None and ack.name == name else None


def plain_digest(path: StrPath) -> tuple[str, int]:
    """(`blake3:<hex>`, size) of a file: the same digest as a segment record's plain digest.

    mmap'd, one thread: 12 ms for a 16 MiB segment here (a read() into memory took 36 ms, two
    threads 20 ms on the 2 shared cores; hashlib's import alone costs 7 ms)."""
    import blake3

    hasher = blake3.blake3(max_threads=1)
    size = os.path.getsize(path)
    if size:
        hasher.update_mmap(path)
    return f"blake3:{hasher.hexdigest()}", size


# Time stamps are taken from a clock that advances in ticks (at most 10 ms on Linux; whole
# seconds on file systems without sub-second stamps): a write within the tick of the previous one
# may leave mtime and ctime unchanged. A file whose ctime is older than the start of its read by
# more than a tick cannot be changed during the read without a new ctime.
TICK_NS = 20_000_000
COARSE_TICK_NS = 2_000_000_000


def identity_of(info: os.stat_result) -> str:
    """`dev inode size mtime ctime` as coreutils `stat -c '%d %i %s %.9Y %.9Z'` prints them."""

    def stamp(ns: int) -> str:
        return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"

    return f"{info.st_dev} {info.st_ino} {info.st_size} {stamp(info.st_mtime_ns)} {stamp(info.st_ctime_ns)}"


def stable_identity(before: os.stat_result, after: os.stat_result, started_ns: int) -> str | None:
    """The identity of a file read between two stats (`before` taken at `started_ns`,
    time.time_ns()), or None when it may have changed meanwhile: the stats differ, or its last
    change is too recent for a change during the read to show (TICK_NS)."""
    identity = identity_of(before)
    if identity != identity_of(after) or before.st_ctime_ns < 0 or before.st_mtime_ns < 0:
        return None
    coarse = before.st_ctime_ns % 1_000_000_000 == 0 and before.st_mtime_ns % 1_000_000_000 == 0
    if before.st_ctime_ns > started_ns - (COARSE_TICK_NS if coarse else TICK_NS):
        return None
    return identity


def matches(ack: Ack, path: StrPath) -> bool:
    """Whether the file at `path` is exactly the content the ack says is archived."""
    try:
        if os.path.getsize(path) != ack.size:
            return False
        return plain_digest(path)[0] == ack.digest
    except OSError:
        return False


# --------------------------------------------------------------------------- locks
class SegmentLock:
    """An exclusive flock on `<name>.lock`; released on release() or when the process dies.

    The holder removes the file when it is done (`release(remove=True)`), so lock files do not
    pile up one per segment; a process that opened the file just before it was removed gets its
    flock on a file no longer in the directory and must not count it: `try_acquire` checks that
    the path still names the locked file (the usual flock + unlink protocol)."""

    def __init__(self, path: StrPath) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held, named = os.fstat(fd), os.stat(self.path)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            os.close(fd)  # removed and re-created meanwhile: not the lock of record
            return False
        self._fd = fd
        return True

    def release(self, *, remove: bool = False) -> None:
        if self._fd is not None:
            if remove:
                try:
                    os.unlink(self.path)  # while still held: see the class docstring
                except FileNotFoundError:
                    pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def archiver_running(spool: StrPath, policy: str, source: str) -> int | None:
    """The pid of the running archiver of this source, or None when none holds the lock."""
    path = os.path.join(source_dir(spool, policy, source), ARCHIVER_LOCK)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(os.pread(fd, 32, 0).decode().strip() or 0) or -1
        except ValueError:
            return -1
    finally:
        os.close(fd)  # a shared lock we got is dropped here
    return None


def hold_archiver_lock(spool: StrPath, policy: str, source: str) -> int:
    """Take the archiver lock for this process (its pid written in it); the open descriptor.
    Raises BlockingIOError when another archiver of the source runs."""
    path = os.path.join(source_dir(spool, policy, source), ARCHIVER_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# --------------------------------------------------------------------------- pruning
def prune(spool: StrPath, policy: str, source: str, still_ready: set[str], older_than: float) -> list[str]:
    """Remove acks (and their lock files) of segments PostgreSQL no longer waits for (no `.ready`)
    that are older than `older_than` seconds; the names removed. A pruned ack costs at most one
    full push if PostgreSQL ever asks again (after a crash): correctness never needs it."""
    acks = acks_dir(spool, policy, source)
    cutoff = time.time() - older_than
    removed = []
    try:
        entries = list(os.scandir(acks))
    except OSError:
        return []
    for entry in entries:
        name, dot, suffix = entry.name.rpartition(".")
        if not dot or suffix not in ("ack", "lock") or name.startswith(".") or name in still_ready:
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                if suffix == "ack":
                    removed.append(name)
        except OSError:
            continue
    return removed

