"""Validation of five-field cron expressions (minute hour day-of-month month day-of-week)."""

from __future__ import annotations

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            name: i + 1
            for i, name in enumerate(
                ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
            )
        },
    ),
    (
        "day of week",
        0,
        7,
        {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
    ),
)
_MACROS = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}


def _value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise ValueError(f"{field} '{text}' is not a number")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{field} {number} is outside {low}-{high}")
    return number


def validate_cron(expression: str) -> str:
    """Return the expression unchanged when valid; raise ValueError naming the bad field."""
    text = expression.strip()
    if text.lower() in _MACROS:
        return text
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"'{expression}' has {len(parts)} fields; a cron expression has 5: "
            "minute hour day-of-month month day-of-week (e.g. '15 2 * * *')"
        )
    for part, (field, low, high, names) in zip(parts, _FIELDS, strict=True):
        for item in part.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{field} step '{step}' must be a positive number")
            if base == "*":
                continue
            start, dash, end = base.partition("-")
            first = _value(start, low, high, names, field)
            if dash:
                last = _value(end, low, high, names, field)
                if last < first:
                    raise ValueError(f"{field} range '{base}' runs backwards")
    return text
