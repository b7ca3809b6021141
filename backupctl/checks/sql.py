"""SQL checks: one query in a restored database, compared with simple expectations.

The runtime returns rows as text (as `psql -A` / `mariadb -B` print them), so comparisons
convert sensibly instead of comparing types:
- `equals`: the first column of the first row. A number matches numerically ('42', '42.0'
  and 42 are equal), a boolean matches t/f, true/false, 1/0, yes/no, on/off, a string matches
  exactly or, when both read as numbers, numerically; `equals: null` matches NULL (printed as
  an empty value). No rows never equal anything.
- `at_least`, `at_most`: the first value as a number (inclusive bounds).
- `empty: true`: the query returns no rows; `empty: false`: at least one row.
All given expectations must hold; with none, the query only has to run. The detail shows the
expectations, the actual first value and the first rows (at most 5).
"""

from __future__ import annotations

from typing import Any

from backupctl.checks.base import CheckContext, CheckOutcome, as_number, register_check, show
from backupctl.core.secrets import mask
from backupctl.drills.schema import SqlCheck, SqlExpect

SHOWN_ROWS = 5
_TRUE = frozenset({"t", "true", "1", "yes", "on", "y"})
_FALSE = frozenset({"f", "false", "0", "no", "off", "n"})


def sql_equal(expected: Any, actual: str | None) -> bool:
    """Does the text `actual` (None: no rows) equal the YAML value `expected`? See the module doc."""
    if actual is None:
        return False
    if expected is None:
        return actual == ""
    if isinstance(expected, bool):
        word = actual.strip().lower()
        return word in (_TRUE if expected else _FALSE)
    if isinstance(expected, str):
        if actual == expected:
            return True
        want, got = as_number(expected), as_number(actual)
        return want is not None and got is not None and want == got
    want = as_number(expected)
    if want is not None:
        got = as_number(actual)
        return got is not None and got == want
    return str(expected) == actual


def evaluate(expect: SqlExpect, rows: list[list[str]]) -> tuple[list[str], list[str]]:
    """(expectations as text, the ones that failed, with what came) for the detail."""
    first = rows[0][0] if rows and rows[0] else None
    stated: list[str] = []
    failed: list[str] = []
    got = "no rows" if first is None else f"got {show(first)}"

    if "equals" in expect.model_fields_set:
        stated.append(f"first value = {show(expect.equals)}")
        if not sql_equal(expect.equals, first):
            failed.append(f"expected first value = {show(expect.equals)}, {got}")
    for symbol, bound in ((">=", expect.at_least), ("<=", expect.at_most)):
        if bound is None:
            continue
        stated.append(f"first value {symbol} {bound:g}")
        number, limit = as_number(first), as_number(bound)
        if number is None or limit is None:
            failed.append(f"expected first value {symbol} {bound:g}, "
                          + (got if first is None else f"{got}, which is not a number"))
        elif (number < limit) if symbol == ">=" else (number > limit):
            failed.append(f"expected first value {symbol} {bound:g}, {got}")
    if expect.empty is not None:
        stated.append("no rows" if expect.empty else "at least one row")
        if expect.empty and rows:
            failed.append(f"expected no rows, got {len(rows)}")
        elif not expect.empty and not rows:
            failed.append("expected at least one row, got none")
    return stated, failed


def show_rows(rows: list[list[str]]) -> str:
    """`2 rows: [42 | shop], [43 | shop]` (at most SHOWN_ROWS rows, long values cut)."""
    if not rows:
        return "0 rows"
    shown = ", ".join("[" + " | ".join(_cut(value) for value in row) + "]" for row in rows[:SHOWN_ROWS])
    more = f", … ({len(rows) - SHOWN_ROWS} more)" if len(rows) > SHOWN_ROWS else ""
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}: {shown}{more}"


def _cut(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


@register_check("sql")
def run_sql(check: SqlCheck, context: CheckContext) -> CheckOutcome:
    """Run the check's query in its database service and compare the result."""
    service = context.service(check.service)
    if check.when is not None:
        # A precondition (e.g. a plugin's table exists): false means not applicable, not failed.
        condition = context.runtime.sql(service, check.database, check.when).scalar
        if condition is None or condition.strip() in ("", "0", "f", "false", "NULL"):
            return CheckOutcome(True, f"not applicable: `when` returned {condition!r} ({_cut(check.when)})")
    result = context.runtime.sql(service, check.database, check.query)
    stated, failed = evaluate(check.expect, result.rows)
    rows = mask(show_rows(result.rows))
    if failed:
        return CheckOutcome(False, f"{'; '.join(failed)} ({rows})")
    expected = ", ".join(stated) if stated else "the query runs"
    return CheckOutcome(True, f"expected {expected}: ok ({rows})")
