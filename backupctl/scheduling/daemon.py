"""`backupctl daemon`: run every policy's backup at its cron times, in the foreground.

For hosts without systemd or cron (containers). Design decisions:

- **Timing.** The `schedule` library has no cron syntax, so each policy gets a *one-shot* job: we
  compute the next run with `core.cronexpr`, schedule `every(<seconds until then>).seconds`, and
  when it fires the job re-arms itself for the following run and returns `CancelJob`. Re-arming
  starts from the planned time, not the clock, so a job that fires a little early can never run
  twice for one slot.
- **Runs are subprocesses** (`python -m backupctl backup POLICY`, same interpreter, settings passed
  through BACKUPCTL_* variables). A crash or a memory-hungry dump cannot take the daemon down, the
  scheduler stays responsive while backups run, policies run concurrently, and the run's own
  SIGTERM handling (the CLI raises `Terminated`, run_backup records the attempt as failed and the
  target discards its temp names) is exactly the one a manual run has.
- **One job at a time per policy.** A slot that comes while the policy's previous run is still
  going is skipped (logged) rather than queued. The child takes the policy lock, which also keeps
  manual runs, prune and drills of that policy out.
- **Stopping.** SIGTERM or SIGINT sets a flag; the loop then forwards SIGTERM once to every
  running child (children run in their own session, so a terminal's Ctrl-C or a second signal
  does not hit them twice mid-cleanup), waits up to `stop_timeout` for them to record their
  outcome, SIGKILLs what is left, and exits 0. Under systemd run the daemon with `KillMode=mixed`
  for the same reason.
- Policies are read once at start; restart the daemon after changing them.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any

import schedule

from backupctl.scheduling import Scheduled
from backupctl.settings import Settings

log = logging.getLogger("backupctl.daemon")


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    started: float


@dataclass
class Daemon:
    """The scheduler loop. `run()` returns the exit code (0 after a clean stop)."""

    items: list[Scheduled]
    settings: Settings
    run_now: bool = False
    stop_timeout: float = 300.0
    poll_seconds: float = 1.0
    clock: Callable[[], datetime] = datetime.now  # naive local time, as cron reads schedules
    _scheduler: schedule.Scheduler = field(default_factory=schedule.Scheduler)
    _running: dict[str, _Running] = field(default_factory=dict)
    _stopping: bool = False

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("daemon started (pid %d): %d scheduled policies", os.getpid(), len(self.items))
            for item in self.items:
                self._arm(item, now=self.run_now)
            while not self._stopping:
                self._reap()
                self._scheduler.run_pending()
                time.sleep(self.poll_seconds)
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            # Only set a flag: the loop does the work outside the handler.
            self._stopping = True
            log.info("received %s: stopping", signal.Signals(signum).name)

    # ------------------------------------------------------------------ scheduling
    def _arm(self, item: Scheduled, *, now: bool = False, after: datetime | None = None) -> None:
        """Schedule the next run of `item` as a one-shot job (immediately when `now`)."""
        current = self.clock()
        planned = current if now else item.cron.next_after(max(after or current, current))
        # At least one second: schedule 1.2 loops forever on every(0).
        delay = max(1, math.ceil((planned - current).total_seconds()))
        self._scheduler.every(delay).seconds.do(self._fire, item, planned).tag(item.name)
        log.info(
            "policy %s: next backup at %s (%s)", item.name, planned.isoformat(" ", "minutes"), item.cron.text
        )

    def _fire(self, item: Scheduled, planned: datetime) -> Any:
        if self._stopping:
            return schedule.CancelJob
        if item.name in self._running:
            log.warning(
                "policy %s: skipping the %s run: the previous backup (pid %d) is still running",
                item.name,
                planned.isoformat(" ", "minutes"),
                self._running[item.name].process.pid,
            )
        else:
            self._start(item)
        self._arm(item, after=planned)
        return schedule.CancelJob

    def _start(self, item: Scheduled) -> None:
        argv = [sys.executable, "-m", "backupctl", "backup", item.name]
        process = subprocess.Popen(
            argv, env=self._child_env(), stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._running[item.name] = _Running(process, time.monotonic())
        log.info("policy %s: backup started (pid %d)", item.name, process.pid)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BACKUPCTL_POLICIES=str(self.settings.policies.absolute()),
            BACKUPCTL_STATE_DIR=str(self.settings.state_dir.absolute()),
            BACKUPCTL_KEYS_DIR=str(self.settings.keys_dir.absolute()),
            BACKUPCTL_CATALOG=self.settings.catalog_url,  # in the environment, never in argv
        )
        return env

    def _reap(self) -> None:
        for name, running in list(self._running.items()):
            code = running.process.poll()
            if code is None:
                continue
            del self._running[name]
            seconds = time.monotonic() - running.started
            outcome = {0: "complete", 3: "partial (exit 3)", 143: "interrupted (exit 143)"}.get(
                code, f"failed (exit {code})"
            )
            (log.info if code == 0 else log.warning)(
                "policy %s: backup (pid %d) %s after %.1fs", name, running.process.pid, outcome, seconds
            )

    # ------------------------------------------------------------------ stopping
    def _shutdown(self) -> int:
        self._scheduler.clear()
        for name, running in self._running.items():
            log.info("policy %s: asking the running backup (pid %d) to abort", name, running.process.pid)
            _signal(running.process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self._running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        killed = list(self._running.items())
        for name, running in killed:
            # Its 'running' catalog row is marked failed by the policy's next run: still no snapshot.
            log.error(
                "policy %s: backup (pid %d) did not stop in time: killing it", name, running.process.pid
            )
            _signal(running.process, signal.SIGKILL)
            running.process.wait()
        self._running.clear()
        log.info("daemon stopped" + (" (a backup had to be killed)" if killed else ""))
        return 1 if killed else 0


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass
