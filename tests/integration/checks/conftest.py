"""Real things for check tests: a small shop-like HTTP server and a runtime double.

`shop_server`: a ThreadingHTTPServer on 127.0.0.1 with /login (sets a session cookie), /cart and
/cart/items (need it), /checkout, /orders/<id>, redirects, a slow endpoint and a header echo.
`runtime`: a StagingRuntime whose `sql()` runs real queries (SQLite files, or psql against the
`postgres_cluster` fixture), whose `exec()` runs real processes and whose `endpoint()` points at
the shop server. No results are faked.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from backupctl.checks import CheckContext
from backupctl.drills.schema import Service
from backupctl.local_cluster.postgres import LocalPostgres
from backupctl.staging.base import ExecResult, SqlResult, StagingInfo

PASSWORD = "correct-horse-battery"  # what the shop accepts for drill@example.com
PRICES = {"sku-1": 999, "sku-2": 2500}


class ShopHandler(BaseHTTPRequestHandler):
    """A deliberately small shop API; sessions live in the server's `sessions` dict."""

    server: ShopServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # --------------------------------------------------------------------------- plumbing
    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return {key: values[0] for key, values in parse_qs(raw.decode()).items()}
        body: dict[str, Any] = json.loads(raw or b"{}")
        return body

    def _user(self) -> str | None:
        for item in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = item.strip().partition("=")
            if name == "session" and value in self.server.sessions:
                return self.server.sessions[value]
        return None

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    # --------------------------------------------------------------------------- routes
    def _route(self, method: str) -> None:
        path = self.path
        if method == "POST" and path in ("/login", "/form-login"):
            body = self._body()
            if body.get("email") == "drill@example.com" and body.get("password") == PASSWORD:
                token = secrets.token_hex(16)
                self.server.sessions[token] = body["email"]
                self.server.carts[token] = []
                cookie = f"session={token}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"
                return self._reply(200, {"user": {"email": body["email"], "id": 7}}, {"Set-Cookie": cookie})
            # A careless app echoing the attempted password: the check must mask it.
            return self._reply(401, {"error": "invalid credentials", "tried": body.get("password")})
        if path == "/health":
            return self._reply(200, {"status": "ok", "version": "1.2.3"})
        if path == "/slow":
            time.sleep(2)
            return self._reply(200, {"status": "late"})
        if path == "/headers":
            return self._reply(200, {name.lower(): value for name, value in self.headers.items()})
        if path == "/home":
            return self._reply(302, b"", {"Location": "/health"})
        if path == "/away":
            return self._reply(302, b"", {"Location": "http://198.51.100.7/stolen"})
        if path == "/form":  # an HTML login form with a per-request token, as WordPress' nonces
            page = b'<form><input type="hidden" name="_wpnonce" value="n0nce-7f3a"></form>'
            return self._reply(200, page, {"X-Powered-By": "PHP/8.2.7"})
        if path == "/big":  # a download larger than the bytes a check keeps of a body
            return self._reply(200, BIG_BODY, {"X-Content-Kind": "image/jpeg"})
        if path == "/html":
            return self._reply(200, b"<html><body>Welcome to the shop</body></html>")
        user = self._user()
        if user is None:
            return self._reply(401, {"error": "login required"})
        token = self.headers["Cookie"].split("session=")[1].split(";")[0]
        cart = self.server.carts[token]
        if method == "POST" and path == "/cart/items":
            body = self._body()
            cart.append({"sku": body["sku"], "quantity": body["quantity"]})
            return self._reply(201, {"items": len(cart)})
        if method == "GET" and path == "/cart":
            total = sum(PRICES[item["sku"]] * item["quantity"] for item in cart)
            return self._reply(200, {"items": cart, "total_cents": total})
        if method == "POST" and path == "/checkout":
            if not cart:
                return self._reply(409, {"error": "cart is empty"})
            order_id = len(self.server.orders) + 42
            total = sum(PRICES[item["sku"]] * item["quantity"] for item in cart)
            self.server.orders[order_id] = {"id": order_id, "status": "paid", "total": f"{total / 100:.2f}"}
            cart.clear()
            return self._reply(201, {"order_id": order_id, "payment": {"status": "captured"}})
        match = re.fullmatch(r"/orders/(\d+)", path)
        if method == "GET" and match and int(match[1]) in self.server.orders:
            return self._reply(200, self.server.orders[int(match[1])])
        return self._reply(404, {"error": f"no route {method} {path}"})


BIG_BODY = bytes(range(256)) * (3 * 4096 + 1)  # 3 MiB + 256 bytes


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ShopHandler)
        self.sessions: dict[str, str] = {}
        self.carts: dict[str, list[dict[str, Any]]] = {}
        self.orders: dict[int, dict[str, Any]] = {}

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def shop_server() -> Iterator[ShopServer]:
    server = ShopServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class RuntimeDouble:
    """A minimal real StagingRuntime: SQLite files (or a real PostgreSQL), real processes."""

    name = "test"
    run_id = "test-run"

    def __init__(self, directory: Path, http_port: int = 1, postgres: LocalPostgres | None = None) -> None:
        self.directory = directory
        self.http_port = http_port
        self.postgres = postgres

    def sql(self, service: Service, database: str, query: str) -> SqlResult:
        if service.kind == "postgres":
            assert self.postgres is not None
            output = self.postgres.psql(query, database)  # unaligned, tuples only: a|b per line
            return SqlResult([line.split("|") for line in output.splitlines()])
        with sqlite3.connect(self.directory / f"{database}.sqlite") as connection:
            rows = connection.execute(query).fetchall()
        # as psql -A prints them: text, NULL as an empty value
        return SqlResult([["" if value is None else str(value) for value in row] for row in rows])

    def exec(self, service: Service, argv: list[str]) -> ExecResult:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=60, check=False)
        return ExecResult(done.returncode, done.stdout)

    def endpoint(self, service: Service) -> tuple[str, int]:
        return "127.0.0.1", self.http_port

    # Lifecycle methods a drill would call; checks never do.
    def start_databases(self, services: list[Service]) -> None: ...
    def restore_database(self, service: Service, database: str, stream: Any) -> None: ...
    def install_files(self, service: Service, path: str, tree: Path) -> None: ...
    def start_apps(self, services: list[Service]) -> None: ...
    def info(self) -> StagingInfo:
        return StagingInfo(self.name, self.run_id)
    def down(self) -> None: ...


SERVICES = {
    "app": Service(name="app", kind="app", port=8080),
    "db": Service(name="db", kind="postgres"),
    "lite": Service(name="lite", kind="app"),
}


@pytest.fixture
def runtime(tmp_path: Path, shop_server: ShopServer) -> RuntimeDouble:
    return RuntimeDouble(tmp_path, shop_server.port)


@pytest.fixture
def context(runtime: RuntimeDouble) -> CheckContext:
    return CheckContext(runtime, SERVICES)
