from datetime import timedelta

import pytest

from backupctl.core.cron import validate_cron
from backupctl.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900),
        ("4h", 14400),
        ("1h30m", 5400),
        ("7d", 604800),
        ("2w", 1209600),
        ("90d", 7776000),
        (" 1H ", 3600),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "h", "1x", "-5m", "0m", "1.5h", "24 hours"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_round_trips() -> None:
    for text in ["15m", "1h30m", "1d", "2w", "1w1d"]:
        assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    "expression", ["15 2 * * *", "*/5 * * * *", "0 0 1 jan,jul *", "0 3 * * mon-fri", "@daily", "0 0 * * 7"]
)
def test_valid_cron(expression: str) -> None:
    assert validate_cron(expression) == expression


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 2 * * *", "minute 61"),
        ("* * *", "has 3 fields"),
        ("0 0 32 * *", "day of month 32"),
        ("0 0 * foo *", "month 'foo'"),
        ("*/0 * * * *", "step"),
        ("0 5-2 * * *", "backwards"),
    ],
)
def test_invalid_cron(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_cron(expression)
