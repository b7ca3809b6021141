"""Can a policy meet its RPO? (backupctl.policy.rpo_check)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from backupctl.policy.rpo_check import longest_gap, pitr_issues, rpo_warnings
from backupctl.policy.schema import Policy

RECIPIENT = "age1n3apkaaz7y5qsrs9l4z2akmel0gpz9m2astxq4jgzl2zheeex33s8kpzju"


def policy(rpo: str, schedule: str | None, pitr: dict[str, Any] | None = None) -> Policy:
    source: dict[str, Any] = {"name": "db", "type": "postgres", "url": "postgresql://backup@db/shop"}
    if pitr is not None:
        source["pitr"] = pitr
    return Policy.model_validate({
        "name": "shop", "objectives": {"rpo": rpo, "rto": "1h"}, "schedule": schedule,
        "encryption": {"recipients": [RECIPIENT]}, "sources": [source],
        "targets": [{"name": "nas", "type": "local", "path": "/srv/b"},
                    {"name": "vault", "type": "restic", "repository": "/srv/r", "password": "env:X"}],
    })  # fmt: skip


def test_longest_gap_of_cron_expressions() -> None:
    assert longest_gap("15 2 * * *") == timedelta(days=1)
    assert longest_gap("0 */6 * * *") == timedelta(hours=6)
    assert longest_gap("0 9 * * 1-5") == timedelta(days=3)  # Friday to Monday


def test_daily_dumps_cannot_meet_a_15_minute_rpo() -> None:
    [warning] = rpo_warnings(policy("15m", "15 2 * * *"))
    assert "objectives.rpo 15m cannot be met" in warning and "1d apart" in warning and "pitr:" in warning
    assert rpo_warnings(policy("48h", "15 2 * * *")) == []
    assert rpo_warnings(policy("15m", "15 2 * * *", {"archive_timeout": "60s"})) == []
    assert "not backed by a schedule" in rpo_warnings(policy("24h", None))[0]


def test_pitr_block_errors() -> None:
    issues = pitr_issues(policy("15m", None, {"archive_timeout": "20m", "targets": ["vault"]}))
    assert [path for path, _ in issues] == [
        ("sources", 0, "pitr", "targets", 0),
        ("sources", 0, "pitr", "archive_timeout"),
    ]
    assert pitr_issues(policy("15m", None, {"archive_timeout": "60s", "targets": ["nas"]})) == []
