"""One run per policy at a time: backup, prune and drill of one policy exclude each other.

The lock has two layers:

1. **Host layer** (always): `STATE_DIR/locks/<policy>.lock`, held with `fcntl.flock` on an open
   file. The kernel drops a flock when the last descriptor of the holder closes, which includes
   the holder being SIGKILLed or crashing: a dead holder never blocks anyone, so "take over" needs
   no pid guessing and has no race. The file also carries the holder's description as JSON (pid,
   host, command, purpose, since) so that a busy lock can name its holder; a description left by
   a dead process is reported ("taking over from pid N, which died") and overwritten.
   Our descriptors are close-on-exec (Python's default), so dump tools started by a run do not
   keep the lock alive after it ends.
2. **Fleet layer** (when the catalog URL is PostgreSQL): `pg_try_advisory_lock(hashtext(
   'backupctl:' || policy))` on a connection held for the lock's whole life. PostgreSQL releases
   it when the session ends (process death, network loss after the TCP keepalive), so it, too,
   cannot go stale. The holder is found through `pg_locks` + `pg_stat_activity`; our session's
   `application_name` carries "backupctl <host>:<pid> <purpose>" to name it.

`--wait DURATION` polls both layers until a deadline; without it a busy lock fails at once with
`LockBusy` (exit 1). The cron lines of `schedule install --cron` use a *different* file
(`<policy>.cron.lock`) for `flock -n`: flock conflicts between open file descriptions even within
one process tree, so sharing the file would make every cron-started run lock itself out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backupctl.core.runner import pid_alive
from backupctl.core.secrets import mask, mask_url_password
from backupctl.errors import ConfigError, JobFailed
from backupctl.settings import Settings

log = logging.getLogger("backupctl.locking")

POLL_SECONDS = 0.5
# Locks this process holds: (pid, state dir, policy) -> our record. The pid makes a forked child
# start with nothing held (it does not own the parent's flock semantics).
_HELD: dict[tuple[int, str, str], Holder] = {}


class LockBusy(JobFailed):
    """Another run of the same policy holds the lock (exit 1). `holder` describes it when known."""

    def __init__(self, message: str, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a policy lock."""

    pid: int
    host: str
    command: str
    purpose: str
    since: str  # ISO 8601, UTC

    @classmethod
    def me(cls, purpose: str) -> Holder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
            purpose=purpose,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def describe(self) -> str:
        if self.pid <= 0:  # a holder we could not identify (e.g. it is just starting)
            return f"{self.purpose} on host {self.host} since {self.since} ({self.command})"
        return f"{self.purpose} by pid {self.pid} on host {self.host} since {self.since} ({self.command})"


def lock_path(settings: Settings, policy: str) -> Path:
    """The host-layer lock file of a policy."""
    return settings.state_dir / "locks" / f"{policy}.lock"


@contextmanager
def policy_lock(
    settings: Settings,
    policy: str,
    purpose: str,
    wait: timedelta | None = None,
    *,
    poll_seconds: float = POLL_SECONDS,
) -> Iterator[Holder]:
    """Hold the lock of `policy` for the duration of the block; yield our own Holder record.

    Re-entrant within one process: a nested `policy_lock` of the same policy is granted at once.
    `purpose` says what runs ("backup", "prune", "drill"). `wait` None or zero: fail at once when
    busy; otherwise poll until it is free or the wait is over. Raises LockBusy naming the holder,
    ConfigError when the lock directory or the PostgreSQL catalog cannot be used.
    """
    key = (os.getpid(), str(settings.state_dir.absolute()), policy)
    if key in _HELD:
        # Re-entry within one run (a backup that prunes afterwards): the outer hold already
        # excludes everyone else; taking a second flock would only lock ourselves out.
        yield _HELD[key]
        return
    deadline = time.monotonic() + (wait.total_seconds() if wait else 0.0)
    me = Holder.me(purpose)
    file_lock = _FileLock(lock_path(settings, policy))
    fleet_lock = (
        _AdvisoryLock(settings.catalog_url, policy, me) if _is_postgres(settings.catalog_url) else None
    )
    announced = False
    try:
        while True:
            busy = file_lock.try_acquire(me)
            if busy is None and fleet_lock is not None:
                busy = fleet_lock.try_acquire()
                if busy is not None:
                    file_lock.release()  # don't block this host's other runs while we wait
            if busy is None:
                break
            if time.monotonic() >= deadline:
                waited = f" after waiting {_seconds(wait)}" if wait else ""
                raise LockBusy(
                    f"policy '{policy}' is locked{waited}: {busy.describe()}; "
                    "use --wait DURATION to wait for it",
                    busy,
                )
            if not announced:
                log.info(
                    "policy %s is locked (%s); waiting up to %s", policy, busy.describe(), _seconds(wait)
                )
                announced = True
            time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
        log.debug("locked policy %s for %s", policy, purpose)
        _HELD[key] = me
        try:
            yield me
        finally:
            del _HELD[key]
    finally:
        if fleet_lock is not None:
            fleet_lock.close()
        file_lock.release()


def read_holder(settings: Settings, policy: str) -> Holder | None:
    """The description in a policy's lock file (possibly of a finished run), None when absent."""
    return _parse_holder(lock_path(settings, policy))


# --------------------------------------------------------------------------- host layer
class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self, me: Holder) -> Holder | None:
        """Take the flock; None on success, else the holder's description."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise ConfigError(f"cannot create the lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            # An empty file: the holder has not written its description yet (or is releasing).
            return _parse_holder(self.path) or Holder(0, socket.gethostname(), "?", "another run", "?")
        previous = _parse_holder(self.path)
        if previous is not None:
            # A clean release empties the file, so a description here was left by a run that died
            # (SIGKILL, crash, power loss). Nothing to break: the kernel released its flock.
            state = "no longer exists" if pid_alive(previous.pid) is False else "did not release it"
            if previous.host != me.host:
                state = "ran on another host sharing this state directory"
            log.warning(
                "taking over the lock of policy left by %s: that process %s", previous.describe(), state
            )
        # Rewrite in place (not temp+rename): the flock belongs to this inode.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(asdict(me)) + "\n").encode(), 0)
        except OSError as error:  # disk full: name the file, release the lock
            os.close(fd)
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            # Leave the file (deleting it would race with a waiter that already opened it), but
            # empty it so that nobody mistakes a finished run for a holder.
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _parse_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(**{key: data[key] for key in ("pid", "host", "command", "purpose", "since")})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, empty (released, or being written) or not ours

    return True


# --------------------------------------------------------------------------- fleet layer
_LOCK_KEY = "hashtext('backupctl:' || %(policy)s)"
_HOLDER_SQL = f"""
SELECT a.pid, a.application_name, host(a.client_addr), a.state_change
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = {_LOCK_KEY}::bigint
LIMIT 1
"""


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres://"))


class _AdvisoryLock:
    """A session-level advisory lock on a connection we keep open while we hold it."""

    def __init__(self, url: str, policy: str, me: Holder) -> None:
        from sqlalchemy.engine import make_url

        self.policy = policy
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._url_for_messages = mask_url_password(url)
        self._application = f"backupctl {me.host}:{me.pid} {me.purpose}"[:63]
        self._connection: Any = None
        self._held = False

    def _connect(self) -> Any:
        if self._connection is None:
            import psycopg

            try:
                self._connection = psycopg.connect(
                    self._dsn, autocommit=True, application_name=self._application, connect_timeout=10
                )
            except psycopg.Error as error:
                raise ConfigError(
                    f"cannot lock policy '{self.policy}' in the catalog {self._url_for_messages}: "
                    f"{mask(str(error).strip())}"
                ) from None
        return self._connection

    def try_acquire(self) -> Holder | None:
        connection = self._connect()
        row = connection.execute(
            f"SELECT pg_try_advisory_lock({_LOCK_KEY})", {"policy": self.policy}
        ).fetchone()
        if row and row[0]:
            self._held = True
            return None
        found = connection.execute(_HOLDER_SQL, {"policy": self.policy}).fetchone()
        if found is None:  # released between the two statements: report it as busy, retry soon
            return Holder(0, "?", "?", "another run", "?")
        backend_pid, application, client, since = found
        return _holder_from_application(str(application or ""), backend_pid, client, since)

    def close(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(Exception):  # closing the session releases the lock anyway
            if self._held:
                self._connection.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", {"policy": self.policy})
        with contextlib.suppress(Exception):
            self._connection.close()
        self._connection = None
        self._held = False


def _holder_from_application(application: str, backend_pid: int, client: str | None, since: Any) -> Holder:
    """Rebuild a Holder from 'backupctl <host>:<pid> <purpose>' (or describe a foreign session)."""
    since_text = since.astimezone(UTC).isoformat(timespec="seconds") if isinstance(since, datetime) else "?"
    words = application.split(" ", 2)
    if len(words) == 3 and words[0] == "backupctl" and ":" in words[1]:
        host, _, pid = words[1].rpartition(":")
        if pid.isdigit():
            return Holder(int(pid), host, "backupctl (shared catalog)", words[2], since_text)
    return Holder(
        0, client or "?", f"database session {backend_pid} '{application}'", "a session", since_text
    )


def _seconds(wait: timedelta | None) -> str:
    from backupctl.core.durations import format_duration

    return format_duration(wait) if wait else "0s"
