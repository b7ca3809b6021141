from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupctl.errors import ConfigError
from backupctl.evidence.period import parse_month, parse_quarter


def test_periods() -> None:
    assert parse_month("2026-12").end == datetime(2027, 1, 1, tzinfo=UTC)
    q = parse_quarter("2026q4")
    assert (q.label, q.start, q.end) == (
        "2026Q4",
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("text", ["2026-00", "2026-13", "26-01", "2026Q0", "2026Q5", ""])
def test_bad_periods(text: str) -> None:
    with pytest.raises(ConfigError, match="expected YYYY"):
        (parse_quarter if "Q" in text else parse_month)(text)
