"""Notifications against a real HTTP receiver on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backupctl.errors import ConfigError
from backupctl.notify import NotificationChannel, notifier_from_config

SECRET = "s3cr3t-token-value-42"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    fail_first: int = 0  # answer 503 to this many requests first

    def json(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].body)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append(Received(self.command, self.path, dict(self.headers.items()), body))
            code = 503 if state.fail_first > 0 else 200
            state.fail_first -= 1
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = _record
        do_POST = _record

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


SUMMARY = {"policy": "shop", "status": "failed", "seconds": 3.2}


def test_webhook_receives_failure_json_without_secrets(receiver, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    notifier = notifier_from_config(
        [{"type": "webhook", "url": f"{receiver.url}/hook", "headers": {"X-Token": "env:HOOK_TOKEN"}}]
    )
    notifier.start("shop")  # webhook default: failure only
    notifier.success("shop", SUMMARY)
    assert receiver.requests == []
    # the error text and the summary happen to contain the secret: it must be masked
    notifier.failure("shop", f"target s3: denied with {SECRET}", {**SUMMARY, "note": SECRET})
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["X-Token"] == SECRET  # the header carries it, the payload never
    assert request.headers["Content-Type"] == "application/json"
    assert SECRET.encode() not in request.body
    payload = receiver.json()
    assert payload["event"] == "failure" and payload["policy"] == "shop"
    assert payload["error"].startswith("target s3: denied with ****")
    assert payload["summary"]["status"] == "failed" and payload["summary"]["note"] == "********"
    assert payload["host"] == socket.gethostname()


def test_healthchecks_pings_start_success_and_fail(receiver, monkeypatch) -> None:
    monkeypatch.setenv("HC_URL", f"{receiver.url}/ping/0e6f4c1a")
    notifier = notifier_from_config([{"type": "healthchecks", "url": "env:HC_URL"}])
    notifier.start("shop")
    notifier.success("shop", SUMMARY)
    notifier.failure("shop", "source db: pg_dump exited 1", SUMMARY)
    seen = [(r.method, r.path) for r in receiver.requests]
    assert seen == [
        ("GET", "/ping/0e6f4c1a/start"),
        ("POST", "/ping/0e6f4c1a"),
        ("POST", "/ping/0e6f4c1a/fail"),
    ]
    fail_body = receiver.requests[-1].body.decode()
    assert "shop" in fail_body and "pg_dump exited 1" in fail_body
    assert len(receiver.requests[-1].body) <= 10_000


def test_slack_receives_text(receiver) -> None:
    notifier = notifier_from_config([{"type": "slack", "url": f"{receiver.url}/services/T/B/X"}])
    notifier.failure("shop", "no target completed", SUMMARY)
    assert receiver.requests[0].path == "/services/T/B/X"
    payload = receiver.json()
    assert set(payload) == {"text"}
    assert (
        "shop" in payload["text"] and "FAILED" in payload["text"] and "no target completed" in payload["text"]
    )


def test_5xx_is_retried_then_delivered(receiver) -> None:
    receiver.fail_first = 2
    notifier = notifier_from_config([{"type": "slack", "url": receiver.url}], backoff=0.01)
    notifier.failure("shop", "boom", SUMMARY)
    assert len(receiver.requests) == 3  # two 503 answers, then delivered


def test_unreachable_webhook_does_not_raise_and_logs(receiver, caplog) -> None:
    with socket.socket() as probe:  # a port that was free and is now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = notifier_from_config(
        [
            {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "name": "ops-hook"},
            {"type": "slack", "url": receiver.url},  # the next channel is still notified
        ],
        backoff=0.01,
    )
    with caplog.at_level(logging.WARNING, logger="backupctl.notify"):
        notifier.failure("shop", "boom", SUMMARY)
    warnings = [r for r in caplog.records if r.name == "backupctl.notify" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ops-hook" in warnings[0].getMessage()
    assert len(receiver.requests) == 1


def test_missing_secret_is_logged_not_raised(receiver, caplog, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_HOOK_VAR", raising=False)
    notifier = notifier_from_config([{"type": "webhook", "url": "env:NO_SUCH_HOOK_VAR"}])
    with caplog.at_level(logging.WARNING, logger="backupctl.notify"):
        notifier.failure("shop", "boom", SUMMARY)
    assert "NO_SUCH_HOOK_VAR" in caplog.text


def test_invalid_channel_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"notifications\[0\]"):
        notifier_from_config([{"type": "email", "url": "https://x"}])
    with pytest.raises(ConfigError, match="secret reference"):
        notifier_from_config([{"type": "slack", "url": "hooks.slack.com/x"}])
    assert NotificationChannel(type="healthchecks", url="https://hc-ping.com/x").on == [
        "start",
        "success",
        "failure",
    ]
