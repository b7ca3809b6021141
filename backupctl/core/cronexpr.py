"""Next-run computation for five-field cron expressions (minute hour day-of-month month day-of-week).

Pure functions, no I/O. Semantics are those of Vixie cron / cronie, which is what `crontab` users
expect:

- fields accept `*`, numbers, names (`jan`, `mon`), ranges `a-b`, lists `a,b`, steps `*/n`,
  `a-b/n` and `a/n` (meaning `a-max/n`, as cronie reads it); day-of-week 7 is Sunday, like 0;
- macros `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`;
- the day rule: when *both* day-of-month and day-of-week are restricted (neither starts with
  `*`), a day matches when *either* matches (`0 0 1,15 * mon` = the 1st, the 15th and every
  Monday); otherwise both must match (the `*` one matches every day).

Times are wall-clock times in whatever zone the caller's datetime is in (naive datetimes are taken
as local time). Across a DST change the result is the next wall-clock match, as cronie does for
most cases; sub-hour precision around the change is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from backupctl.core.cron import validate_cron

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

# (low, high, names) per field. Day-of-week accepts 0-7; 7 is folded onto 0 after parsing.
_RANGES: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, {name: index + 1 for index, name in enumerate(MONTH_NAMES)}),
    (0, 7, {name: index for index, name in enumerate(DAY_NAMES)}),
)
# 28 years is the period of the Gregorian weekday/leap-year pattern (outside century rules): an
# expression with no match in that window (e.g. `0 0 30 2 *`) never fires.
_SEARCH_YEARS = 28


@dataclass(frozen=True)
class CronExpr:
    """A parsed cron expression: the set of allowed values per field."""

    text: str  # as written (a macro stays a macro)
    fields: tuple[str, str, str, str, str]  # the five fields, macros expanded
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # day of month, 1-31
    months: frozenset[int]  # 1-12
    weekdays: frozenset[int]  # 0-6, 0 = Sunday
    day_restricted: bool  # day-of-month does not start with '*'
    weekday_restricted: bool  # day-of-week does not start with '*'

    @classmethod
    def parse(cls, expression: str) -> CronExpr:
        """Parse an expression. Raises ValueError naming the bad field (see core/cron.py)."""
        text = validate_cron(expression)
        five = MACROS.get(text.lower(), text)
        parts = five.split()
        sets = [_parse_field(part, *limits) for part, limits in zip(parts, _RANGES, strict=True)]
        weekdays = frozenset(0 if day == 7 else day for day in sets[4])
        return cls(
            text=text,
            fields=(parts[0], parts[1], parts[2], parts[3], parts[4]),
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            day_restricted=not parts[2].startswith("*"),
            weekday_restricted=not parts[4].startswith("*"),
        )

    def matches_day(self, moment: datetime) -> bool:
        """Whether the date of `moment` is a day this expression runs on (the dom/dow rule)."""
        if moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays  # isoweekday: Mon=1 .. Sun=7
        if self.day_restricted and self.weekday_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def matches(self, moment: datetime) -> bool:
        """Whether the minute of `moment` is a run time."""
        return moment.minute in self.minutes and moment.hour in self.hours and self.matches_day(moment)

    def next_after(self, after: datetime) -> datetime:
        """The first run time strictly after `after` (same tzinfo, seconds zeroed).

        Raises ValueError when the expression never fires (e.g. February 30th).
        """
        tzinfo = after.tzinfo
        moment = after.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        limit = moment + timedelta(days=366 * _SEARCH_YEARS)
        # Jump field by field instead of minute by minute: at most a few thousand steps per call.
        while moment < limit:
            if not self.matches_day(moment):
                moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if moment.hour not in self.hours:
                later_hours = [hour for hour in self.hours if hour > moment.hour]
                if not later_hours:
                    moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
                    continue
                moment = moment.replace(hour=min(later_hours), minute=0)
            later_minutes = [minute for minute in self.minutes if minute >= moment.minute]
            if not later_minutes:
                moment = (moment + timedelta(hours=1)).replace(minute=0)
                continue
            return moment.replace(minute=min(later_minutes), tzinfo=tzinfo)
        raise ValueError(f"cron expression '{self.text}' never runs (no match within {_SEARCH_YEARS} years)")

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` run times after `after`, in order."""
        runs: list[datetime] = []
        moment = after
        for _ in range(count):
            moment = self.next_after(moment)
            runs.append(moment)
        return runs


def next_run(expression: str, after: datetime) -> datetime:
    """Shortcut: the first run time of `expression` strictly after `after`."""
    return CronExpr.parse(expression).next_after(after)


def _parse_field(part: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    """The values one field allows. Syntax errors were already reported by validate_cron."""
    values: set[int] = set()
    for item in part.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        else:
            start, dash, end = base.partition("-")
            first = _number(start, names)
            # `5/15` means 5-max/15 (cronie); a bare `5` is just 5.
            last = _number(end, names) if dash else (high if step_text else first)
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, names: dict[str, int]) -> int:
    lowered = text.lower()
    return names[lowered] if lowered in names else int(text)
