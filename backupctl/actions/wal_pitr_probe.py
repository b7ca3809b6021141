"""The point-in-time archive probe of PostgreSQL sources: `wal status`, seen by `backupctl status`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from backupctl.actions.pitr_status import PitrArchiveStatus
from backupctl.catalog.store import ArchiveObservation, Catalog
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

if TYPE_CHECKING:
    from backupctl.actions.wal import WalVerifyReport
    from backupctl.actions.wal_status import WalStatus


def wal_archive_status(
    settings: Settings, catalog: Catalog, policy: Policy, source_name: str, now: datetime
) -> PitrArchiveStatus:
    """The WAL archive's achieved RPO (worst target), gaps and base backups, as `wal status` has them."""
    from backupctl.actions.access import trusted_keys
    from backupctl.actions.wal_status import status_samples, wal_status

    status = wal_status(settings, policy, source_name, trusted_keys(settings, policy), now=now)
    newest = max((t.newest_segment for t in status.targets if t.newest_segment), default=None)
    observation = wal_observation(status, now, "status")
    return PitrArchiveStatus(
        source=source_name,
        archive="WAL",
        rpo_seconds=status.rpo_seconds,
        objective_seconds=status.objective_seconds,
        newest=newest,
        problems=list(status.problems),
        detail=status.as_dict(),
        metrics=status_samples(status),
        observation=observation,
    )


def wal_observation(status: WalStatus, now: datetime, via: str) -> ArchiveObservation:
    """What the catalog records of one reading of a WAL archive: the worst target counts (its
    newest point, the latest oldest base backup), continuous only when every target is."""
    newest = [t.newest_at for t in status.targets]
    bases = [t.oldest_base_at for t in status.targets]
    return ArchiveObservation(
        policy=status.policy,
        source=status.source,
        archive="WAL",
        via=via,
        observed_at=now,
        newest_at=None if not newest or None in newest else min(_time(v) for v in newest if v),
        restorable_from=None if not bases or None in bases else max(_time(v) for v in bases if v),
        continuous=bool(status.targets) and all(t.continuous for t in status.targets),
        problems=tuple(status.problems),
    )


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def observed_wal_status(
    settings: Settings, policy: Policy, source_name: str, trusted: list[str], catalog: Catalog, via: str
) -> WalStatus:
    """`wal_status`, also recorded in the catalog as an observation of the archive (`wal status`
    reads it anyway; `wal push` stays catalog-free)."""
    from backupctl.actions.wal_status import wal_status

    now = datetime.now(UTC)
    status = wal_status(settings, policy, source_name, trusted, now=now)
    catalog.record_archive_observation(wal_observation(status, now, via))
    return status


def observed_wal_verify(
    settings: Settings, policy: Policy, source_name: str, trusted: list[str], catalog: Catalog
) -> WalVerifyReport:
    """`verify_wal`, then the archive read as `wal status` reads it and recorded as an
    observation (`via` "wal verify"), as `binlog verify` does: a scheduled `wal verify` is
    evidence of the archive's continuity and lag (the rpo-achieved control, docs/evidence.md).
    The same chain rules as verify, from the same oldest base backup: a gap verify names makes
    the observation not continuous."""
    from backupctl.actions.wal import verify_wal

    report = verify_wal(settings, policy, source_name, trusted)
    observed_wal_status(settings, policy, source_name, trusted, catalog, "wal verify")
    return report
