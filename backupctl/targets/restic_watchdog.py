"""A no-progress deadline for every restic process (docs/targets.md, "Bounded time").

restic retries a frozen backend (S3, SFTP, REST) for many minutes with backoff, or waits on a
connection that never answers, and keeps printing the same status line meanwhile. The watchdog
stops it when its progress has not moved for `stall_seconds`: SIGINT first (restic removes its
lock), SIGKILL after a short grace. What counts as progress depends on the operation:
- a backup: the `bytes_done`/`files_done` of its status lines and the bytes backupctl feeds it;
- a `dump` backupctl reads: bytes reaching backupctl, while backupctl waits for them (a reader
  busy elsewhere, e.g. a slow `pg_restore`, is not restic's stall);
- every other command (snapshots, cat, restore, check, forget/prune, stats, unlock, init):
  the bytes restic has read from anything (`rchar` of /proc/PID/io: network, repository files,
  its cache), which stop when the backend freezes, and its output lines (`ReadActivity`).
"""

from __future__ import annotations

import io
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from backupctl.errors import TargetError

GRACE_SECONDS = 5.0


class StallWatchdog:
    """Watches `process`; `last_progress()` returns the monotonic time of its latest progress."""

    def __init__(
        self, process: subprocess.Popen[bytes], stall_seconds: float, last_progress: Callable[[], float]
    ) -> None:
        self.fired = False
        self.stall_seconds = stall_seconds
        self._process = process
        self._last_progress = last_progress
        threading.Thread(target=self._watch, daemon=True, name="restic-watchdog").start()

    def _watch(self) -> None:
        tick = min(1.0, self.stall_seconds / 4)
        while self._process.poll() is None:
            time.sleep(tick)
            if time.monotonic() - self._last_progress() > self.stall_seconds and self._process.poll() is None:
                self.fired = True
                self._process.send_signal(signal.SIGINT)
                try:
                    self._process.wait(timeout=GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                return

    def error(self, where: str, action: str = "") -> TargetError:
        """The transient TargetError of a stopped restic."""
        doing = f" {action}" if action else ""
        return TargetError(
            f"restic{doing} made no progress on {where} for {self.stall_seconds:g}s (endpoint frozen or "
            "unreachable?): stopped; raise the target's stall_timeout if the repository is just slow",
            transient=True,
        )


class ReadActivity:
    """The monotonic time of a process's latest progress: the latest change of the bytes it has
    read (`rchar` in /proc/PID/io) or of `output()` (e.g. lines it printed). Where /proc cannot
    be read (not Linux), only `output()` counts."""

    def __init__(self, pid: int, output: Callable[[], float]) -> None:
        self._path = f"/proc/{pid}/io"
        self._output = output
        self._rchar = -1
        self._changed = time.monotonic()

    def __call__(self) -> float:
        try:
            with open(self._path, "rb") as handle:
                fields = dict(line.split(b":", 1) for line in handle.read().splitlines() if b":" in line)
            rchar = int(fields.get(b"rchar", b"-1"))
        except (OSError, ValueError):
            rchar = self._rchar  # gone (exiting) or unreadable: no news
        if rchar != self._rchar:
            self._rchar, self._changed = rchar, time.monotonic()
        return max(self._changed, self._output())


class WaitingReader(io.RawIOBase):
    """Wraps the stdout of a `restic dump`: `last_progress()` is now while the caller is not
    waiting in a read (restic may then be blocked on a full pipe: not its stall), else the time
    the latest bytes arrived."""

    def __init__(self, stream: io.BufferedReader) -> None:
        super().__init__()
        self._stream = stream
        self._waiting = False
        self._arrived = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._waiting = True
        try:
            count = self._stream.readinto(buffer)
        finally:
            self._waiting = False
            self._arrived = time.monotonic()
        return count

    def last_progress(self) -> float:
        return self._arrived if self._waiting else time.monotonic()
