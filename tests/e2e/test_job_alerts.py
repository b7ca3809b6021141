"""Alerts and metrics for every job (issue #13, item 5): a failed verify and a failed drill reach a
real webhook receiver and write their own textfile; status alerts on lost/regained compliance."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_monitoring import metric
from tests.fixtures.core import Workspace


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def _setup(space: Workspace, tmp_path: Path, url: str) -> Path:
    """A files policy with a webhook (all events) and a metrics file; one good backup."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello " * 100)
    metrics = tmp_path / "textfile" / "backupctl-app.prom"
    policy = space.base_policy(
        "app",
        [{"name": "files", "type": "files", "path": str(data)}],
        metrics_file=str(metrics),
        notifications=[{"type": "webhook", "url": url, "on": ["success", "failure"]}],
    )
    space.write_policy("app", policy)
    space.run("backup", "app", check=True)
    return metrics


def _flip_a_byte(space: Workspace) -> None:
    """Corrupt the stored artifact; a second call repairs it."""
    (artifact,) = space.backups.rglob("files.*.age")
    raw = bytearray(artifact.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    artifact.write_bytes(bytes(raw))


def _events(job: str) -> list[dict[str, Any]]:
    return [event for event in _Hook.received if event.get("job") == job]


def test_failed_verify_and_drill_alert_and_write_their_metrics(
    workspace: Workspace, tmp_path: Path, hook: str
) -> None:
    metrics = _setup(workspace, tmp_path, hook)
    backup_text = metrics.read_text()
    verify_file = metrics.with_name("backupctl-app-verify.prom")
    drill_file = metrics.with_name("backupctl-app-drill.prom")

    workspace.run("verify", "app", check=True)
    assert metric(verify_file.read_text(), "backupctl_job_last_run_success") == 1
    last_ok = metric(verify_file.read_text(), "backupctl_job_last_success_timestamp_seconds")
    assert [event["event"] for event in _events("verify")] == ["success"]

    _flip_a_byte(workspace)
    failed = workspace.run("verify", "app")
    assert failed.returncode == 1, failed.stderr
    text = verify_file.read_text()
    assert metric(text, "backupctl_job_last_run_success") == 0
    assert metric(text, "backupctl_job_last_success_timestamp_seconds") == last_ok  # kept for dead-man alerts
    failure = _events("verify")[-1]
    assert failure["event"] == "failure" and failure["policy"] == "app"
    assert "files" in failure["error"], failure

    drill = workspace.run("drill", "app", "--runtime", "local", timeout=300)
    assert drill.returncode == 1, drill.stderr
    text = drill_file.read_text()
    assert metric(text, "backupctl_job_last_run_success") == 0
    assert 'job="drill"' in text
    (event,) = _events("drill")
    assert event["event"] == "failure" and event["error"], event
    # One job never erases another's gauges: the backup's file is untouched by verify and drill.
    assert metrics.read_text() == backup_text

    _flip_a_byte(workspace)  # repaired: the next verify succeeds and says it recovered
    workspace.run("verify", "app", check=True)
    assert _events("verify")[-1]["event"] == "recovered"
    assert metric(verify_file.read_text(), "backupctl_job_last_success_timestamp_seconds") > last_ok


def test_status_alerts_when_compliance_is_lost_and_regained(
    workspace: Workspace, tmp_path: Path, hook: str
) -> None:
    metrics = _setup(workspace, tmp_path, hook)
    status_file = metrics.with_name("backupctl-app-status.prom")
    # One local copy breaks 3-2-1: not compliant. Checked twice, alerted once.
    assert workspace.run("status", "app").returncode == 1
    assert workspace.run("status", "app").returncode == 1
    assert [event["event"] for event in _events("status")] == ["failure"]
    assert metric(status_file.read_text(), "backupctl_job_last_run_success") == 0
    assert "copies" in _events("status")[0]["error"]
