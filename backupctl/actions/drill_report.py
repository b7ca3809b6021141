"""Turn a drill outcome into reports (JSON, HTML, JUnit) and keep their paths in the catalog."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.access import open_catalog
from backupctl.actions.drill import DrillOutcome
from backupctl.catalog.store import drill_history
from backupctl.drills.report import DrillReport, HistoryPoint, Stage, to_json, write_reports
from backupctl.settings import Settings

_WARMUP = re.compile(r"archive warm-up ([0-9.]+)s")


def to_report(outcome: DrillOutcome, history: list[HistoryPoint]) -> DrillReport:
    stages = []
    for stage in outcome.stages:
        found = _WARMUP.search(stage.detail)
        warmup = float(found.group(1)) if found else 0.0
        stages.append(Stage(stage.name, stage.seconds, stage.detail, warmup, stage.failed))
    return DrillReport(
        drill=outcome.drill,
        policy=outcome.policy,
        snapshot_id=outcome.snapshot_id,
        target=outcome.target,
        runtime=outcome.runtime,
        run_id=outcome.run_id,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at or datetime.now(UTC),
        ok=outcome.ok,
        reason=outcome.reason,
        stages=stages,
        measured_rto_seconds=outcome.measured_rto,
        rto_objective_seconds=outcome.rto_objective,
        rpo_at_drill_seconds=outcome.rpo_at_drill,
        rpo_objective_seconds=outcome.rpo_objective,
        objectives_checked=outcome.objectives_checked,
        checks=outcome.checks,
        history=history,
    )


def write_outcome_reports(
    settings: Settings, outcome: DrillOutcome, directory: Path, junit: Path | None
) -> dict[str, Path]:
    """Write JSON + HTML (+ JUnit) for a drill, with the policy's earlier drills as history."""
    catalog = open_catalog(settings)
    history = [
        HistoryPoint(row.finished_at, row.rto_seconds, row.ok)
        for row in reversed(drill_history(catalog, outcome.policy, limit=20))
        if row.id != outcome.run_id
    ]
    paths = write_reports(to_report(outcome, history), directory, junit)
    outcome.reports = {kind: str(path) for kind, path in paths.items()}
    from backupctl.actions.drill import _record

    _record(catalog, outcome)  # again, now with the report paths
    return paths


def outcome_json(outcome: DrillOutcome) -> dict[str, Any]:
    data = to_json(to_report(outcome, []))
    data.pop("history", None)
    data["warmup_seconds"] = round(outcome.warmup_seconds, 3)
    data["reports"] = outcome.reports
    data["warnings"] = outcome.warnings
    if outcome.kept is not None:
        data["kept"] = {"services": outcome.kept.services, "remove": outcome.kept.remove}
    return data
