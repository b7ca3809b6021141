"""Continuity of an archived segment chain, and the newest archived point (for the RPO).

Source-agnostic: a source describes its naming with `ChainRules` (PostgreSQL: WAL segment
numbers within a timeline; MySQL: binlog file sequence numbers). Only records whose
`rules.in_chain(record)` is true take part (PostgreSQL's .history and .backup files do not).

`check_chain(records, rules, start=..., end=...)` sorts the chain members with `rules.sort_key`,
keeps those from `start` (the first segment the oldest retained base needs) to `end` (default:
the newest), and names every gap: for each pair of neighbours where `rules.successor(previous)`
is not the next one's name, a `Gap` lists the missing names (`rules.missing_between`).

Optional extension: rules may also define `follows(previous, following) -> bool`; when present,
a pair for which it returns true is not a gap even if `successor` differs (PostgreSQL: a timeline
switch continues the chain on the next timeline).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from backupctl.pitr.archive import SegmentRecord


class ChainRules(Protocol):
    """What the chain check needs to know about a source's segment names."""

    def in_chain(self, record: SegmentRecord) -> bool:
        """True for log segments that must be contiguous (not for side files)."""
        ...

    def sort_key(self, name: str) -> Any:
        """A sortable key: the archive's order of segments."""
        ...

    def successor(self, name: str) -> str:
        """The name expected right after `name` when nothing is missing."""
        ...

    def missing_between(self, previous: str, following: str, limit: int) -> list[str]:
        """Names strictly between `previous` and `following` (at most `limit` of them)."""
        ...


@dataclass(frozen=True)
class Gap:
    after: str  # the last segment present before the gap
    before: str  # the first segment present after it
    missing: list[str]  # the missing names (capped: `more` says how many were left out)
    more: int = 0

    def describe(self) -> str:
        shown = ", ".join(self.missing)
        extra = f" and {self.more} more" if self.more else ""
        return f"missing {shown}{extra} (between {self.after} and {self.before})"


@dataclass
class ChainReport:
    first: str | None  # first chain segment checked
    last: str | None  # newest chain segment
    count: int
    gaps: list[Gap] = field(default_factory=list)
    start_missing: str | None = None  # `start` was asked for but is not archived

    @property
    def ok(self) -> bool:
        return not self.gaps and self.start_missing is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "first": self.first,
            "last": self.last,
            "segments": self.count,
            "start_missing": self.start_missing,
            "gaps": [
                {"after": g.after, "before": g.before, "missing": g.missing, "more": g.more}
                for g in self.gaps
            ],
        }


def check_chain(
    records: Sequence[SegmentRecord],
    rules: ChainRules,
    *,
    start: str | None = None,
    end: str | None = None,
    limit: int = 20,
) -> ChainReport:
    """Check that the chain members from `start` to `end` are contiguous; name every gap."""
    names = sorted({r.name for r in records if rules.in_chain(r)}, key=rules.sort_key)
    if start is not None:
        low = rules.sort_key(start)
        names = [n for n in names if rules.sort_key(n) >= low]
    if end is not None:
        high = rules.sort_key(end)
        names = [n for n in names if rules.sort_key(n) <= high]
    report = ChainReport(
        first=names[0] if names else None, last=names[-1] if names else None, count=len(names)
    )
    if start is not None and (not names or names[0] != start):
        report.start_missing = start
        if names:
            # everything from `start` up to the first present one is a gap too
            missing = [start, *rules.missing_between(start, names[0], limit)]
            report.gaps.append(
                Gap(
                    after="(start)",
                    before=names[0],
                    missing=missing[:limit],
                    more=max(0, len(missing) - limit),
                )
            )
    for previous, following in itertools.pairwise(names):
        if rules.successor(previous) != following and not _follows(rules, previous, following):
            missing = rules.missing_between(previous, following, limit + 1)
            report.gaps.append(Gap(previous, following, missing[:limit], more=max(0, len(missing) - limit)))
    return report


def _follows(rules: ChainRules, previous: str, following: str) -> bool:
    follows = getattr(rules, "follows", None)
    return bool(follows(previous, following)) if follows is not None else False


def first_gap_after(records: Sequence[SegmentRecord], rules: ChainRules, start: str) -> str | None:
    """The first missing name at or after `start` (None when the chain from `start` is whole up
    to the newest segment). Restore uses it to say how far recovery can go."""
    report = check_chain(records, rules, start=start)
    if report.start_missing:
        return start
    return report.gaps[0].missing[0] if report.gaps else None


def newest_point(records: Sequence[SegmentRecord]) -> datetime | None:
    """When the newest segment became durable (the RPO clock): max `pushed_at`, None if empty."""
    times = [record.pushed_time for record in records]
    return max(times) if times else None


def rpo_seconds(records: Sequence[SegmentRecord], now: datetime | None = None) -> float | None:
    """now - newest archived point, in seconds (None when nothing is archived)."""
    newest = newest_point(records)
    if newest is None:
        return None
    return ((now or datetime.now(UTC)) - newest).total_seconds()
