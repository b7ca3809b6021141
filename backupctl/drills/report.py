"""Drill reports: JSON (machines, evidence), JUnit XML (CI), one self-contained HTML file (people).

The drill orchestration fills a `DrillReport` and calls `write_reports`. Every text that leaves
this module passes through `mask`, so a secret resolved during the drill (and registered with
the masker) never reaches a report, whatever a check or a tool printed.

Times are UTC; naive datetimes are taken to be UTC already.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from backupctl.checks.base import CheckResult, mask_tree
from backupctl.core.durations import format_duration, humanize_seconds
from backupctl.core.secrets import mask

SCHEMA = "backupctl.drill-report/1"
CHART_POINTS = 20  # the chart shows this run and up to 19 earlier drills
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Stage:
    """One timed part of the drill, in order: fetch, decrypt+restore per source, services ready, checks.

    `wait_seconds` is the part of `seconds` spent waiting rather than working, e.g. for an
    archived (Glacier) object to become readable; the HTML shows it as its own shade of the bar.
    """

    name: str
    seconds: float
    detail: str = ""
    wait_seconds: float = 0.0
    failed: bool = False  # the drill stopped in this stage (its time runs until the failure)


class HistoryPoint(NamedTuple):
    """An earlier drill of the same policy (not this run): a plain 3-tuple works too."""

    finished_at: datetime
    measured_rto_seconds: float | None  # None when that drill failed before recovering
    ok: bool


@dataclass
class DrillReport:
    """Everything a drill run found. Objectives in seconds; None when unknown or not set."""

    drill: str
    policy: str
    snapshot_id: str | None
    target: str | None
    runtime: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    reason: str | None = None  # why the drill failed (or None)
    stages: list[Stage] = field(default_factory=list)
    measured_rto_seconds: float | None = None
    rto_objective_seconds: float | None = None
    rpo_at_drill_seconds: float | None = None  # age of the restored snapshot when the drill began
    rpo_objective_seconds: float | None = None
    objectives_checked: bool = False
    checks: list[CheckResult] = field(default_factory=list)  # integrity checks too (kind "integrity")
    history: list[HistoryPoint] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (_utc(self.finished_at) - _utc(self.started_at)).total_seconds())

    @property
    def rto_ok(self) -> bool | None:
        """Met / missed / None (not checked, no objective, or not measured: see rto_status)."""
        return _objective_met(self.objectives_checked, self.measured_rto_seconds, self.rto_objective_seconds)

    @property
    def rpo_ok(self) -> bool | None:
        return _objective_met(self.objectives_checked, self.rpo_at_drill_seconds, self.rpo_objective_seconds)

    @property
    def rto_status(self) -> str:
        """"met", "missed", "not measured" (the drill stopped before recovering) or "not checked"."""
        checked, objective = self.objectives_checked, self.rto_objective_seconds
        return _objective_status(checked, self.measured_rto_seconds, objective)

    @property
    def rpo_status(self) -> str:
        checked, objective = self.objectives_checked, self.rpo_objective_seconds
        return _objective_status(checked, self.rpo_at_drill_seconds, objective)


def _objective_met(checked: bool, measured: float | None, objective: float | None) -> bool | None:
    if not checked or objective is None or measured is None:
        return None
    return measured <= objective


def _objective_status(checked: bool, measured: float | None, objective: float | None) -> str:
    if not checked or objective is None:
        return "not checked"
    if measured is None:
        return "not measured"
    return "met" if measured <= objective else "missed"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------- JSON
def to_json(report: DrillReport) -> dict[str, Any]:
    """The report as JSON-ready data with stable keys, ISO 8601 UTC times, secrets masked."""
    failed = sum(1 for check in report.checks if not check.ok and not check.not_run)
    not_run = sum(1 for check in report.checks if check.not_run)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "drill": report.drill,
        "policy": report.policy,
        "snapshot_id": report.snapshot_id,
        "target": report.target,
        "runtime": report.runtime,
        "run_id": report.run_id,
        "started_at": _iso(report.started_at),
        "finished_at": _iso(report.finished_at),
        "duration_seconds": round(report.duration_seconds, 3),
        "ok": report.ok,
        "reason": report.reason,
        "stages": [{"name": stage.name, "seconds": round(stage.seconds, 3),
                    "wait_seconds": round(stage.wait_seconds, 3), "detail": stage.detail,
                    "status": "failed" if stage.failed else "ok"}
                   for stage in report.stages],
        "objectives": {
            "checked": report.objectives_checked,
            "rto": {"measured_seconds": report.measured_rto_seconds,
                    "objective_seconds": report.rto_objective_seconds, "ok": report.rto_ok,
                    "status": report.rto_status},
            "rpo": {"at_drill_seconds": report.rpo_at_drill_seconds,
                    "objective_seconds": report.rpo_objective_seconds, "ok": report.rpo_ok,
                    "status": report.rpo_status},
        },
        "checks": [{"name": check.name, "kind": check.kind, "ok": check.ok, "detail": check.detail,
                    "duration_seconds": round(check.duration, 3), "steps": check.steps,
                    "status": check.status}
                   for check in report.checks],
        "summary": {"checks": len(report.checks), "passed": len(report.checks) - failed - not_run,
                    "failed": failed, "not_run": not_run},
        "history": [{"finished_at": _iso(point.finished_at),
                     "measured_rto_seconds": point.measured_rto_seconds, "ok": point.ok}
                    for point in map(HistoryPoint._make, report.history)],
    }
    masked: dict[str, Any] = mask_tree(data)
    return masked


def from_json(data: dict[str, Any]) -> DrillReport:
    """Rebuild a report from `to_json` output (e.g. an earlier run's file, for history)."""
    objectives = data["objectives"]
    return DrillReport(
        drill=data["drill"], policy=data["policy"], snapshot_id=data["snapshot_id"], target=data["target"],
        runtime=data["runtime"], run_id=data["run_id"], ok=data["ok"], reason=data["reason"],
        started_at=datetime.fromisoformat(data["started_at"]),
        finished_at=datetime.fromisoformat(data["finished_at"]),
        stages=[Stage(s["name"], s["seconds"], s["detail"], s["wait_seconds"], s.get("status") == "failed")
                for s in data["stages"]],
        measured_rto_seconds=objectives["rto"]["measured_seconds"],
        rto_objective_seconds=objectives["rto"]["objective_seconds"],
        rpo_at_drill_seconds=objectives["rpo"]["at_drill_seconds"],
        rpo_objective_seconds=objectives["rpo"]["objective_seconds"],
        objectives_checked=objectives["checked"],
        checks=[CheckResult(c["name"], c["kind"], c["ok"], c["detail"], c["duration_seconds"], c["steps"],
                            c.get("status") == "not run")
                for c in data["checks"]],
        history=[HistoryPoint(datetime.fromisoformat(h["finished_at"]), h["measured_rto_seconds"], h["ok"])
                 for h in data["history"]],
    )


# ------------------------------------------------------------------------------------------ JUnit
def to_junit(report: DrillReport) -> str:
    """JUnit XML: one testsuite (the drill), one testcase per check, plus the objectives."""
    drill = _xml_text(report.drill)
    cases: list[ET.Element] = []
    for stage in report.stages:
        if stage.failed:  # where the drill stopped: the failure CI must show first
            case = ET.Element("testcase", classname=f"backupctl.drill.{drill}.stages",
                              name=f"stage {_xml_text(stage.name)}", time=f"{stage.seconds:.3f}")
            _outcome(case, False, report.reason or f"stage {stage.name} failed", stage.detail or None)
            cases.append(case)
    for check in report.checks:
        case = ET.Element("testcase", classname=f"backupctl.drill.{drill}.{_xml_text(check.kind)}",
                          name=_xml_text(check.name), time=f"{check.duration:.3f}")
        if check.not_run:
            ET.SubElement(case, "skipped", message=_xml_text(check.detail or "not run"))
        else:
            detail = "\n".join([check.detail, *(_step_line(step) for step in check.steps)])
            _outcome(case, check.ok, check.detail, detail)
        cases.append(case)
    rto, rpo = report.rto_objective_seconds, report.rpo_objective_seconds
    for key, label, measured, objective, status in (
        ("rto", "recovery time", report.measured_rto_seconds, rto, report.rto_status),
        ("rpo", "snapshot age", report.rpo_at_drill_seconds, rpo, report.rpo_status),
    ):
        if status == "not checked":
            continue
        case = ET.Element("testcase", classname=f"backupctl.drill.{drill}.objectives",
                          name=f"objectives.{key}", time="0.000")
        if status == "not measured":
            ET.SubElement(case, "skipped", message=_objective_text(label, None, objective, False))
        else:
            _outcome(case, status == "met", _objective_text(label, measured, objective, status == "met"))
        cases.append(case)
    if not report.ok and all(case.find("failure") is None for case in cases):
        # The drill failed before or outside any check (fetch, restore, start-up): CI must see it.
        case = ET.Element("testcase", classname=f"backupctl.drill.{drill}", name="drill",
                          time=f"{report.duration_seconds:.3f}")
        _outcome(case, False, report.reason or "the drill failed")
        cases.append(case)

    failures = sum(1 for case in cases if case.find("failure") is not None)
    skipped = sum(1 for case in cases if case.find("skipped") is not None)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0",
              "time": f"{report.duration_seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "backupctl drill", **counts})
    # JUnit's schema wants a timestamp without a zone: it is UTC.
    suite = ET.SubElement(root, "testsuite", {
        "name": drill, **counts, "skipped": str(skipped),
        "timestamp": _utc(report.started_at).strftime("%Y-%m-%dT%H:%M:%S"),
    })
    properties = ET.SubElement(suite, "properties")
    for name, value in (("policy", report.policy), ("snapshot", report.snapshot_id),
                        ("target", report.target), ("runtime", report.runtime),
                        ("run_id", report.run_id), ("reason", report.reason)):
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=_xml_text(value))
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _outcome(case: ET.Element, ok: bool, message: str, text: str | None = None) -> None:
    if ok:
        ET.SubElement(case, "system-out").text = _xml_text(text or message)
    else:
        first = message.strip().splitlines()[0] if message.strip() else "failed"
        failure = ET.SubElement(case, "failure", message=_xml_text(first[:300]), type="DrillCheckFailed")
        failure.text = _xml_text(text or message)


def _xml_text(text: str) -> str:
    """Masked, and without the control characters XML 1.0 cannot carry (ElementTree writes them)."""
    return _XML_ILLEGAL.sub("\ufffd", mask(text))


def _step_line(step: dict[str, Any]) -> str:
    mark = "ok" if step.get("ok") else "FAILED"
    return f"  {mark}: {step.get('step', '?')} → {step.get('status')} ({step.get('detail', '')})"


def _objective_text(label: str, measured: float | None, objective: float | None, met: bool) -> str:
    limit = human(objective or 0)
    if measured is None:
        return f"{label} not measured (objective {limit})"
    relation = "within" if met else "exceeds"
    return (f"{label} {human(measured)} {relation} the objective {limit} "
            f"({measured:.0f}s vs {objective or 0:.0f}s)")


# ------------------------------------------------------------------------------------------- HTML
_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("backupctl.drills", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    # finalize runs on every {{ value }}: masking here too is the last line of defence.
    finalize=lambda value: mask(value) if isinstance(value, str) else value,
    trim_blocks=True,
    lstrip_blocks=True,
)


def human(seconds: float | None) -> str:
    """Durations for people: whole minutes as policies write them (`1h`, `1h30m`, `1d`), others
    as elapsed times (`12.3s`, `4m05s`); `—` for unknown."""
    if seconds is None:
        return "—"
    if seconds >= 60 and float(seconds).is_integer() and seconds % 60 == 0:
        return format_duration(timedelta(seconds=seconds))
    return humanize_seconds(seconds)


_environment.filters["human"] = human


def to_html(report: DrillReport) -> str:
    """One self-contained HTML page (inline CSS and SVG, no scripts, no external assets)."""
    data = to_json(report)  # masked once here, and again by `finalize` on output
    total = sum(stage["seconds"] for stage in data["stages"]) or 1.0
    for stage in data["stages"]:
        stage["percent"] = 100 * stage["seconds"] / total
        stage["wait_percent"] = 100 * min(stage["wait_seconds"], stage["seconds"]) / total
    return _environment.get_template("report.html.j2").render(
        report=data, chart=_chart(report), generated=_iso(datetime.now(UTC)),
        started=_utc(report.started_at).strftime("%Y-%m-%d %H:%M:%S UTC"),
        finished=_utc(report.finished_at).strftime("%Y-%m-%d %H:%M:%S UTC"),
        objectives=[_gauge("Recovery time (RTO)", "measured", report.measured_rto_seconds,
                           report.rto_objective_seconds, report.rto_ok, report.rto_status),
                    _gauge("Recovery point (RPO)", "snapshot age", report.rpo_at_drill_seconds,
                           report.rpo_objective_seconds, report.rpo_ok, report.rpo_status)],
    )


def _gauge(
    title: str, label: str, value: float | None, objective: float | None, met: bool | None,
    status: str = "",
) -> dict[str, Any]:
    """A bar where the objective sits at 80% of the width, so an overrun stays visible."""
    scale = (objective / 0.8) if objective else (value or 1.0)
    return {"title": title, "label": label, "value": value, "objective": objective, "ok": met,
            "status": status,
            "percent": min(100.0, 100 * (value or 0) / scale) if scale else 0.0,
            "objective_percent": 80.0 if objective else None}


def _chart(report: DrillReport) -> dict[str, Any]:
    """Geometry of the RTO-over-time bar chart (the template draws it as inline SVG)."""
    points = [HistoryPoint._make(point) for point in report.history][-(CHART_POINTS - 1):]
    points.append(HistoryPoint(report.finished_at, report.measured_rto_seconds, report.ok))
    # The right margin holds the objective's label, so it never covers a bar.
    width, height, left, right, top, bottom = 760, 260, 64, 96, 20, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [p.measured_rto_seconds for p in points if p.measured_rto_seconds is not None]
    objective = report.rto_objective_seconds
    peak = max([*values, objective or 0, 1.0])
    step = _nice_step(peak * 1.1 / 4)
    top_value = step * math.ceil(peak * 1.1 / step)

    def y(seconds: float) -> float:
        return top + plot_h - plot_h * seconds / top_value

    slot = plot_w / len(points)
    bar_w = min(48.0, slot * 0.62)
    every = max(1, math.ceil(len(points) / 10))  # at most ~10 date labels
    bars = []
    for index, point in enumerate(points):
        current = index == len(points) - 1
        x = left + slot * index + (slot - bar_w) / 2
        rto = point.measured_rto_seconds
        label = "this run" if current else _utc(point.finished_at).strftime("%b %d")
        state = "PASS" if point.ok else "FAIL"
        bars.append({
            "x": x, "w": bar_w, "cx": x + bar_w / 2, "y": y(rto or 0), "h": y(0) - y(rto or 0),
            "missing": rto is None, "ok": point.ok, "current": current,
            "label": label if current or (len(points) - 1 - index) % every == 0 else "",
            "title": f"{_utc(point.finished_at):%Y-%m-%d %H:%M} UTC — {state}, RTO "
                     + (human(rto) if rto is not None else "not measured"),
        })
    ticks = [{"y": y(step * i), "label": human(step * i) if i else "0"}
             for i in range(round(top_value / step) + 1)]
    return {"width": width, "height": height, "left": left, "right": width - right, "top": top,
            "base": y(0), "bars": bars, "ticks": ticks, "has_values": bool(values),
            "objective": (None if objective is None
                          else {"y": y(objective), "label": human(objective)}),
            "earlier": len(points) - 1}


def _nice_step(raw: float) -> float:
    """A readable axis step of at least `raw` seconds: 1-2-5 seconds, then whole minutes and hours."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if step >= raw:
            return float(step)
    return 86400.0 * math.ceil(raw / 86400)


# ----------------------------------------------------------------------------------------- files
def write_reports(report: DrillReport, directory: Path, junit: Path | None = None) -> dict[str, Path]:
    """Write `<drill>-<run id>.json` and `.html` into `directory` (and JUnit XML to `junit`).

    Each file is written to a temporary name in its directory and renamed, so a reader never
    sees half a report. Returns {"json": path, "html": path[, "junit": path]}.
    """
    stem = _UNSAFE_FILE_CHARS.sub("-", f"{report.drill}-{report.run_id}")
    paths = {"json": directory / f"{stem}.json", "html": directory / f"{stem}.html"}
    contents = {"json": json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n",
                "html": to_html(report)}
    if junit is not None:
        paths["junit"], contents["junit"] = junit, to_junit(report)
    for kind, path in paths.items():
        _write_atomically(path, contents[kind])
    return paths


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # reports are secret-free by construction and meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
