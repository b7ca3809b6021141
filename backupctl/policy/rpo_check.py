"""Can a policy meet its RPO? Checks for `policy validate` (and the PITR block's own rules).

- errors (`pitr_issues`): a `pitr.targets` name that is not a blob target of the policy; an
  `archive_timeout` not under `objectives.rpo` (PostgreSQL archives a segment at the latest
  archive_timeout after its first write, so the RPO can never be better).
- warnings (`rpo_warnings`): a policy whose databases have no PITR and whose backups run less
  often than the RPO allows (the longest gap between two scheduled runs + the systemd timer's
  randomized delay >= objectives.rpo): the objective cannot be met by dumps alone.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from backupctl.core.cronexpr import CronExpr
from backupctl.core.durations import format_duration
from backupctl.policy.schema import MysqlSource, Policy, PostgresSource

TIMER_JITTER = timedelta(minutes=5)  # scheduling/systemd.py: RandomizedDelaySec default
_SAMPLE_RUNS = 400
_SAMPLE_FROM = datetime(2026, 1, 1, tzinfo=UTC)  # a fixed start: the same answer on every run


def longest_gap(expression: str) -> timedelta:
    """The longest interval between two consecutive runs of a cron expression (sampled)."""
    runs = CronExpr.parse(expression).next_runs(_SAMPLE_FROM, _SAMPLE_RUNS)
    return max(
        (later - earlier for earlier, later in itertools.pairwise(runs)), default=timedelta(days=366)
    )


def pitr_issues(policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
    """(dotted path as a tuple, message) for every logical error of the pitr blocks."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    from backupctl.targets.registry import holds_blobs  # (no heavy imports: a table of names)

    blob_targets = {t.name for t in policy.targets if holds_blobs(t.type)}
    for index, source in enumerate(policy.sources):
        if isinstance(source, MysqlSource) and source.pitr is not None:
            issues.extend(_mysql_pitr_issues(index, source, blob_targets))
            continue
        if not isinstance(source, PostgresSource) or source.pitr is None:
            continue
        for position, name in enumerate(source.pitr.targets or []):
            if name not in blob_targets:
                issues.append(
                    (
                        ("sources", index, "pitr", "targets", position),
                        f"'{name}' is not a blob target of this policy (the WAL archive needs one)",
                    )
                )
        if source.pitr.archive_timeout >= policy.objectives.rpo:
            issues.append(
                (
                    ("sources", index, "pitr", "archive_timeout"),
                    f"archive_timeout {format_duration(source.pitr.archive_timeout)} is not under "
                    f"objectives.rpo {format_duration(policy.objectives.rpo)}: set it well under the "
                    "RPO (e.g. 60s)",
                )
            )
    return issues


def _mysql_pitr_issues(
    index: int, source: MysqlSource, blob_targets: set[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """A MySQL source's pitr block: blob targets only, a collection interval under its RPO."""
    assert source.pitr is not None
    issues: list[tuple[tuple[str | int, ...], str]] = []
    for position, name in enumerate(source.pitr.targets or []):
        if name not in blob_targets:
            issues.append(
                (
                    ("sources", index, "pitr", "targets", position),
                    f"'{name}' is not a blob target of this policy (the binlog archive needs one)",
                )
            )
    if source.pitr.effective_interval() >= source.pitr.rpo:
        issues.append(
            (
                ("sources", index, "pitr", "interval"),
                f"interval {source.pitr.effective_interval()} is not under pitr.rpo {source.pitr.rpo}: "
                "binlogs are archived at most every interval (e.g. a third of the RPO)",
            )
        )
    return issues


def rpo_warnings(policy: Policy) -> list[str]:
    """Why `objectives.rpo` cannot be met, if it cannot (empty when it can)."""
    databases = [s for s in policy.sources if s.type in ("postgres", "mysql")]
    with_pitr = [s for s in databases if isinstance(s, PostgresSource | MysqlSource) and s.pitr is not None]
    if databases and len(with_pitr) == len(databases):  # every database has PITR
        return []
    rpo = format_duration(policy.objectives.rpo)
    if policy.schedule is None:
        return [
            f"policy '{policy.name}': objectives.rpo {rpo} is not backed by a schedule or point-in-time "
            "recovery (add 'schedule:' or a 'pitr:' block to the database source; when cron runs the "
            "backups, `status` still fails once the newest snapshot is older than the RPO)"
        ]
    gap = longest_gap(policy.schedule)
    if gap + TIMER_JITTER >= policy.objectives.rpo:
        unprotected = ", ".join(s.name for s in databases if s not in with_pitr) or "its sources"
        return [
            f"policy '{policy.name}': objectives.rpo {rpo} cannot be met by scheduled backups of "
            f"{unprotected}: they run up to {format_duration(gap)} apart (+ up to "
            f"{format_duration(TIMER_JITTER)} timer jitter). Add a "
            "'pitr:' block (continuous WAL archiving, docs/pitr.md) or back up more often"
        ]
    return []

