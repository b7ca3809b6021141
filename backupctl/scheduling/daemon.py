"""`backupctl daemon`: run every policy's backup, drill and PITR jobs at their times, in the foreground.

For hosts without systemd or cron (containers). Design decisions:

- **Timing.** The `schedule` library has no cron syntax, so each job (a policy's backup, its
  drill) is a *one-shot* `schedule` job: we compute the next run with `core.cronexpr`, schedule
  `every(<seconds until then>).seconds`, and when it fires the job re-arms itself for the
  following run and returns `CancelJob`. Re-arming starts from the planned time, not the clock,
  so a job that fires a little early can never run twice for one slot.
- **Runs are subprocesses** (`python -m backupctl backup POLICY`, `... drill --wait 4h
  FILE|POLICY`: the commands systemd and cron run; same interpreter, settings passed through
  BACKUPCTL_* variables). A crash or a memory-hungry dump cannot take the daemon down, the
  scheduler stays responsive while jobs run, policies run concurrently, and the run's own SIGTERM
  handling (the CLI raises `Terminated`; run_backup records the attempt as failed and the target
  discards its temp names; a drill tears its staging down) is exactly the one a manual run has.
- **One job at a time per policy.** A slot that comes while the *same* job of the policy is still
  running (or already waiting) is skipped (logged) rather than queued: no pile-up. A slot of the
  *other* job (the drill while the backup runs, or the reverse) waits and starts as soon as the
  running one ends: a quarterly drill is not lost to a long backup, and then proves its snapshot.
  The child takes the policy lock, which also keeps manual runs and prune of that policy out.
- **Stopping.** SIGTERM or SIGINT sets a flag; waiting jobs are dropped; the loop then forwards
  SIGTERM once to every running child (children run in their own session, so a terminal's Ctrl-C
  or a second signal does not hit them twice mid-cleanup), waits up to `stop_timeout` for them
  to record their outcome, SIGKILLs what is left, and exits 0. Under systemd run the daemon with
  `KillMode=mixed` for the same reason.
- **PITR jobs** (a PostgreSQL source's base backups, a MySQL source's binlog collection:
  scheduling.pitr_jobs) run the same way, each in a lane of its own (`Scheduled.lane`): a long
  dump never delays binlog collection, and a collection pass still running when the next slot
  comes skips that slot.
- **Services** (the WAL archiver of a source with `pitr.archiver.pgdata`: `Scheduled.service`)
  are not timed: each is started with the daemon and *supervised*: when it exits it is started
  again after a back-off (`RESTART_BACKOFF`: 1 s, doubling up to 60 s; back to 1 s once a run
  lasted `RESTART_RESET` seconds), and on SIGTERM it is stopped with the running jobs (the
  archiver finishes the pushes under way and exits 0). A daemon running as root starts it as
  `pitr.archiver.user`, the server's user who owns the spool (archive_command ignores acks of
  another user).
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
    item: Scheduled
    process: subprocess.Popen[bytes]
    started: float


@dataclass
class _Service:
    """A supervised long-running child: the process (None while it waits to restart)."""

    item: Scheduled
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0  # monotonic time of the next start while `process` is None
    failures: int = 0  # exits in a row of runs shorter than RESTART_RESET
    starts: int = 0


RESTART_BACKOFF = (1.0, 60.0)  # seconds before restarting an exited service: first, longest
RESTART_RESET = 60.0  # a run that lasted this long starts the back-off over


# Exit codes worth a word, per job kind (anything else: "failed (exit N)").
_OUTCOMES: dict[str, dict[int, str]] = {
    "backup": {0: "complete", 3: "partial (exit 3)", 143: "interrupted (exit 143)"},
    "drill": {0: "passed", 1: "FAILED (exit 1)", 143: "interrupted (exit 143)"},
    "verify": {0: "passed", 1: "FAILED (exit 1)", 143: "interrupted (exit 143)"},
    "base-backup": {0: "complete", 143: "interrupted (exit 143)"},
    "binlog": {0: "collected", 1: "found a hole (exit 1)", 143: "interrupted (exit 143)"},
    "archiver": {0: "stopped", 143: "killed by SIGTERM (exit 143)"},
}


@dataclass
class Daemon:
    """The scheduler loop. `run()` returns the exit code (0 after a clean stop).

    `run_now` starts every backup at once, `drill_now` every drill (a policy's backup first, its
    drill waiting for it, when both are set).
    """

    items: list[Scheduled]
    settings: Settings
    run_now: bool = False
    drill_now: bool = False
    stop_timeout: float = 300.0
    poll_seconds: float = 1.0
    clock: Callable[[], datetime] = datetime.now  # naive local time, as cron reads schedules
    _scheduler: schedule.Scheduler = field(default_factory=schedule.Scheduler)
    _running: dict[str, _Running] = field(default_factory=dict)  # lane -> its running job
    _waiting: dict[str, list[Scheduled]] = field(default_factory=dict)  # lane -> jobs due
    _services: list[_Service] = field(default_factory=list)  # supervised long-running children
    _stopping: bool = False

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info(
                "daemon started (pid %d): %d scheduled jobs of %d policies",
                os.getpid(),
                len(self.items),
                len({item.name for item in self.items}),
            )
            for item in self.items:
                if item.service:
                    self._services.append(_Service(item))
                    continue
                now = self.drill_now if item.kind == "drill" else self.run_now  # PITR jobs with backups
                self._arm(item, now=now)
            while not self._stopping:
                self._supervise()
                self._reap()
                self._start_waiting()
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
        self._scheduler.every(delay).seconds.do(self._fire, item, planned).tag(item.name, item.kind)
        log.info(
            "policy %s: next %s at %s (%s)",
            item.name,
            item.kind,
            planned.isoformat(" ", "minutes"),
            item.cron.text,
        )

    def _fire(self, item: Scheduled, planned: datetime) -> Any:
        if self._stopping:
            return schedule.CancelJob
        running = self._running.get(item.lane)
        waiting = self._waiting.setdefault(item.lane, [])
        slot = planned.isoformat(" ", "minutes")
        if running is not None and running.item.kind == item.kind:
            log.warning(
                "policy %s: skipping the %s %s: the previous %s (pid %d) is still running",
                item.name,
                slot,
                item.kind,
                item.kind,
                running.process.pid,
            )
        elif item in waiting:
            log.warning(
                "policy %s: skipping the %s %s: the previous one still waits", item.name, slot, item.kind
            )
        elif running is not None:
            waiting.append(item)
            log.info(
                "policy %s: the %s %s waits for the running %s (pid %d): one job at a time per policy",
                item.name,
                slot,
                item.kind,
                running.item.kind,
                running.process.pid,
            )
        else:
            self._start(item)
        self._arm(item, after=planned)
        return schedule.CancelJob

    def _start_waiting(self) -> None:
        for name, waiting in self._waiting.items():
            if waiting and name not in self._running:
                self._start(waiting.pop(0))

    def _start(self, item: Scheduled) -> None:
        argv = [sys.executable, "-m", "backupctl", *item.command()]
        try:
            process = subprocess.Popen(
                argv, env=self._child_env(), stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as error:
            # e.g. the interpreter was replaced or removed by an upgrade: this run is missed, the
            # next one is armed already (_fire), and the daemon keeps serving the other jobs
            log.error(
                "policy %s: cannot start the %s: %s; the next run is at its next scheduled time",
                item.name,
                item.job,
                error,
            )
            return
        self._running[item.lane] = _Running(item, process, time.monotonic())
        log.info("policy %s: %s started (pid %d)", item.name, item.job, process.pid)

    # ------------------------------------------------------------------ services
    def _supervise(self) -> None:
        """Start services that are due, note the exit of those that ended and plan their restart."""
        now = time.monotonic()
        for service in self._services:
            if service.process is not None:
                code = service.process.poll()
                if code is None:
                    continue
                lasted = now - service.started
                service.failures = 0 if lasted >= RESTART_RESET else service.failures + 1
                delay = _restart_delay(service.failures)
                service.process, service.restart_at = None, now + delay
                outcome = _OUTCOMES[service.item.kind].get(code, f"exited (exit {code})")
                log.warning(
                    "policy %s: %s %s after %.1fs: restarting in %.0fs",
                    service.item.name,
                    service.item.job,
                    outcome,
                    lasted,
                    delay,
                )
            if service.process is None and now >= service.restart_at:
                try:
                    service.process = subprocess.Popen(
                        [sys.executable, "-m", "backupctl", *service.item.command()],
                        env=self._child_env(),
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        **_as_user(service.item.archiver.user),
                    )
                except OSError as error:  # e.g. the interpreter is not the service user's to run
                    service.failures += 1
                    delay = _restart_delay(service.failures)
                    service.restart_at = now + delay
                    log.error(
                        "policy %s: cannot start the %s: %s; trying again in %.0fs",
                        service.item.name,
                        service.item.job,
                        error,
                        delay,
                    )
                    continue
                service.started, service.starts = now, service.starts + 1
                log.info(
                    "policy %s: %s %s (pid %d)",
                    service.item.name,
                    service.item.job,
                    "started" if service.starts == 1 else "restarted",
                    service.process.pid,
                )

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
            kind = running.item.kind
            outcome = _OUTCOMES[kind].get(code, f"failed (exit {code})")
            (log.info if code == 0 else log.warning)(
                "policy %s: %s (pid %d) %s after %.1fs",
                running.item.name,
                running.item.job,
                running.process.pid,
                outcome,
                seconds,
            )

    # ------------------------------------------------------------------ stopping
    def _shutdown(self) -> int:
        self._scheduler.clear()
        for service in self._services:  # stopped like the running jobs below
            if service.process is not None and service.process.poll() is None:
                self._running[f"service:{service.item.slot}"] = _Running(
                    service.item, service.process, service.started
                )
        self._services.clear()
        for name, waiting in self._waiting.items():
            for item in waiting:
                log.info("policy %s: the waiting %s is dropped: the daemon stops", name, item.kind)
        self._waiting.clear()
        for running in self._running.values():
            log.info(
                "policy %s: asking the running %s (pid %d) to abort",
                running.item.name,
                running.item.job,
                running.process.pid,
            )
            _signal(running.process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while self._running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        killed = list(self._running.items())
        for _, running in killed:
            # A backup's 'running' catalog row is marked failed by the policy's next run: still no
            # snapshot. A killed drill's staging is removed by `backupctl drill cleanup`.
            log.error(
                "policy %s: %s (pid %d) did not stop in time: killing it",
                running.item.name,
                running.item.job,
                running.process.pid,
            )
            _signal(running.process, signal.SIGKILL)
            running.process.wait()
        self._running.clear()
        log.info("daemon stopped" + (" (a run had to be killed)" if killed else ""))
        return 1 if killed else 0


def _restart_delay(failures: int) -> float:
    """Seconds before a service is started again after `failures` short runs in a row: the
    first back-off, doubling, at most the longest (RESTART_BACKOFF)."""
    first, longest = RESTART_BACKOFF
    return min(longest, first * 2.0 ** max(0, failures - 1))


def _as_user(name: str) -> dict[str, Any]:
    """Popen arguments that start a service as `name` when the daemon runs as root (the
    archiver must run as the server's user, who owns the spool); nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.warning("user %s does not exist: the service runs as root", name)
        return {}
    if entry.pw_uid == 0:
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass
