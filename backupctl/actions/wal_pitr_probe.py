"""The point-in-time archive probe of PostgreSQL sources: `wal status`, seen by `backupctl status`."""

from __future__ import annotations

from datetime import datetime

from backupctl.actions.pitr_status import PitrArchiveStatus
from backupctl.catalog.store import Catalog
from backupctl.policy.schema import Policy
from backupctl.settings import Settings


def wal_archive_status(
    settings: Settings, catalog: Catalog, policy: Policy, source_name: str, now: datetime
) -> PitrArchiveStatus:
    """The WAL archive's achieved RPO (worst target), gaps and base backups, as `wal status` has them."""
    from backupctl.actions.access import trusted_keys
    from backupctl.actions.wal_status import status_samples, wal_status

    status = wal_status(settings, policy, source_name, trusted_keys(settings, policy), now=now)
    newest = max((t.newest_segment for t in status.targets if t.newest_segment), default=None)
    return PitrArchiveStatus(
        source=source_name,
        archive="WAL",
        rpo_seconds=status.rpo_seconds,
        objective_seconds=status.objective_seconds,
        newest=newest,
        problems=list(status.problems),
        detail=status.as_dict(),
        metrics=status_samples(status),
    )
