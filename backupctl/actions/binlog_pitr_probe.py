"""The point-in-time archive probe of MySQL/MariaDB sources: `binlog status`, seen by `backupctl status`."""

from __future__ import annotations

from datetime import datetime

from backupctl.actions.pitr_status import PitrArchiveStatus
from backupctl.catalog.store import Catalog
from backupctl.policy.schema import Policy
from backupctl.settings import Settings


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
    )
