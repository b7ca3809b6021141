"""Reporting periods: a month (`2026-11`) or a quarter (`2026Q4`), as half-open UTC intervals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from backupctl.errors import ConfigError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})[Qq]([1-4])$")


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "start": self.start.isoformat(), "end": self.end.isoformat()}


def _month_start(year: int, month: int) -> datetime:
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)


def parse_month(text: str) -> Period:
    """`YYYY-MM` → that month. Raises ConfigError (exit 2) for anything else."""
    found = _MONTH.match(text.strip())
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1970:
        raise ConfigError(f"--month: '{text}' is not a month; expected YYYY-MM, e.g. 2026-11")
    year, month = int(found.group(1)), int(found.group(2))
    return Period(f"{year:04d}-{month:02d}", _month_start(year, month), _month_start(year, month + 1))


def parse_quarter(text: str) -> Period:
    """`YYYYQN` (N = 1..4) → that quarter. Raises ConfigError (exit 2) for anything else."""
    found = _QUARTER.match(text.strip())
    if not found or int(found.group(1)) < 1970:
        raise ConfigError(f"--quarter: '{text}' is not a quarter; expected YYYYQN with N 1-4, e.g. 2026Q4")
    year, quarter = int(found.group(1)), int(found.group(2))
    first = 3 * (quarter - 1) + 1
    return Period(f"{year:04d}Q{quarter}", _month_start(year, first), _month_start(year, first + 3))
