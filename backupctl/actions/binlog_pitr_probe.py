"""The point-in-time archive probe of MySQL/MariaDB sources: `binlog status`, seen by `backupctl status`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from backupctl.actions.pitr_status import PitrArchiveStatus
from backupctl.catalog.store import ArchiveObservation, Catalog
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

if TYPE_CHECKING:
    from backupctl.actions.binlog import BinlogStatus
    from backupctl.pitr.mysql_archive import BinlogArchiveStore


def binlog_archive_status(
    settings: Settings, catalog: Catalog, policy: Policy, source_name: str, now: datetime
) -> PitrArchiveStatus:
    """The binlog archive's achieved RPO and holes, as `binlog status` has them."""
    from backupctl.actions.binlog import binlog_status
    from backupctl.pitr.mysql_archive import open_binlog_archive
    from backupctl.pitr.mysql_metrics import binlog_samples

    with open_binlog_archive(settings, policy, source_name) as archive:
        status = binlog_status(policy, source_name, archive, catalog, now=now)
    problems = []
    if status.rpo_seconds is None:
        problems.append("nothing archived yet: run `backupctl binlog collect`")
    elif status.rpo_seconds > status.objective_seconds:
        problems.append(
            f"RPO breached: the newest archived binlog event is {status.rpo_seconds:.0f}s old "
            f"(objective {status.objective_seconds}s)"
        )
    problems += [f"hole: {gap.describe()}" for gap in status.gaps]
    detail = status.as_dict()
    return PitrArchiveStatus(
        source=source_name,
        archive="binlogs",
        rpo_seconds=status.rpo_seconds,
        objective_seconds=float(status.objective_seconds),
        newest=status.newest,
        problems=problems,
        detail=detail,
        metrics=binlog_samples(detail, status.covered_until),
        observation=binlog_observation(status, now, "status"),
    )


def binlog_observation(status: BinlogStatus, now: datetime, via: str) -> ArchiveObservation:
    """What the catalog records of one reading of a binlog archive."""
    problems = [f"hole: {gap.describe()}" for gap in status.gaps]
    if status.restorable_from is None:
        problems.append("no dump with a binlog position to start a point-in-time restore from")
    return ArchiveObservation(
        policy=status.policy,
        source=status.source,
        archive="binlogs",
        via=via,
        observed_at=now,
        newest_at=_time(status.covered_until),
        restorable_from=_time(status.restorable_from),
        continuous=status.continuous,
        problems=tuple(problems),
    )


def _time(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def observed_binlog_status(
    policy: Policy, source_name: str, archive: BinlogArchiveStore, catalog: Catalog, via: str
) -> BinlogStatus:
    """`binlog_status`, also recorded in the catalog as an observation of the archive (what
    `binlog status|verify|collect` read anyway: evidence of the achieved RPO over time)."""
    from backupctl.actions.binlog import binlog_status

    now = datetime.now(UTC)
    status = binlog_status(policy, source_name, archive, catalog, now=now)
    catalog.record_archive_observation(binlog_observation(status, now, via))
    return status
