"""`wal status` (achieved RPO of a PITR source) and `wal prune` (WAL older than the oldest kept
base backup, base backups beyond `keep_base_backups`).

The achieved RPO is now - the newest archived segment's `pushed_at` (the moment it became
durable), per WAL target; the worst target counts. When the server is reachable, its
`pg_stat_archiver` failures and the `.ready` backlog are reported beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backupctl.actions.wal import RULES, close_all, open_archives, pitr_source
from backupctl.errors import RetainedByLock
from backupctl.metrics import write_metrics_file
from backupctl.pitr.chain import check_chain, newest_point
from backupctl.pitr.postgres_base import delete_base_backup, list_base_backups
from backupctl.pitr.postgres_wal import lineage
from backupctl.pitr.retention import SegmentPrune, prune_segments
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class TargetWalStatus:
    target: str
    newest_segment: str | None
    newest_at: str | None
    rpo_seconds: float | None
    segments: int
    base_backups: int
    gaps: list[str]
    oldest_base_at: str | None = None  # the oldest kept base backup's finish: restorable from there
    continuous: bool = False  # a base backup, and no WAL missing from its start to the newest


@dataclass
class WalStatus:
    policy: str
    source: str
    objective_seconds: float
    targets: list[TargetWalStatus]
    server: dict[str, Any] | None = None  # pg_stat_archiver + .ready backlog, when reachable
    problems: list[str] = field(default_factory=list)

    @property
    def rpo_seconds(self) -> float | None:
        values = [t.rpo_seconds for t in self.targets]
        return (
            None if not values or any(v is None for v in values) else max(v for v in values if v is not None)
        )

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "ok": self.ok,
            "rpo_seconds": self.rpo_seconds,
            "objective_seconds": self.objective_seconds,
            "targets": [t.__dict__ for t in self.targets],
            "server": self.server,
            "problems": self.problems,
        }


def wal_status(
    settings: Settings, policy: Policy, source_name: str, trusted: list[str], *, now: datetime | None = None
) -> WalStatus:
    """The achieved RPO per WAL target, gaps, and the server's archiver state (best effort)."""
    source, pitr = pitr_source(policy, source_name)
    moment = now or datetime.now(UTC)
    objective = policy.objectives.rpo.total_seconds()
    status = WalStatus(policy.name, source_name, objective, [])
    archives = open_archives(settings, policy, source_name)
    try:
        for archive in archives:
            records = archive.list_records(trusted)
            bases = list_base_backups(archive, trusted)
            chain = lineage(records)
            newest = newest_point(chain)
            report = check_chain(chain, RULES, start=bases[0].start_segment if bases else None)
            rpo = (moment - newest).total_seconds() if newest else None
            item = TargetWalStatus(
                target=archive.target.name,
                newest_segment=chain[-1].name if chain else None,
                newest_at=newest.isoformat() if newest else None,
                rpo_seconds=round(rpo, 1) if rpo is not None else None,
                segments=len(chain),
                base_backups=len(bases),
                gaps=[gap.missing[0] for gap in report.gaps]
                + ([report.start_missing] if report.start_missing else []),
                oldest_base_at=bases[0].finished_time.isoformat() if bases else None,
            )
            item.continuous = bool(bases) and bool(chain) and not item.gaps
            status.targets.append(item)
            if rpo is None:
                status.problems.append(f"{archive.target.name}: nothing archived yet")
            elif rpo > objective:
                status.problems.append(
                    f"{archive.target.name}: RPO breached: newest segment archived {rpo:.0f}s ago "
                    f"(objective {objective:.0f}s)"
                )
            if not bases:
                status.problems.append(f"{archive.target.name}: no complete base backup")
            elif pitr.base_backup_schedule is not None:
                from backupctl.policy.rpo_check import longest_gap

                due = longest_gap(pitr.base_backup_schedule) + timedelta(hours=1)
                age = moment - bases[-1].finished_time
                if age > due:
                    status.problems.append(
                        f"{archive.target.name}: the newest base backup is {age} old (base_backup_schedule "
                        f"expects one every {due - timedelta(hours=1)}): run `backupctl wal base-backup`"
                    )
            if item.gaps:
                status.problems.append(f"{archive.target.name}: WAL missing: {', '.join(item.gaps)}")
    finally:
        close_all(archives)
    status.server = _server_state(source.url, source.password.resolve() if source.password else None)
    if status.server and status.server.get("ready_backlog", 0) > 0:
        log.info("%s segments wait for archiving on the server", status.server["ready_backlog"])
    return status


def _server_state(url: str, password: str | None) -> dict[str, Any] | None:
    """pg_stat_archiver and the .ready backlog; None when the server cannot be reached."""
    from backupctl.sources.postgres_sql import connect

    try:
        with connect(url, password, "the server whose WAL is archived") as connection:
            row = connection.execute(
                "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
                "last_failed_wal, last_failed_time FROM pg_stat_archiver"
            ).fetchone()
            try:
                backlog_row = connection.execute(
                    "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
                ).fetchone()
                backlog: int | None = int(backlog_row[0]) if backlog_row else None
            except Exception:  # needs pg_monitor or superuser: reported as unknown
                backlog = None
    except Exception as error:  # the server may be down: the archive is what status is about
        return {"reachable": False, "error": str(error)[:200]}
    assert row is not None
    names = ["archived_count", "last_archived_wal", "last_archived_time", "failed_count",
             "last_failed_wal", "last_failed_time"]  # fmt: skip
    state: dict[str, Any] = {
        "reachable": True,
        **{k: (str(v) if v is not None else None) for k, v in zip(names, row, strict=True)},
    }
    state["failed_count"] = int(row[3])
    state["ready_backlog"] = backlog
    return state


def status_samples(status: WalStatus) -> list[tuple[str, str, float]]:
    """(name, help, value) of the gauges of a WAL archive: the achieved RPO, its objective, and
    the archiver's state when the server was reachable."""
    rpo = status.rpo_seconds if status.rpo_seconds is not None else float("nan")
    samples = [
        ("backupctl_pitr_rpo_seconds", "Seconds since the newest WAL segment became durable.", rpo),
        ("backupctl_pitr_rpo_objective_seconds", "The policy's RPO objective.", status.objective_seconds),
        (
            "backupctl_pitr_ok",
            "1 when the WAL archive meets the objective with no gap.",
            1.0 if status.ok else 0.0,
        ),
    ]
    if status.server and status.server.get("reachable"):
        samples.append(
            (
                "backupctl_pitr_archive_failures_total",
                "pg_stat_archiver.failed_count of the server.",
                float(status.server["failed_count"]),
            )
        )
        if status.server.get("ready_backlog") is not None:
            samples.append(
                (
                    "backupctl_pitr_ready_backlog",
                    "WAL segments waiting for archive_command on the server.",
                    float(status.server["ready_backlog"]),
                )
            )
    return samples


def status_metrics(status: WalStatus) -> str:
    """Prometheus text: the achieved RPO, its objective, and the archiver's state."""
    from backupctl.metrics import render_samples

    labels = {"policy": status.policy, "source": status.source}
    return render_samples(
        [(name, help_text, labels, value) for name, help_text, value in status_samples(status)]
    )


def write_status_metrics(path: Path, status: WalStatus) -> None:
    write_metrics_file(path, status_metrics(status))


# --------------------------------------------------------------------------- prune
@dataclass
class WalPruneReport:
    policy: str
    source: str
    dry_run: bool
    kept_base_backups: dict[str, list[str]] = field(default_factory=dict)
    removed_base_backups: dict[str, list[str]] = field(default_factory=dict)
    segments: list[SegmentPrune] = field(default_factory=list)
    retained_by_lock: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "dry_run": self.dry_run,
            "kept_base_backups": self.kept_base_backups,
            "removed_base_backups": self.removed_base_backups,
            "segments": [s.as_dict() for s in self.segments],
            "retained_by_lock": self.retained_by_lock,
        }


def prune_wal(
    settings: Settings, policy: Policy, source_name: str, trusted: list[str], *, dry_run: bool = False
) -> WalPruneReport:
    """Keep the newest `keep_base_backups` base backups per target and the WAL from the oldest
    kept one's start segment on; delete older ones oldest first (object lock stops it without a
    hole: the retained window stays contiguous)."""
    _, pitr = pitr_source(policy, source_name)
    report = WalPruneReport(policy.name, source_name, dry_run)
    archives = open_archives(settings, policy, source_name)
    try:
        for archive in archives:
            name = archive.target.name
            bases = list_base_backups(archive, trusted)
            kept, doomed = bases[-pitr.keep_base_backups :], bases[: -pitr.keep_base_backups]
            report.kept_base_backups[name] = [b.base_id for b in kept]
            report.removed_base_backups[name] = []
            keep_from = kept[0].start_segment if kept else None
            for base in doomed:
                if not dry_run:
                    try:
                        delete_base_backup(archive, base.base_id)
                    except RetainedByLock:
                        report.retained_by_lock.append(f"{name}: base backup {base.base_id}")
                        keep_from = base.start_segment  # its WAL stays with it
                        break
                report.removed_base_backups[name].append(base.base_id)
            records = archive.list_records(trusted)
            report.segments.append(prune_segments(archive, records, RULES, keep_from, dry_run=dry_run))
    finally:
        close_all(archives)
    return report
