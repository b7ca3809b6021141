"""A no-progress deadline for a running restic backup (docs/targets.md, "Bounded time").

restic retries a frozen backend (S3, SFTP, REST) for many minutes with backoff and keeps
printing the same status line meanwhile. The watchdog stops it when the progress it reports
(`bytes_done`/`files_done` in its status lines) and the bytes backupctl feeds it have not moved
for `stall_seconds`: SIGINT first (restic removes its lock), SIGKILL after a short grace.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable

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

    def error(self, where: str) -> TargetError:
        """The transient TargetError of a stopped restic."""
        return TargetError(
            f"restic made no progress on {where} for {self.stall_seconds:g}s (endpoint frozen or "
            "unreachable?): stopped; raise the target's stall_timeout if the repository is just slow",
            transient=True,
        )
