"""Drill reports: JSON keys and round trip, JUnit validity and escaping, the self-contained HTML."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupctl.checks import CheckResult
from backupctl.core.secrets import register_secret
from backupctl.drills.report import (
    SCHEMA,
    DrillReport,
    HistoryPoint,
    Stage,
    from_json,
    to_html,
    to_json,
    to_junit,
    write_reports,
)

SECRET = "s3cr3t-drill-pw-77a1"
STARTED = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def sample_report(history: int = 10, *, ok: bool = True) -> DrillReport:
    """A realistic report: Glacier warm-up, two restores, http/sql/command/integrity checks."""
    register_secret(SECRET)
    checks = [
        CheckResult("manifest", "integrity", True, "3 artifacts: sha256 and signature match", 0.8),
        CheckResult("row-counts", "integrity", True, "14 tables, row counts equal the manifest", 1.2),
        CheckResult("checkout", "http", ok,
                    "4 steps passed: POST /login → 200; POST /cart/items → 201; GET /cart → 200; "
                    "POST /checkout → 201" if ok else
                    f'step 1/4 POST /login: expected status 200, got 401; body: {{"error": "bad", '
                    f'"tried": "{SECRET}"}}',
                    0.42, [{"step": "POST /login", "status": 200 if ok else 401, "ok": ok, "seconds": 0.2,
                            "detail": "200"}] + ([{"step": "GET /cart", "status": 200, "ok": True,
                                                    "seconds": 0.1, "detail": "200"}] if ok else [])),
        CheckResult("invariants", "sql", True, "expected no rows: ok (0 rows)", 0.09),
        CheckResult("uploads", "command", True, "expected exit code 0: ok (output: 1,204 files)", 0.3),
    ]
    # every 4th earlier drill (from the third) failed before measuring a recovery time
    points = [HistoryPoint(STARTED - timedelta(days=7 * (history - i)),
                           600.0 + 37 * i if i % 4 != 2 else None, i % 4 != 2) for i in range(history)]
    return DrillReport(
        drill="shop-quarterly", policy="shop", snapshot_id="20250314T020000Z-7f3a", target="s3-offsite",
        runtime="docker", run_id="r-20250314-0930", started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=1342), ok=ok,
        reason=None if ok else "1 of 5 checks failed: checkout",
        stages=[Stage("fetch", 512.0, "3 artifacts, 2.1 GiB from s3-offsite (GLACIER)", wait_seconds=430.0),
                Stage("decrypt+restore shop-db", 604.5, "pg_restore, 14 tables"),
                Stage("restore uploads", 88.2, "1,204 files"),
                Stage("services ready", 41.0, "db, app"),
                Stage("checks", 3.7, "5 checks")],
        measured_rto_seconds=1250.4, rto_objective_seconds=3600, rpo_at_drill_seconds=27000,
        rpo_objective_seconds=86400, objectives_checked=True, checks=checks, history=points,
    )


def test_json_keys_are_stable_and_round_trip() -> None:
    data = json.loads(json.dumps(to_json(sample_report())))
    assert list(data) == ["schema", "drill", "policy", "snapshot_id", "target", "runtime", "run_id",
                          "started_at", "finished_at", "duration_seconds", "ok", "reason", "stages",
                          "objectives", "checks", "summary", "history"]
    assert data["schema"] == SCHEMA
    assert data["started_at"] == "2025-03-14T09:30:00Z"
    assert data["duration_seconds"] == 1342
    assert data["stages"][0] == {"name": "fetch", "seconds": 512.0, "wait_seconds": 430.0,
                                 "detail": "3 artifacts, 2.1 GiB from s3-offsite (GLACIER)", "status": "ok"}
    assert data["objectives"] == {
        "checked": True,
        "rto": {"measured_seconds": 1250.4, "objective_seconds": 3600, "ok": True, "status": "met"},
        "rpo": {"at_drill_seconds": 27000, "objective_seconds": 86400, "ok": True, "status": "met"},
    }
    assert list(data["checks"][2]) == ["name", "kind", "ok", "detail", "duration_seconds", "steps", "status"]
    assert data["summary"] == {"checks": 5, "passed": 5, "failed": 0, "not_run": 0}
    assert data["history"][0] == {"finished_at": "2025-01-03T09:30:00Z", "measured_rto_seconds": 600.0,
                                  "ok": True}
    assert to_json(from_json(data)) == data


def test_naive_times_are_utc_and_plain_tuples_work_as_history() -> None:
    report = sample_report(0)
    report.started_at = datetime(2025, 1, 2, 3, 4, 5)
    report.history = [(datetime(2025, 1, 1), 100.0, True)]  # type: ignore[list-item]
    data = to_json(report)
    assert data["started_at"] == "2025-01-02T03:04:05Z"
    assert data["history"] == [{"finished_at": "2025-01-01T00:00:00Z", "measured_rto_seconds": 100.0,
                                "ok": True}]


def test_objectives() -> None:
    report = sample_report()
    report.measured_rto_seconds = 3601
    assert (report.rto_ok, report.rpo_ok) == (False, True)
    report.measured_rto_seconds = None  # the drill failed before recovering: not measured, not missed
    assert report.rto_ok is None and report.rto_status == "not measured"
    unchecked = sample_report()
    unchecked.objectives_checked = False
    assert (unchecked.rto_ok, unchecked.rpo_ok) == (None, None)
    no_objective = sample_report()
    no_objective.rto_objective_seconds = None
    assert no_objective.rto_ok is None


def test_secrets_never_reach_json() -> None:
    assert SECRET not in json.dumps(to_json(sample_report(ok=False)))


def test_junit_parses_and_counts_failures() -> None:
    report = sample_report(ok=False)
    report.measured_rto_seconds = 4000  # misses the 1h objective
    root = ET.fromstring(to_junit(report))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("shop-quarterly", "7", "2")
    assert (root.get("tests"), root.get("failures")) == ("7", "2")
    assert suite.get("time") == "1342.000"
    assert suite.get("timestamp") == "2025-03-14T09:30:00"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["manifest", "row-counts", "checkout", "invariants", "uploads",
                           "objectives.rto", "objectives.rpo"]
    assert cases["checkout"].get("classname") == "backupctl.drill.shop-quarterly.http"
    assert cases["manifest"].get("classname") == "backupctl.drill.shop-quarterly.integrity"
    assert cases["objectives.rto"].get("classname") == "backupctl.drill.shop-quarterly.objectives"
    failure = cases["checkout"].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("step 1/4 POST /login: expected status 200, got 401")
    assert "FAILED: POST /login → 401" in (failure.text or "")
    rto = cases["objectives.rto"].find("failure")
    assert rto is not None and rto.get("message") == (
        "recovery time 1h06m exceeds the objective 1h (4000s vs 3600s)")
    assert cases["objectives.rpo"].find("failure") is None
    assert properties(suite)["snapshot"] == "20250314T020000Z-7f3a"


def properties(suite: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in suite.iter("property")}


def test_junit_escapes_and_masks() -> None:
    report = sample_report(0, ok=False)
    nasty = f'expected <b>&"quoted"</b> \x1b[31mred\x00 got {SECRET}]]>'
    report.checks = [CheckResult("x<&>\"y", "sql", False, nasty, 0.1)]
    text = to_junit(report)
    assert SECRET not in text
    case = ET.fromstring(text).find("testsuite/testcase")
    assert case is not None
    assert case.get("name") == 'x<&>"y'
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == 'expected <b>&"quoted"</b> \ufffd[31mred\ufffd got ********]]>'


def test_junit_without_objectives_and_failure_outside_checks() -> None:
    report = sample_report(0, ok=False)
    report.objectives_checked = False
    report.checks = []
    report.reason = "restore of shop-db failed: pg_restore: error: could not connect"
    suite = ET.fromstring(to_junit(report)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
    case = suite.find("testcase")
    assert case is not None and case.get("name") == "drill"
    assert case.find("failure") is not None
    passing = sample_report(0)
    passing.objectives_checked = False
    assert ET.fromstring(to_junit(passing)).find("testsuite").get("failures") == "0"  # type: ignore[union-attr]


@pytest.mark.parametrize("history", [0, 1, 10])
def test_html_is_self_contained(history: int) -> None:
    for ok in (True, False):
        html = to_html(sample_report(history, ok=ok))
        assert "shop-quarterly" in html
        assert ("PASS" if ok else "FAIL") in html
        assert "<svg" in html
        assert not re.search(r"https?://", html), "no external assets or links"
        assert not re.search(r"<script|<link|@import|<img", html)
        assert SECRET not in html
        assert html.count("<rect") == history + 1 - sum(1 for i in range(history) if i % 4 == 2)


def test_html_escapes_everything() -> None:
    report = sample_report(1, ok=False)
    report.reason = "<script>alert(1)</script> & more"
    report.checks[0].detail = '<img src="x" onerror="y">'
    html = to_html(report)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert '<img src="x"' not in html


def test_html_without_any_measurement() -> None:
    report = sample_report(0, ok=False)
    report.measured_rto_seconds = None
    report.rto_objective_seconds = None
    report.stages = []
    report.checks = []
    html = to_html(report)
    assert "No recovery time has been measured" in html
    assert "No check ran." in html


def test_write_reports(tmp_path: Path) -> None:
    junit = tmp_path / "ci" / "junit.xml"
    paths = write_reports(sample_report(3), tmp_path / "reports", junit)
    assert paths == {"json": tmp_path / "reports" / "shop-quarterly-r-20250314-0930.json",
                     "html": tmp_path / "reports" / "shop-quarterly-r-20250314-0930.html", "junit": junit}
    assert json.loads(paths["json"].read_text())["drill"] == "shop-quarterly"
    assert ET.parse(junit).getroot().tag == "testsuites"
    assert paths["html"].read_text().startswith("<!DOCTYPE html>")
    written = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert written == ["shop-quarterly-r-20250314-0930.html", "shop-quarterly-r-20250314-0930.json"], \
        "no temporary leftovers"
    assert oct(paths["json"].stat().st_mode & 0o777) == "0o644"
    assert set(write_reports(sample_report(0), tmp_path / "other", None)) == {"json", "html"}


def test_a_failed_stage_unrun_checks_and_unmeasured_objectives_tell_the_truth() -> None:
    """A drill stopped by a failed restore: the stage is the failure, later checks are "not run",
    the RTO/RPO are "not measured" (never MISSED), in JSON, JUnit and HTML alike."""
    report = sample_report(0, ok=False)
    report.reason = "restore uploads: refusing tar member 'x': '..' in its path"
    report.stages = [Stage("fetch uploads", 0.4, "1 artifact"),
                     Stage("restore uploads", 0.2, report.reason, failed=True)]
    report.measured_rto_seconds = report.rpo_at_drill_seconds = None
    report.checks = [CheckResult("manifest signature", "integrity", True, "signed", 0.1),
                     CheckResult("home", "http", False, "not run: the drill stopped before it", 0.0,
                                 not_run=True)]
    data = to_json(report)
    assert [stage["status"] for stage in data["stages"]] == ["ok", "failed"]
    assert data["summary"] == {"checks": 2, "passed": 1, "failed": 0, "not_run": 1}
    assert data["checks"][1]["status"] == "not run"
    assert data["objectives"]["rto"]["status"] == data["objectives"]["rpo"]["status"] == "not measured"
    assert to_json(from_json(data)) == data
    suite = ET.fromstring(to_junit(report)).find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "3")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failure = cases["stage restore uploads"].find("failure")
    assert failure is not None and "refusing tar member" in failure.get("message", "")
    assert cases["home"].find("skipped") is not None and cases["home"].find("failure") is None
    assert cases["objectives.rto"].find("skipped") is not None
    html = to_html(report)
    assert "NOT RUN" in html and "NOT MEASURED" in html and "MISSED" not in html and "FAILED" in html
