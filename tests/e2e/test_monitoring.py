"""Metrics file and failure notifications through the real CLI."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.core import Workspace


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(
            {"path": self.path, "body": json.loads(body or b"{}"), "auth": self.headers.get("Authorization")}
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_and_failure_webhook(workspace: Workspace, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.received = []
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello")
    metrics = tmp_path / "textfile" / "backupctl-app.prom"
    metrics.parent.mkdir()
    workspace.env["HOOK_TOKEN"] = "Bearer very-secret-token"
    policy = workspace.base_policy(
        "app",
        [{"name": "files", "type": "files", "path": str(data)}],
        metrics_file=str(metrics),
        notifications=[
            {
                "type": "webhook",
                "url": f"http://127.0.0.1:{server.server_port}/hook",
                "headers": {"Authorization": "env:HOOK_TOKEN"},
            },
            {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/x"},
        ],
    )
    workspace.write_policy("app", policy)
    try:
        ok = workspace.run("backup", "app")
        assert ok.returncode == 0, ok.stderr  # the unreachable second webhook does not fail the backup
        text = metrics.read_text()
        assert metric(text, "backupctl_last_run_success") == 1
        success_at = metric(text, "backupctl_last_success_timestamp_seconds")
        assert _Receiver.received == []  # failures only, by default

        (data / "a.txt").unlink()
        data.rmdir()  # the source disappears: the next run fails
        failed = workspace.run("backup", "app")
        assert failed.returncode == 1
        text = metrics.read_text()
        assert metric(text, "backupctl_last_run_success") == 0
        assert metric(text, "backupctl_last_success_timestamp_seconds") == success_at
        assert len(_Receiver.received) == 1
        event = _Receiver.received[0]
        assert event["path"] == "/hook" and event["auth"] == "Bearer very-secret-token"
        assert event["body"]["event"] == "failure" and event["body"]["policy"] == "app"
        assert "very-secret-token" not in json.dumps(event["body"])
    finally:
        server.shutdown()


def test_metrics_after_a_partial_run_keep_the_sizes(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello " * 1000)
    blocked = tmp_path / "nas-not-mounted"
    blocked.write_text("a file where the target directory should be\n")  # this target fails
    metrics = tmp_path / "backupctl-app.prom"
    policy = workspace.base_policy(
        "app",
        [{"name": "files", "type": "files", "path": str(data)}],
        [
            {"name": "local", "type": "local", "path": str(workspace.backups)},
            {"name": "nas", "type": "local", "path": str(blocked)},
        ],
        metrics_file=str(metrics),
    )
    workspace.write_policy("app", policy)
    partial = workspace.run("backup", "app")
    assert partial.returncode == 3, partial.stderr
    text = metrics.read_text()
    assert metric(text, "backupctl_last_run_success") == 0
    plain = [
        line
        for line in text.splitlines()
        if line.startswith("backupctl_source_bytes{") and 'kind="plain"' in line
    ]
    assert plain and float(plain[0].rsplit(" ", 1)[1]) > 6000, text
    stored = {re.search(r'target="([^"]+)"', line).group(1): float(line.rsplit(" ", 1)[1])  # type: ignore[union-attr]
              for line in text.splitlines() if line.startswith("backupctl_target_bytes{")}  # fmt: skip
    assert stored.get("local", 0) > 0 and stored.get("nas", 0) == 0, (stored, text)
