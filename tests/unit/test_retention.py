"""GFS retention planning (backupctl.retention): properties against a reference, and examples."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupctl.policy.schema import Retention
from backupctl.retention import NEWEST, NO_RULES, SnapshotRef, plan_policy, plan_retention

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
THREE_YEARS = 3 * 366 * 86400
COUNT_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def ref(moment: datetime, salt: int = 0) -> SnapshotRef:
    return SnapshotRef(f"{moment:%Y%m%dT%H%M%SZ}-{salt:06x}", moment)


# --------------------------------------------------------------------------- reference model
# Deliberately a different algorithm from the module: group by period (tuples from the datetime
# API, not formatted labels), take the newest snapshot of each group, keep the N newest groups.
PERIOD_KEYS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar())[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}
PERIOD_LABELS: dict[str, Callable[[tuple[int, ...]], str]] = {
    "hourly": lambda k: f"{date(*k[:3]).isoformat()}T{k[3]:02d}",
    "daily": lambda k: date(*k).isoformat(),
    "weekly": lambda k: f"{k[0]}-W{k[1]:02d}",
    "monthly": lambda k: f"{k[0]}-{k[1]:02d}",
    "yearly": lambda k: str(k[0]),
}


def reference_plan(snapshots: list[SnapshotRef], rules: Retention, now: datetime) -> dict[str, set[str]]:
    """snapshot id -> the reasons that keep it (absent: removed); keep_within as plain "within"."""
    if not snapshots:
        return {}
    values = rules.model_dump()
    if not any(values[name] for name in COUNT_RULES) and not rules.keep_within:
        return {s.id: {NO_RULES} for s in snapshots}
    newest_first = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    keeps: dict[str, set[str]] = {}
    keeps.setdefault(newest_first[0].id, set()).add(NEWEST)
    for position, snapshot in enumerate(newest_first[: values["keep_last"] or 0], 1):
        keeps.setdefault(snapshot.id, set()).add(f"last {position}")
    for rule, key_of in PERIOD_KEYS.items():
        groups: dict[tuple[int, ...], SnapshotRef] = {}
        for snapshot in snapshots:
            key = key_of(snapshot.time)
            best = groups.get(key)
            if best is None or (snapshot.time, snapshot.id) > (best.time, best.id):
                groups[key] = snapshot
        for key in sorted(groups, reverse=True)[: values[f"keep_{rule}"] or 0]:
            keeps.setdefault(groups[key].id, set()).add(f"{rule} {PERIOD_LABELS[rule](key)}")
    if rules.keep_within:
        reference = min(newest_first[0].time, now)
        for snapshot in snapshots:
            if reference - snapshot.time < rules.keep_within:
                keeps.setdefault(snapshot.id, set()).add("within")
    return keeps


def normalized(reasons: list[str]) -> set[str]:
    return {"within" if reason.startswith("within ") else reason for reason in reasons}


# --------------------------------------------------------------------------- strategies
@st.composite
def histories(draw: st.DrawFn, max_size: int = 300) -> list[SnapshotRef]:
    """Up to `max_size` snapshots over about three years, or packed around a new year (where
    ISO weeks straddle calendar years), on a grid so that periods collide and keep_within
    boundaries are hit exactly; optional jitter of up to a minute."""
    step = draw(st.sampled_from([1, 60, 1800, 3600, 6 * 3600, 86400, 7 * 86400]))
    if draw(st.booleans()):
        start, span = EPOCH, THREE_YEARS
    else:
        start = datetime(draw(st.sampled_from([2024, 2025, 2026, 2027])), 12, 20, tzinfo=UTC)
        span = 25 * 86400
    offsets = draw(st.lists(st.integers(0, span // step), max_size=max_size))
    jitter = draw(st.lists(st.integers(0, 59), min_size=len(offsets), max_size=len(offsets)))
    if draw(st.booleans()):
        jitter = [0] * len(offsets)
    return [
        ref(start + timedelta(seconds=o * step + j), i)
        for i, (o, j) in enumerate(zip(offsets, jitter, strict=True))
    ]


counts = st.one_of(st.none(), st.integers(0, 3), st.integers(0, 40))
retentions = st.builds(
    Retention,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.one_of(
        st.none(),
        st.integers(1, 3 * 365 * 24).map(lambda hours: timedelta(hours=hours)),
        st.integers(1, 400).map(lambda days: timedelta(days=days)),
    ),
)
nows = st.integers(-400 * 86400, THREE_YEARS + 400 * 86400).map(lambda s: EPOCH + timedelta(seconds=s))
PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- properties
@PROFILE
@given(histories(), retentions, nows)
def test_plan_matches_the_reference_model(
    snapshots: list[SnapshotRef], rules: Retention, now: datetime
) -> None:
    plan = plan_retention(snapshots, rules, now)
    expected = reference_plan(snapshots, rules, now)
    assert {d.snapshot.id: normalized(d.reasons) for d in plan.decisions if d.keep} == expected
    assert {s.id for s in plan.removed} == {s.id for s in snapshots} - set(expected)
    assert [d.snapshot for d in plan.decisions] == sorted(
        snapshots, key=lambda s: (s.time, s.id), reverse=True
    )


@PROFILE
@given(histories(max_size=60), st.data())
def test_keep_within_boundary_is_exclusive(snapshots: list[SnapshotRef], data: st.DataObject) -> None:
    # A window exactly as long as some snapshot's age: that snapshot is not "younger than" it.
    newest = max(s.time for s in snapshots) if snapshots else EPOCH
    ages = sorted({newest - s.time for s in snapshots} - {timedelta(0)})
    if not ages:
        return
    rules = Retention(keep_within=data.draw(st.sampled_from(ages)))
    plan = plan_retention(snapshots, rules, newest + timedelta(days=1))
    expected = reference_plan(snapshots, rules, newest + timedelta(days=1))
    assert {d.snapshot.id: normalized(d.reasons) for d in plan.decisions if d.keep} == expected


@PROFILE
@given(histories(), retentions, nows)
def test_newest_kept_reasons_present_and_replanning_removes_nothing(
    snapshots: list[SnapshotRef], rules: Retention, now: datetime
) -> None:
    plan = plan_retention(snapshots, rules, now)
    for decision in plan.decisions:
        assert bool(decision.reasons) == decision.keep
    if snapshots:
        newest = plan.decisions[0]
        assert newest.keep and (NEWEST in newest.reasons or newest.reasons == [NO_RULES])
    again = plan_retention(plan.kept, rules, now)
    assert again.removed == []
    assert [d.reasons for d in again.decisions] == [d.reasons for d in plan.decisions if d.keep]
    assert plan_retention(list(reversed(snapshots)), rules, now).as_dict() == plan.as_dict()  # order-free


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    histories(max_size=120),
    st.lists(st.tuples(retentions, st.integers(0, 2**32)), min_size=1, max_size=3),
    nows,
)
def test_policy_plan_is_safe(
    snapshots: list[SnapshotRef], targets: list[tuple[Retention, int]], now: datetime
) -> None:
    # Each target holds a pseudo-random subset (a failed night here and there).
    names = [f"t{index}" for index in range(len(targets))]
    holdings = {
        name: [
            s for position, s in enumerate(snapshots) if (seed >> (position % 32)) & 1 or position % 5 == 0
        ]
        for name, (_, seed) in zip(names, targets, strict=True)
    }
    rules = {name: retention for name, (retention, _) in zip(names, targets, strict=True)}
    plans = plan_policy(holdings, rules, now)
    for name in names:
        own = plan_retention(holdings[name], rules[name], now)
        assert {s.id for s in own.kept} <= {s.id for s in plans[name].kept}  # safety only adds
        if holdings[name]:
            assert plans[name].decisions[0].keep  # the target's newest complete snapshot
    history = list({s.id: s for held in holdings.values() for s in held}.values())
    survivors = {s.id for plan in plans.values() for s in plan.kept}
    for name in names:
        for wanted in plan_retention(history, rules[name], now).kept:
            assert wanted.id in survivors, f"{wanted.id} wanted by {name} but no copy survives"


# --------------------------------------------------------------------------- examples
def at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def kept(
    plan_snapshots: list[SnapshotRef], rules: Retention, now: datetime | None = None
) -> dict[str, list[str]]:
    plan = plan_retention(plan_snapshots, rules, now or datetime(2100, 1, 1, tzinfo=UTC))
    return {d.snapshot.id[:11]: d.reasons for d in plan.decisions if d.keep}


def test_daily_across_a_month_boundary_keeps_the_newest_of_each_day() -> None:
    snapshots = [ref(at(date(2026, 1, 29), 0) + timedelta(hours=6 * n)) for n in range(24)]  # to Feb 3
    result = kept(snapshots, Retention(keep_daily=4))
    assert result == {
        "20260203T18": ["newest", "daily 2026-02-03"],
        "20260202T18": ["daily 2026-02-02"],
        "20260201T18": ["daily 2026-02-01"],
        "20260131T18": ["daily 2026-01-31"],
    }


def test_days_without_snapshots_do_not_use_up_daily_slots() -> None:
    snapshots = [ref(at(date(2026, 3, day), 2)) for day in (1, 2, 10, 20)]
    assert list(kept(snapshots, Retention(keep_daily=3))) == ["20260320T02", "20260310T02", "20260302T02"]


def test_iso_weeks_around_new_year() -> None:
    # 2026 has 53 ISO weeks: Mon 2026-12-28 .. Sun 2027-01-03 is 2026-W53; 2027-W01 starts Jan 4.
    days = [date(2026, 12, 20), date(2026, 12, 27), date(2026, 12, 28), date(2027, 1, 1), date(2027, 1, 3),
            date(2027, 1, 4), date(2027, 1, 5)]  # fmt: skip
    result = kept([ref(at(day, 12)) for day in days], Retention(keep_weekly=4, keep_yearly=2))
    assert result == {
        "20270105T12": ["newest", "weekly 2027-W01", "yearly 2027"],
        "20270103T12": ["weekly 2026-W53"],  # Jan 1 and Jan 3 2027 are still ISO week 53 of 2026
        "20261228T12": ["yearly 2026"],  # the newest snapshot of calendar 2026 (but ISO week 53)
        "20261227T12": ["weekly 2026-W52"],
        "20261220T12": ["weekly 2026-W51"],
    }


def test_keep_within_counts_from_the_newest_snapshot_or_now_if_earlier() -> None:
    snapshots = [ref(at(date(2026, 1, 1)) + timedelta(days=10 * n)) for n in range(20)]  # to 2026-07-10
    newest = snapshots[-1].time
    # Backups stopped long ago: the window still hangs on the newest snapshot.
    late = kept(snapshots, Retention(keep_within=timedelta(days=30)), now=newest + timedelta(days=400))
    assert list(late) == ["20260710T00", "20260630T00", "20260620T00"]  # June 10 is exactly 30 days old
    assert late["20260630T00"] == ["within 30d"]
    # A newest snapshot from a clock set ahead does not push the window forward.
    early = kept(snapshots, Retention(keep_within=timedelta(days=30)), now=newest - timedelta(days=25))
    assert list(early) == [
        "20260710T00",
        "20260630T00",
        "20260620T00",
        "20260610T00",
        "20260531T00",
        "20260521T00",
    ]


def test_no_rules_or_all_zero_keeps_everything() -> None:
    snapshots = [ref(at(date(2026, 5, day))) for day in range(1, 6)]
    for rules in (Retention(), Retention(keep_daily=0, keep_last=0)):
        result = kept(snapshots, rules)
        assert len(result) == 5 and all(reasons == [NO_RULES] for reasons in result.values())
    assert plan_retention([], Retention(keep_last=1), EPOCH).decisions == []


def test_keep_last_and_naive_times_are_utc() -> None:
    aware = [ref(datetime(2026, 5, 1, hour, tzinfo=UTC)) for hour in range(5)]
    naive = [SnapshotRef(s.id, s.time.replace(tzinfo=None)) for s in aware]
    assert (
        kept(naive, Retention(keep_last=2))
        == kept(aware, Retention(keep_last=2))
        == {
            "20260501T04": ["newest", "last 1"],
            "20260501T03": ["last 2"],
        }
    )


def test_only_copy_is_kept_where_another_targets_rules_want_it() -> None:
    days = [ref(at(date(2026, 1, 1)) + timedelta(days=n)) for n in range(60)]  # Jan 1 .. Mar 1
    local_rules, glacier_rules = Retention(keep_daily=7), Retention(keep_monthly=12)
    # Glacier missed the January month-end snapshot (the one its monthly rule wants).
    glacier = [s for s in days if s.id[:8] != "20260131"]
    plans = plan_policy({"local": days, "glacier": glacier}, {"local": local_rules, "glacier": glacier_rules},
                        now=days[-1].time)  # fmt: skip
    local = {d.snapshot.id[:8]: d.reasons for d in plans["local"].decisions if d.keep}
    assert local["20260131"] == ["only copy (wanted by glacier: monthly 2026-01)"]
    assert len(local) == 8  # 7 daily + the only copy
    # Glacier's own monthly picks among what it holds; Jan 30 survives there, so local drops it.
    assert {d.snapshot.id[:8] for d in plans["glacier"].decisions if d.keep} == {
        "20260301",
        "20260228",
        "20260130",
    }
    assert "20260130" not in local
    # Nobody's rules want Jan 15: removed everywhere, as the rules say.
    assert "20260115" not in local
