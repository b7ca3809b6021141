"""Next-run computation: standard cron semantics, checked against known dates and a brute-force scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupctl.core.cronexpr import CronExpr, next_run

BASE = datetime(2026, 1, 1, 0, 0)  # a Thursday


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("15 2 * * *", BASE, [datetime(2026, 1, 1, 2, 15), datetime(2026, 1, 2, 2, 15)]),
        (
            "*/15 * * * *",
            datetime(2026, 1, 1, 0, 7, 30),
            [datetime(2026, 1, 1, 0, 15), datetime(2026, 1, 1, 0, 30)],
        ),
        # strictly after: a run time equal to `after` is not returned
        ("0 0 * * *", BASE, [datetime(2026, 1, 2), datetime(2026, 1, 3)]),
        ("30 9-17/4 * * mon-fri", BASE, [datetime(2026, 1, 1, 9, 30), datetime(2026, 1, 1, 13, 30)]),
        ("0 12 * * sat,sun", BASE, [datetime(2026, 1, 3, 12), datetime(2026, 1, 4, 12)]),
        ("0 0 * * 7", BASE, [datetime(2026, 1, 4), datetime(2026, 1, 11)]),  # 7 = Sunday
        ("0 0 * * 5-7", BASE, [datetime(2026, 1, 2), datetime(2026, 1, 3), datetime(2026, 1, 4)]),
        ("0 0 1 jan,jul *", BASE, [datetime(2026, 7, 1), datetime(2027, 1, 1)]),
        ("0 0 29 2 *", BASE, [datetime(2028, 2, 29), datetime(2032, 2, 29)]),  # leap days only
        ("0 0 31 * *", BASE, [datetime(2026, 1, 31), datetime(2026, 3, 31), datetime(2026, 5, 31)]),
        (
            "5/20 0 * * *",
            BASE,
            [datetime(2026, 1, 1, 0, 5), datetime(2026, 1, 1, 0, 25), datetime(2026, 1, 1, 0, 45)],
        ),
        ("0 0 1-10/3 * *", BASE, [datetime(2026, 1, 4), datetime(2026, 1, 7), datetime(2026, 1, 10)]),
        ("59 23 31 12 *", BASE, [datetime(2026, 12, 31, 23, 59)]),
        ("@hourly", datetime(2026, 1, 1, 0, 30), [datetime(2026, 1, 1, 1), datetime(2026, 1, 1, 2)]),
        ("@daily", BASE, [datetime(2026, 1, 2)]),
        ("@midnight", BASE, [datetime(2026, 1, 2)]),
        ("@weekly", BASE, [datetime(2026, 1, 4), datetime(2026, 1, 11)]),
        ("@monthly", BASE, [datetime(2026, 2, 1), datetime(2026, 3, 1)]),
        ("@yearly", BASE, [datetime(2027, 1, 1)]),
        ("@annually", BASE, [datetime(2027, 1, 1)]),
        ("0 0 * JAN Mon", BASE, [datetime(2026, 1, 5), datetime(2026, 1, 12)]),  # names ignore case
    ],
)
def test_next_runs(expression: str, after: datetime, expected: list[datetime]) -> None:
    assert CronExpr.parse(expression).next_runs(after, len(expected)) == expected


def test_dom_and_dow_both_restricted_means_either() -> None:
    # The 1st and 15th of each month AND every Monday (cron's OR rule).
    runs = CronExpr.parse("0 0 1,15 * mon").next_runs(BASE, 6)
    assert runs == [datetime(2026, 1, d) for d in (5, 12, 15, 19, 26)] + [datetime(2026, 2, 1)]


def test_star_with_step_in_day_field_keeps_the_and_rule() -> None:
    # Vixie cron: a field starting with '*' is "unrestricted" for the day rule, so this is
    # "odd days that are Mondays", not "odd days or Mondays".
    cron = CronExpr.parse("0 0 */2 * mon")
    assert not cron.day_restricted
    runs = cron.next_runs(BASE, 3)
    assert all(run.weekday() == 0 and run.day % 2 == 1 for run in runs)


def test_restricted_dom_with_star_dow_uses_dom_only() -> None:
    assert CronExpr.parse("0 0 13 * *").next_after(BASE) == datetime(2026, 1, 13)


def test_timezone_is_kept() -> None:
    after = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert next_run("0 12 * * *", after) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_never_firing_expression_is_an_error() -> None:
    with pytest.raises(ValueError, match="never runs"):
        CronExpr.parse("0 0 30 2 *").next_after(BASE)


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "60 * * * *", "* * * * 8", "5-1 * * * *", "@reboot", "*/0 * * * *"]
)
def test_invalid_expressions_name_the_problem(expression: str) -> None:
    with pytest.raises(ValueError):
        CronExpr.parse(expression)


def test_fields_expand_macros() -> None:
    assert CronExpr.parse("@weekly").fields == ("0", "0", "*", "*", "0")
    assert CronExpr.parse(" 15 2 * * 1-5 ").fields == ("15", "2", "*", "*", "1-5")


def _field(values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


expressions = st.builds(
    lambda *parts: " ".join(parts),
    _field(["*", "0", "*/7", "5,35", "10-20/5", "59"]),
    _field(["*", "0", "*/5", "9-17", "23", "1,13"]),
    _field(["*", "1", "15", "31", "*/10", "28-31", "29"]),
    _field(["*", "2", "jan,jun", "*/3", "12"]),
    _field(["*", "0", "mon-fri", "7", "sat", "*/2"]),
)


@settings(max_examples=120, deadline=None)
@given(
    expression=expressions,
    after=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)),
)
def test_next_after_equals_a_scan(expression: str, after: datetime) -> None:
    """The jumping search finds exactly the first matching minute: no day strictly between
    `after` and the result is a run day, and no minute before it on the first and last day
    matches (every field set is non-empty, so a run day always has a run time)."""
    cron = CronExpr.parse(expression)
    try:
        found = cron.next_after(after)
    except ValueError:  # e.g. '* * 31 2 *': check that it truly never matches in a leap cycle
        day = after.date()
        assert not any(
            cron.matches_day(datetime.combine(day + timedelta(d), datetime.min.time())) for d in range(1500)
        )
        return
    assert found > after and cron.matches(found) and found.second == 0
    day = after.date() + timedelta(days=1)
    while day < found.date():
        assert not cron.matches_day(datetime.combine(day, datetime.min.time())), f"{expression}: {day}"
        day += timedelta(days=1)
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for start in {moment, found.replace(hour=0, minute=0)}:
        probe = max(start, moment)
        while probe < found and probe.date() == start.date():
            assert not cron.matches(probe), f"{expression}: {probe} matches before {found}"
            probe += timedelta(minutes=1)
