"""`backupctl wal archiver`: push WAL segments ahead of PostgreSQL's archive_command.

In the spirit of pgBackRest's archive-async: a long-running process, run as the server's system
user next to the data directory, watches `pg_wal/archive_status/*.ready`, pushes those segments
in parallel with exactly `wal push`'s code path (`actions.wal.push_opened`: zstd + age, signed
record, durable on every WAL target, the identity and identical/different content rules) and,
for each segment durable everywhere, writes an acknowledgement into the spool
(pitr.spool: private, fsync'd, atomic). archive_command (`wal push --spool`) then answers from
the ack in a few milliseconds (cli.fastpath) when the file's digest equals the acked one; the
shell line of pitr.archive_command answers without Python when the file's identity (device,
inode, size, mtime, ctime) equals the one the ack records -- recorded only when the file did not
change while it was pushed (spool.stable_identity). It refuses a spool it cannot make private.

It never writes an ack for a segment that is not durable: the ack is written after
`push_to_all` returned, and a push that failed, was interrupted or conflicts leaves none (the
fast path then falls back to the full push, which reports the failure to PostgreSQL).
It never marks `.ready` files `.done`: only PostgreSQL does, after archive_command said 0.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.actions.wal import (
    close_all,
    open_archives,
    pitr_source,
    push_opened,
    target_location,
    wal_target_names,
)
from backupctl.errors import ConfigError, JobFailed
from backupctl.pitr import spool
from backupctl.pitr.archive import SegmentArchive
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1  # archive_command waits up to cli.fastpath.ARCHIVER_GRACE for the pick-up
RETRY_AFTER = (2.0, 60.0)  # back-off after a failed push: first, longest
ACK_KEEP_SECONDS = 3600.0  # acks of segments PostgreSQL is done with are pruned after this
PRUNE_EVERY = 60.0


@dataclass
class ArchiverStats:
    pushed: int = 0  # segments written by this archiver
    already: int = 0  # segments found archived with the same content (acked too)
    failed: int = 0  # failed attempts (retried later)
    pruned: int = 0
    failures: list[str] = field(default_factory=list)  # the last messages, newest last


def spool_of(policy: Policy, source_name: str) -> Path:
    """The spool directory of a source's archiver; ConfigError when it has no `pitr.archiver`."""
    _, pitr = pitr_source(policy, source_name)
    if pitr.archiver is None:
        raise ConfigError(
            f"source '{source_name}' of policy '{policy.name}' has no asynchronous archiver: "
            "add 'archiver: {spool: DIR}' to its pitr: block (docs/pitr.md)"
        )
    return Path(pitr.archiver.spool).expanduser()


def run_archiver(
    settings: Settings,
    policy: Policy,
    source_name: str,
    pgdata: Path,
    stop: threading.Event,
    *,
    workers: int | None = None,
    once: bool = False,
    on_ack: Callable[[str, bool], None] | None = None,
) -> ArchiverStats:
    """Push every `.ready` segment of `pgdata` ahead and ack it, until `stop` is set (or, with
    `once`, until nothing is left to push). Raises ConfigError (no archiver configured, no
    pg_wal/archive_status), JobFailed (another archiver of this source runs)."""
    _, pitr = pitr_source(policy, source_name)
    root = spool_of(policy, source_name)
    assert pitr.archiver is not None
    status = pgdata / "pg_wal" / "archive_status"
    if not status.is_dir():
        raise ConfigError(f"{status} does not exist: --pgdata must be the server's data directory")
    _prepare_private(root, policy.name, source_name)
    try:
        lock_fd = spool.hold_archiver_lock(root, policy.name, source_name)
    except BlockingIOError:
        pid = spool.archiver_running(root, policy.name, source_name)
        raise JobFailed(f"an archiver of {policy.name}/{source_name} already runs (pid {pid})") from None
    targets = _target_marks(policy, wal_target_names(policy, pitr_source(policy, source_name)[0]))
    _forget_other_targets(root, policy.name, source_name, targets)
    local = threading.local()
    opened: list[list[SegmentArchive]] = []
    opened_lock = threading.Lock()  # guards `opened` and the counters of `stats`
    stats = ArchiverStats()
    retry_at: dict[str, float] = {}
    failures: dict[str, int] = {}
    in_flight: dict[str, Future[None]] = {}

    def archives() -> list[SegmentArchive]:
        if not hasattr(local, "archives"):  # one set per worker thread: targets are not shared
            local.archives = open_archives(settings, policy, source_name, for_push=True)
            with opened_lock:
                opened.append(local.archives)
        result: list[SegmentArchive] = local.archives
        return result

    def push_one(name: str) -> None:
        lock = spool.SegmentLock(spool.lock_path(root, policy.name, source_name, name))
        if not lock.try_acquire():
            return  # archive_command pushes it right now
        try:
            path = pgdata / "pg_wal" / name
            if spool.read_ack(root, policy.name, source_name, name) is not None:
                return
            if not (status / f"{name}.ready").exists():
                return  # archived meanwhile (PostgreSQL renamed it .done)
            # the identity of the file read (stat before and after): archive_command's shell line
            # answers from it without hashing; none when the file may have changed meanwhile
            started = time.time_ns()
            before = os.stat(path)
            results = push_opened(settings, archives(), path, name)
            identity = spool.stable_identity(before, os.stat(path), started)
            digest = results[0].record.plain_digest
            size = results[0].record.plain_bytes
            if any(r.record.plain_digest != digest for r in results):
                raise JobFailed(f"{name}: the WAL targets hold different contents")  # never acked
            if identity is not None and before.st_size != size:
                identity = None  # not the content the records describe: never vouch for it
            ack = spool.Ack(name, digest, size, targets, time.time(), identity)
            spool.write_ack(root, policy.name, source_name, ack)
            already = all(r.already for r in results)
            with opened_lock:  # `+=` on an attribute is not atomic across threads
                if already:
                    stats.already += 1
                else:
                    stats.pushed += 1
            log.info("%s %s and acknowledged", name, "already archived" if already else "archived")
            if on_ack is not None:
                on_ack(name, already)
        finally:
            lock.release(remove=True)  # one lock file per segment would pile up otherwise

    last_prune = 0.0
    try:
        with ThreadPoolExecutor(max_workers=workers or pitr.archiver.workers) as pool:
            while not stop.is_set():
                for name, future in list(in_flight.items()):
                    if future.done():
                        del in_flight[name]
                        _settle(name, future, stats, retry_at, failures)
                ready = _ready(status)
                for gone in set(retry_at) - set(ready):  # archived meanwhile by archive_command
                    retry_at.pop(gone, None)
                    failures.pop(gone, None)
                now = time.monotonic()
                todo = [
                    name
                    for name in ready
                    if name not in in_flight
                    and retry_at.get(name, 0.0) <= now
                    and not os.path.exists(spool.ack_path(root, policy.name, source_name, name))
                ]
                for name in todo:
                    in_flight[name] = pool.submit(push_one, name)
                if once and not in_flight and not todo:
                    break
                if now - last_prune > PRUNE_EVERY:
                    stats.pruned += len(
                        spool.prune(root, policy.name, source_name, set(ready), ACK_KEEP_SECONDS)
                    )
                    last_prune = now
                stop.wait(POLL_SECONDS)
            for future in in_flight.values():
                future.cancel()  # not started yet: nothing to undo
        for name, future in in_flight.items():
            if not future.cancelled():
                _settle(name, future, stats, retry_at, failures)
    finally:
        for archive_set in opened:
            close_all(archive_set)
        os.close(lock_fd)
    return stats


def _settle(
    name: str,
    future: Future[None],
    stats: ArchiverStats,
    retry_at: dict[str, float],
    failures: dict[str, int],
) -> None:
    error = future.exception()
    if error is None:
        failures.pop(name, None)
        retry_at.pop(name, None)
        return
    count = failures[name] = failures.get(name, 0) + 1
    delay = min(RETRY_AFTER[1], RETRY_AFTER[0] * 2 ** (count - 1))
    retry_at[name] = time.monotonic() + delay
    stats.failed += 1
    stats.failures = [*stats.failures[-9:], f"{name}: {error}"]
    # archive_command falls back to the full push for it, which tells PostgreSQL
    log.error("archiving %s failed (retry in %.0fs): %s", name, delay, error)


def _ready(status: Path) -> list[str]:
    """Names PostgreSQL waits to archive, oldest first (history files sort before segments of a
    later timeline, as PostgreSQL archives them)."""
    try:
        entries = os.listdir(status)
    except OSError as error:
        raise JobFailed(f"cannot read {status}: {error.strerror}") from None
    return sorted(entry[: -len(".ready")] for entry in entries if entry.endswith(".ready"))


def _prepare_private(root: Path, policy: str, source: str) -> None:
    """Create the spool 0700 and refuse to ack into one that is not private (owned by this user,
    closed to others): archive_command trusts an ack, its shell line without re-hashing the file."""
    try:
        acks = spool.prepare(root, policy, source)
    except OSError as error:
        raise ConfigError(
            f"cannot make the spool {root} private to this user ({error.strerror}): it must be a "
            "directory owned by the server's user (pitr.archiver.user), mode 0700"
        ) from None
    for directory in (str(root), acks):
        if not spool.private(directory):
            raise ConfigError(
                f"the spool directory {directory} is not private (owned by this user, mode 0700): "
                "acknowledgements there could be forged; archive_command would not trust them"
            )


def _target_marks(policy: Policy, names: list[str]) -> tuple[str, ...]:
    """`name:fingerprint` of each WAL target (where it points): an ack says where it is durable."""
    return tuple(f"{name}:{target_location(policy.target(name))[:12]}" for name in names)


def _forget_other_targets(root: Path, policy: str, source: str, targets: tuple[str, ...]) -> None:
    """Drop acks made for another set of WAL targets, or targets configured otherwise (the policy
    changed): they do not say the segment is on the targets of today."""
    directory = Path(spool.acks_dir(root, policy, source))
    for path in directory.glob("*.ack"):
        ack = spool.read_ack(root, policy, source, path.name[: -len(".ack")])
        if ack is None or ack.targets != targets:
            path.unlink(missing_ok=True)
