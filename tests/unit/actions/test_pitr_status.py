"""`status` and the point-in-time archives: the rule, the metrics, and the probe registry."""

from __future__ import annotations

import importlib
import typing
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from backupctl.actions.pitr_status import PROBES, PitrArchiveStatus, probe_for
from backupctl.actions.status import VerificationFacts, evaluate
from backupctl.metrics import parse_metrics, render_metrics
from backupctl.policy import schema
from tests.unit.actions.test_status import NOW, _facts, _policy


def _archives() -> list[PitrArchiveStatus]:
    wal = PitrArchiveStatus("pg", "WAL", 42.0, 900.0, "000000010000000000000007", [],
                            metrics=[("backupctl_pitr_rpo_seconds", "WAL RPO.", 42.0)])  # fmt: skip
    binlog = PitrArchiveStatus("shop-db", "binlogs", 1200.0, 900.0, "pitr-bin.000012",
                               ["RPO breached: the newest archived binlog event is 1200s old"],
                               metrics=[("backupctl_binlog_rpo_seconds", "Binlog RPO.", 1200.0),
                                        ("backupctl_binlog_ok", "1 when ok.", 0.0)])  # fmt: skip
    return [wal, binlog]


def _status(archives: list[PitrArchiveStatus]) -> Any:
    latest: Any = SimpleNamespace(id="20261121T020000Z-abcdef", started_at=NOW - timedelta(hours=1))
    verified = VerificationFacts(NOW - timedelta(hours=1), True, "vault", latest.id)
    return evaluate(_policy(), latest, _facts(immutable=True), verified, NOW, archives)


def test_a_breached_archive_fails_the_pitr_rule_and_names_the_source() -> None:
    status = _status(_archives())
    shown = status.as_dict()
    rule = shown["rules"]["pitr_rpo"]
    assert not rule["ok"] and not shown["compliant"]
    assert "pg (WAL): achieved RPO 42s, objective 15m" in rule["detail"]
    assert "shop-db (binlogs): achieved RPO 20m, objective 15m — RPO breached" in rule["detail"]
    assert [item["rpo_seconds"] for item in shown["pitr"]] == [42.0, 1200.0]
    assert [item["ok"] for item in shown["pitr"]] == [True, False]


def test_archives_within_their_objective_keep_the_policy_compliant() -> None:
    shown = _status(_archives()[:1]).as_dict()
    assert shown["rules"]["pitr_rpo"]["ok"] and shown["compliant"]
    assert "pitr_rpo" not in _status([]).as_dict()["rules"], "no pitr: block, no rule"


def test_metrics_carry_each_engines_gauges_once_per_family() -> None:
    archives = _archives()
    other = [("backupctl_binlog_rpo_seconds", "Binlog RPO.", 5.0)]
    archives.append(PitrArchiveStatus("other-db", "binlogs", 5.0, 900.0, None, [], metrics=other))
    text = render_metrics(
        "shop", backup=None, status=_status(archives), snapshots_per_target={}, last_drill=None, now=NOW
    )
    assert text.count("# TYPE backupctl_binlog_rpo_seconds gauge") == 1
    samples = [(name, labels, value) for name, labels, value in parse_metrics(text)]
    assert ("backupctl_binlog_rpo_seconds", {"policy": "shop", "source": "other-db"}, 5.0) in samples
    assert ("backupctl_pitr_rpo_seconds", {"policy": "shop", "source": "pg"}, 42.0) in samples
    assert ("backupctl_compliance", {"policy": "shop", "rule": "pitr_rpo"}, 0.0) in samples


def _source_models() -> dict[str, type[BaseModel]]:
    models = {}
    for value in vars(schema).values():
        if isinstance(value, type) and issubclass(value, BaseModel) and "type" in value.model_fields:
            annotation = value.model_fields["type"].annotation
            if typing.get_origin(annotation) is typing.Literal and "pitr" in value.model_fields:
                models[typing.get_args(annotation)[0]] = value
    return models


def test_every_source_kind_with_a_pitr_block_has_exactly_one_probe() -> None:
    with_pitr = _source_models()
    assert set(with_pitr) == set(PROBES) == {"postgres", "mysql"}
    for kind, spec in PROBES.items():
        module, function = spec.split(":")
        assert callable(getattr(importlib.import_module(module), function))
        assert probe_for(kind) is not None
    assert probe_for("sqlite") is None
