"""Staging cannot touch production: the readiness probe never follows a redirect out of staging,
containers cannot open connections to this host's own addresses, outside DNS lookups fail at once.

The "production" here is a web server on this host, listening on every address, that records
every request it receives (its access log): it must stay empty.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backupctl.drills.schema import Readiness, Service
from backupctl.errors import JobFailed
from backupctl.staging import isolation
from backupctl.staging.docker import DockerRuntime

Factory = Callable[[], DockerRuntime]

REDIRECTOR = """
import http.server, sys
class Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", sys.argv[1])
        self.end_headers()
http.server.HTTPServer(("0.0.0.0", 8080), Redirect).serve_forever()
"""
LOOKUP = """
import socket, sys, time
started = time.monotonic()
try:
    print(socket.getaddrinfo(sys.argv[1], 80)[0][4][0], end=" ")
except OSError as error:
    print("failed", end=" ")
print(f"{time.monotonic() - started:.3f}")
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as error:
    print("failed:", error)
"""


class Production:
    """A web server on all of this host's addresses with an access log."""

    def __init__(self) -> None:
        self.log: list[str] = []
        log = self.log

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                log.append(f"{self.client_address[0]} GET {self.path}")
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"production")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def production() -> Iterator[Production]:
    server = Production()
    yield server
    server.server.shutdown()


def gateway(runtime: DockerRuntime) -> str:
    """This host's own address on the run's network."""
    return str(runtime._subnet.network_address + 1)


def test_probe_refuses_a_redirect_to_production_and_production_hears_nothing(
    docker_runtime: Factory, staging_images: dict[str, str], production: Production
) -> None:
    runtime = docker_runtime()
    holder = Service(name="holder", kind="app", image=staging_images["base"], command=["sleep", "300"])
    runtime.start_apps([holder])  # the network exists: its gateway is production's address here
    production_url = f"http://{gateway(runtime)}:{production.port}/wp-admin/"
    # The host reaches production at that address (so following the redirect would have worked).
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", production_url],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.stdout == "200"
    production.log.clear()

    app = Service(
        name="app", kind="app", image=staging_images["base"], port=8080,
        command=["python3", "-c", REDIRECTOR, production_url],
        ready=Readiness(http="/", timeout="4s"),  # type: ignore[arg-type]
    )  # fmt: skip
    with pytest.raises(JobFailed, match=r"redirect to .* not followed: it leaves staging"):
        runtime.start_apps([app])
    assert production.log == [], "the probe followed the redirect to production"

    # Containers cannot open connections to this host's addresses either (root: the INPUT rule).
    if os.geteuid() == 0:
        assert runtime.warnings == []
        said = runtime.exec(holder, ["python3", "-c", CONNECT, gateway(runtime), str(production.port)])
        assert said.output.startswith("failed"), said.output
    else:
        assert any("CAN REACH SERVICES ON THIS HOST" in warning for warning in runtime.warnings)
    assert production.log == []


def test_outside_dns_fails_fast_and_staging_names_resolve(
    docker_runtime: Factory, staging_images: dict[str, str]
) -> None:
    runtime = docker_runtime()
    web = Service(name="web", kind="app", image=staging_images["base"], command=["sleep", "300"])
    peer = Service(name="peer", kind="app", image=staging_images["base"], command=["sleep", "300"])
    runtime.start_apps([web, peer])
    outside = runtime.exec(web, ["python3", "-c", LOOKUP, "api.wordpress.org"]).output.split()
    assert outside[0] == "failed" and float(outside[1]) < 1.0, outside
    inside = runtime.exec(web, ["python3", "-c", LOOKUP, "peer"]).output.split()
    assert inside[0] == runtime.endpoint(peer)[0] and float(inside[1]) < 1.0, inside


def input_rules() -> str:
    listed = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True, check=True)
    return listed.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the INPUT rule needs root")
def test_teardown_removes_the_input_rule(docker_runtime: Factory, staging_images: dict[str, str]) -> None:
    runtime = docker_runtime()
    idle = Service(name="idle", kind="app", image=staging_images["base"], command=["sleep", "300"])
    runtime.start_apps([idle])
    rules = input_rules()
    assert isolation.RULE_COMMENT + runtime.run_id in rules
    started = time.monotonic()
    runtime.down()
    rules = input_rules()
    assert isolation.RULE_COMMENT + runtime.run_id not in rules
    assert time.monotonic() - started < 60
