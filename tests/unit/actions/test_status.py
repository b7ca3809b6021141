"""The 3-2-1-1-0 evaluation (pure): which copies count as immutable, and how status says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from backupctl.actions.status import TargetFacts, VerificationFacts, evaluate
from backupctl.policy.schema import EXAMPLE_RECIPIENT, Policy

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _policy() -> Policy:
    return Policy.model_validate({
        "name": "shop",
        "objectives": {"rpo": "24h", "rto": "1h"},
        "encryption": {"recipients": [EXAMPLE_RECIPIENT]},
        "sources": [{"name": "db", "type": "sqlite", "path": "/srv/app.db"}],
        "targets": [
            {"name": "local", "type": "local", "path": "/var/backups"},
            {"name": "vault", "type": "restic", "repository": "rest:https://backup.example.net/shop",
             "password": "env:RESTIC_PASSWORD", "append_only": True, "offsite": True, "medium": "nas"},
        ],
    })  # fmt: skip


def _facts(immutable: bool) -> list[TargetFacts]:
    return [
        TargetFacts("local", "disk", False, True, False, True),
        TargetFacts("vault", "nas", True, True, immutable, True),
    ]


def _evaluate(targets: list[TargetFacts]) -> dict[str, Any]:
    latest: Any = SimpleNamespace(id="20261121T020000Z-abcdef", started_at=NOW - timedelta(hours=10))
    verified = VerificationFacts(NOW - timedelta(hours=9), True, "vault", latest.id)
    status = evaluate(_policy(), latest, targets, verified, NOW)
    return status.as_dict()


def test_a_declared_append_only_rest_server_counts_and_says_declared() -> None:
    status = _evaluate(_facts(immutable=True))
    assert status["compliant"], status["rules"]
    assert status["rules"]["immutable"]["detail"] == "immutable: vault (append-only declared)"


def test_without_an_immutable_copy_the_rule_fails_with_the_fix() -> None:
    status = _evaluate(_facts(immutable=False))
    assert not status["compliant"] and not status["rules"]["immutable"]["ok"]
    assert "object lock" in status["rules"]["immutable"]["detail"]
