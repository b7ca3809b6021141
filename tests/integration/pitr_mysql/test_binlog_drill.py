"""Point-in-time drills in staging (Docker, and the local runtime): dump + binlog replay, proved."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.integration.pitr_mysql.load import WriteLoad
from tests.integration.pitr_mysql.pitr import SOURCE, make_pitr

NEWEST_ROW = "SELECT MAX(placed) FROM orders"


def drill_at_a_time_under_load(
    workspace: Workspace, database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> tuple[dict[str, Any], datetime]:
    pitr = make_pitr(workspace, database, monkeypatch)
    load = WriteLoad(database.server, database.name, tick=0.1).start()
    pitr.backup()
    target = datetime.fromtimestamp(math.ceil(time.time()) + 2, UTC)
    time.sleep(max(0.0, target.timestamp() - time.time()) + 1.2)
    load.stop()
    pitr.collect()
    workspace.env["BACKUPCTL_DRILL_SECRET"] = "drill-secret-for-binlog-tests"
    done = workspace.run(
        "binlog", "drill", "shop", "--source", SOURCE, "--at", target.isoformat(), "--runtime", runtime,
        "--newest-row", NEWEST_ROW, "--no-objectives", "--json", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout), target


def check_report(report: dict[str, Any], target: datetime) -> None:
    point = report["point_in_time"]
    asked, reached = (datetime.fromisoformat(point[key]) for key in ("asked", "reached"))
    assert asked == target and reached == target, point  # --json prints RFC 3339 UTC (docs/json.md)
    newest = datetime.fromisoformat(point["newest_row"]).astimezone(UTC)
    assert target.timestamp() - 900 <= newest.timestamp() < target.timestamp(), "newest row in [T - RPO, T)"
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["point in time"]["ok"] and "newest row" in checks["point in time"]["detail"]
    assert any(stage["name"] == f"replay {SOURCE}" for stage in report["stages"]), "replay is part of the RTO"


def test_point_in_time_drill_passes_in_docker_staging(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, staging_images: Any
) -> None:
    report, target = drill_at_a_time_under_load(workspace, binlog_database, monkeypatch, "docker")
    assert report["runtime"] == "docker"
    check_report(report, target)


def test_point_in_time_drill_passes_in_the_local_runtime(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, target = drill_at_a_time_under_load(workspace, binlog_database, monkeypatch, "local")
    assert report["runtime"] == "local"
    check_report(report, target)
