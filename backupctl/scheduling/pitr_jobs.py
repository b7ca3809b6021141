"""The scheduled jobs of a source's point-in-time archive, whatever its engine.

One function per engine, chosen by the source's YAML `type:` in the explicit registry `JOBS`: the
schedulers (systemd, cron, the daemon) ask "which jobs does this source's archive need", never
which engine it is.

- PostgreSQL: `wal base-backup` on `pitr.base_backup_schedule` (WAL itself is pushed by the
  server's archive_command, not by a scheduler), and, with `pitr.archiver.pgdata`, the
  long-running `wal archiver` (kind "archiver", a *service*: `SERVICE_KINDS`): a systemd service
  with Restart=always, a cron watchdog line every minute (`WATCHDOG_CRON`, `flock -n` makes it
  start the archiver only when none runs), a child the daemon supervises and restarts.
- MySQL/MariaDB: `binlog collect` at the collection interval (`pitr.interval`, else rpo / 3),
  as a cron expression: every N minutes with N the largest divisor of 60 not above the interval
  (at least one minute, so a sub-minute interval runs every minute: docs/pitr-mysql.md says when a
  `binlog collect --watch` service is the better choice), every N hours beyond an hour.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

PitrKind = Literal["base-backup", "binlog", "archiver"]
SERVICE_KINDS: frozenset[str] = frozenset({"archiver"})  # run continuously, not at cron times
WATCHDOG_CRON = "* * * * *"  # a service's cron line: start it again within a minute of its exit


@dataclass(frozen=True)
class PitrJob:
    """One scheduled job of a source's archive: its kind ("base-backup", "binlog", "archiver") and
    cron text (for a service: how often cron's watchdog line checks that it runs)."""

    kind: PitrKind
    cron: str
    command: tuple[str, ...]  # the backupctl subcommand, e.g. ("wal", "base-backup")


def _postgres(source: Any) -> list[PitrJob]:
    schedule = source.pitr.base_backup_schedule
    jobs = [] if schedule is None else [PitrJob("base-backup", schedule, ("wal", "base-backup"))]
    archiver = source.pitr.archiver
    if archiver is not None and archiver.pgdata is not None:
        jobs.append(PitrJob("archiver", WATCHDOG_CRON, ("wal", "archiver")))
    return jobs


def _mysql(source: Any) -> list[PitrJob]:
    return [PitrJob("binlog", interval_cron(source.pitr.effective_interval()), ("binlog", "collect"))]


JOBS: dict[str, Callable[[Any], list[PitrJob]]] = {"postgres": _postgres, "mysql": _mysql}


def pitr_jobs(source: Any) -> list[PitrJob]:
    """The jobs a source's `pitr:` block needs from a scheduler (none without one)."""
    if getattr(source, "pitr", None) is None or source.type not in JOBS:
        return []
    return JOBS[source.type](source)


def interval_cron(interval: timedelta) -> str:
    """A cron expression firing at least as often as every `interval` (one minute at least)."""
    minutes = max(1, math.floor(interval.total_seconds() / 60))
    if minutes < 60:
        step = max(divisor for divisor in range(1, 61) if 60 % divisor == 0 and divisor <= minutes)
        return "* * * * *" if step == 1 else f"*/{step} * * * *"
    hours = min(24, minutes // 60)
    step = max(divisor for divisor in range(1, 25) if 24 % divisor == 0 and divisor <= hours)
    return "0 * * * *" if step == 1 else ("0 0 * * *" if step == 24 else f"0 */{step} * * *")
