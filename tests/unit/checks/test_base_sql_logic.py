"""The check registry, run_check's guarantees, and SQL value comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from backupctl.checks import CheckContext, CheckOutcome, base, register_check, registered_checks, run_check
from backupctl.checks.base import as_number, excerpt
from backupctl.checks.sql import evaluate, show_rows, sql_equal
from backupctl.core.secrets import register_secret
from backupctl.drills.schema import SqlExpect
from backupctl.errors import JobFailed


@dataclass
class FakeCheck:
    type: str
    name: str = "probe"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private copy of the registry, so test kinds do not leak into other tests."""
    base._load_builtin()
    copy = dict(base._REGISTRY)
    monkeypatch.setattr(base, "_REGISTRY", copy)
    return copy


def context() -> CheckContext:
    return CheckContext(runtime=None, services={})  # type: ignore[arg-type]  # these kinds use neither


def test_builtin_kinds_are_registered() -> None:
    assert registered_checks() == ["command", "http", "sql"]


def test_registering_a_kind_twice_is_an_error(registry: dict[str, Any]) -> None:
    @register_check("unit-kind")
    def first(check: Any, context: CheckContext) -> CheckOutcome:
        return CheckOutcome(True, "fine")

    with pytest.raises(RuntimeError, match="check type 'unit-kind' is registered twice"):
        register_check("unit-kind")(first)
    with pytest.raises(RuntimeError, match="'http' is registered twice"):
        register_check("http")(first)


def test_run_check_times_and_names_the_result(registry: dict[str, Any]) -> None:
    @register_check("unit-ok")
    def run(check: Any, context: CheckContext) -> CheckOutcome:
        return CheckOutcome(True, "all good", [{"step": "one", "ok": True}])

    result = run_check(FakeCheck("unit-ok"), context())
    assert (result.name, result.kind, result.ok, result.detail) == ("probe", "unit-ok", True, "all good")
    assert result.steps == [{"step": "one", "ok": True}]
    assert result.duration >= 0


def test_a_raising_check_becomes_a_failed_result(registry: dict[str, Any]) -> None:
    @register_check("unit-crash")
    def crash(check: Any, context: CheckContext) -> CheckOutcome:
        raise ZeroDivisionError("division by zero")

    @register_check("unit-job")
    def job(check: Any, context: CheckContext) -> CheckOutcome:
        raise JobFailed("psql: connection refused")

    crashed = run_check(FakeCheck("unit-crash"), context())
    assert (crashed.ok, crashed.detail) == (False, "ZeroDivisionError: division by zero")
    assert run_check(FakeCheck("unit-job"), context()).detail == "psql: connection refused"


def test_interrupts_are_not_swallowed(registry: dict[str, Any]) -> None:
    @register_check("unit-interrupt")
    def interrupted(check: Any, context: CheckContext) -> CheckOutcome:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_check(FakeCheck("unit-interrupt"), context())


def test_unknown_kind_is_a_failed_result() -> None:
    result = run_check(FakeCheck("smtp"), context())
    assert not result.ok
    assert result.detail == "check type 'smtp' is not available in this build (available: command, http, sql)"


def test_details_and_steps_are_masked(registry: dict[str, Any]) -> None:
    register_secret("unit-secret-4242")

    @register_check("unit-leak")
    def leak(check: Any, context: CheckContext) -> CheckOutcome:
        return CheckOutcome(False, "server said: bad password unit-secret-4242",
                            [{"step": "POST /login", "detail": ["echo unit-secret-4242"], "status": 401}])

    @register_check("unit-leak-raise")
    def leak_raise(check: Any, context: CheckContext) -> CheckOutcome:
        raise ValueError("cannot parse unit-secret-4242")

    result = run_check(FakeCheck("unit-leak"), context())
    assert result.detail == "server said: bad password ********"
    assert result.steps == [{"step": "POST /login", "detail": ["echo ********"], "status": 401}]
    assert run_check(FakeCheck("unit-leak-raise"), context()).detail == "ValueError: cannot parse ********"


def test_excerpt() -> None:
    register_secret("unit-excerpt-secret")
    assert excerpt("a\n  b\tc") == "a b c"
    assert excerpt("x" * 400, limit=10) == "x" * 10 + "…"
    assert excerpt("a" * 400 + "END", limit=5, tail=True) == "…aaEND"
    assert excerpt("token unit-excerpt-secret") == "token ********"


@pytest.mark.parametrize(("value", "number"), [
    ("42", 42), (" 4.50 ", 4.5), (42, 42), (1.5, 1.5), ("1e3", 1000), (0.1, 0.1),
    ("abc", None), (True, None), (None, None), ("", None), ("NaN", None), ([1], None),
])
def test_as_number(value: Any, number: float | None) -> None:
    result = as_number(value)
    assert (None if result is None else float(result)) == number


@pytest.mark.parametrize(("expected", "actual", "equal"), [
    (42, "42", True), (42, "42.0", True), ("42", "42.00", True), (1.5, "1.50", True),
    (42, "41", False), (42, "forty-two", False), (42, None, False),
    ("paid", "paid", True), ("paid", "Paid", False),
    (True, "t", True), (True, "true", True), (True, "1", True), (False, "f", True), (False, "0", True),
    (True, "f", False), (False, "yes", False),
    (None, "", True), (None, "x", False), (None, None, False),
])
def test_sql_equal(expected: Any, actual: str | None, equal: bool) -> None:
    assert sql_equal(expected, actual) is equal


def test_evaluate_states_every_expectation() -> None:
    expect = SqlExpect(equals=3, at_least=1, at_most=10, empty=False)
    stated, failed = evaluate(expect, [["3"]])
    assert stated == ["first value = 3", "first value >= 1", "first value <= 10", "at least one row"]
    assert failed == []
    assert evaluate(SqlExpect(), [["x"]]) == ([], [])
    # `equals: null` is an expectation (NULL), an absent `equals` is none
    assert evaluate(SqlExpect.model_validate({"equals": None}), [["x"]])[1] == [
        "expected first value = null, got 'x'"]


def test_show_rows() -> None:
    assert show_rows([]) == "0 rows"
    assert show_rows([["1", "a"]]) == "1 row: [1 | a]"
    long = show_rows([[str(i), "y" * 80] for i in range(8)])
    assert long.startswith("8 rows: [0 | " + "y" * 60 + "…], [1 |")
    assert long.endswith(", … (3 more)")
