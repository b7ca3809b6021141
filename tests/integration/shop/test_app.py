"""The sample shop web app (docker/shop/app.py) against a real PostgreSQL, as a restore drill sees it.

One seeded database (seed.py --scale 1, with the drill account) and one uploads tree (uploads.py) per
module; app.py runs as a subprocess on a free loopback port and is always terminated at the end. The
first tests are pure logic (password hashes compatible with seed.py, session tokens, upload paths).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest

from backupctl.local_cluster.postgres import LocalPostgres, free_port
from tests.fixtures.postgres import PgDatabase, new_database

SHOP = Path(__file__).resolve().parents[3] / "docker" / "shop"
# the interpreter for app.py: e.g. a venv with psycopg 3.1, the container's version
APP_PYTHON = os.environ.get("SHOP_APP_PYTHON", sys.executable)


def _load(name: str) -> ModuleType:
    """Import docker/shop/<name>.py from its path (it is not a package)."""
    spec = importlib.util.spec_from_file_location(f"shop_{name}_under_test", SHOP / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


seed = _load("seed")
app = _load("app")


def invariant_sql() -> str:
    """The invariant query exactly as docker/shop/README.md documents it for drills."""
    section = (SHOP / "README.md").read_text(encoding="utf-8").split("### The invariant", 1)[1]
    return section.split("```sql", 1)[1].split("```", 1)[0]


# ----------------------------------------------------------------------------------- pure logic
def test_seed_hashes_verify_in_app() -> None:
    stored = seed.hash_password("correct horse ✓")  # the seed's real parameters (200 000 iterations)
    assert app.verify_password(stored, "correct horse ✓")
    assert not app.verify_password(stored, "correct horse")
    quick = seed.hash_password("pw", iterations=1000, salt=b"0123456789abcdef")
    assert app.verify_password(quick, "pw") and not app.verify_password(quick, "PW")
    malformed = [
        "",
        "pbkdf2_sha256$1000$c2FsdA==",
        "md5$1000$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$0$c2FsdA==$aA==",
        "pbkdf2_sha256$99999999$c2FsdA==$aA==",
        "pbkdf2_sha256$1000$!!$aA==",
        "pbkdf2_sha256$1000$$aA==",
        "pbkdf2_sha256$\uff11\uff10$c2FsdA==$aA==",
        quick.replace("$1000$", "$1001$"),
    ]
    for bad in malformed:  # the two implementations agree on every malformed or altered hash
        assert app.verify_password(bad, "pw") is seed.verify_password(bad, "pw") is False, bad
    assert not app.verify_password(app.dummy_hash(), "")


def test_session_tokens() -> None:
    secret = b"s" * 32
    token = app.sign_session(secret, 42, now=1000.0)
    assert app.read_session(secret, token, now=1001.0) == 42
    assert app.read_session(b"other secret", token, now=1001.0) is None
    assert app.read_session(secret, token, now=1000.0 + app.SESSION_TTL + 1) is None  # expired
    user, expires, mac = token.split(".")
    assert app.read_session(secret, f"43.{expires}.{mac}", now=1001.0) is None  # another user
    assert app.read_session(secret, f"{user}.{int(expires) + 10**6}.{mac}", now=1001.0) is None
    for junk in ("", "42", "x.y.z", token + "A", token.replace(".", "..", 1)):
        assert app.read_session(secret, junk, now=1001.0) is None


def test_resolve_upload(tmp_path: Path) -> None:
    root, outside = tmp_path / "uploads", tmp_path / "outside"
    (root / "products").mkdir(parents=True)
    outside.mkdir()
    (root / "products" / "p1.jpg").write_bytes(b"jpg")
    (root / "a b.txt").write_text("x")
    (root / ".hidden.txt").write_text("x")
    (root / "cache.tmp").write_text("x")
    (outside / "secret.txt").write_text("secret")
    (root / "inside.jpg").symlink_to(root / "products" / "p1.jpg")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside)
    assert app.resolve_upload(root, "products/p1.jpg") == ((root / "products/p1.jpg").resolve(), "image/jpeg")
    assert app.resolve_upload(root, "a%20b.txt") == (
        (root / "a b.txt").resolve(),
        "text/plain; charset=utf-8",
    )
    assert app.resolve_upload(root, "inside.jpg") is not None  # a symlink that stays inside is fine
    for bad in (
        "../outside/secret.txt",
        "%2e%2e/outside/secret.txt",
        "..%2foutside%2fsecret.txt",
        "/etc/hostname.txt",
        "%2Fetc%2Fhostname.txt",
        "products/../products/p1.jpg",
        "./a%20b.txt",
        "products//p1.jpg",
        ".hidden.txt",
        "cache.tmp",
        "escape.txt",
        "escape_dir/secret.txt",
        "products",
        "missing.jpg",
        "%c0%ae%c0%ae/x.txt",
        "a%00.txt",
        "..%5coutside%5csecret.txt",
    ):
        assert app.resolve_upload(root, bad) is None, bad
    assert app.resolve_upload(tmp_path / "no-such-root", "products/p1.jpg") is None


# ----------------------------------------------------------------------------------- HTTP helpers
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)


@dataclass
class Client:
    """A tiny HTTP client that keeps the shop_session cookie and sends paths verbatim."""

    port: int
    cookie: str | None = None

    def request(
        self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None
    ) -> Response:
        headers = {"Cookie": f"shop_session={self.cookie}"} if self.cookie else {}
        data = None
        if form is not None:
            data = "&".join(f"{quote(k)}={quote(v)}" for k, v in form.items()).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=data, headers=headers)
            answer = conn.getresponse()
            response = Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
        finally:
            conn.close()
        cookie = response.headers.get("set-cookie", "")
        if cookie.startswith("shop_session="):
            self.cookie = cookie.split(";", 1)[0].split("=", 1)[1] or None
        assert b"Traceback" not in response.body
        return response

    def login(self, email: str, password: str) -> Response:
        return self.request("POST", "/login", {"email": email, "password": password})


@contextmanager
def running_app(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """app.py as a subprocess on a free loopback port; always terminated (SIGTERM, then SIGKILL)."""
    port = free_port()
    full_env = {**os.environ, **env, "SHOP_BIND": "127.0.0.1", "SHOP_PORT": str(port)}
    full_env.pop("PGPASSWORD", None)  # the app must use SHOP_DB_PASSWORD
    with open(log, "ab") as out:
        proc = subprocess.Popen([APP_PYTHON, str(SHOP / "app.py")], env=full_env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 15
        while True:  # up when /health answers at all (200 or 503)
            assert proc.poll() is None, f"app.py exited with {proc.returncode}: {log.read_text()}"
            try:
                Client(port).request("GET", "/health")
                break
            except OSError:
                assert time.monotonic() < deadline, f"app.py did not start: {log.read_text()}"
                time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Shop:
    db: PgDatabase
    uploads: Path
    port: int
    env: dict[str, str]
    drill_password: str
    demo_password: str
    logs: list[Path] = field(default_factory=list)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.db.connect() as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shop(
    postgres_cluster: LocalPostgres, pg_role: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    """A seeded shop database, its uploads tree and a running app.py (with a fixed session secret)."""
    tmp = tmp_path_factory.mktemp("shop")
    db = new_database(postgres_cluster, pg_role, prefix="shop")
    drill_password, demo_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    seed_env = {
        **os.environ,
        "PGPASSWORD": db.password,
        "SHOP_DRILL_PASSWORD": drill_password,
        "SHOP_DEMO_PASSWORD": demo_password,
    }
    for argv in (
        [str(SHOP / "seed.py"), "--dsn", db.url, "--scale", "1"],
        [str(SHOP / "uploads.py"), str(tmp / "up")],
    ):
        done = subprocess.run(
            [sys.executable, *argv], env=seed_env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    env = {
        "SHOP_DB_URL": db.url,
        "SHOP_DB_PASSWORD": db.password,
        "SHOP_UPLOADS_DIR": str(tmp / "up"),
        "SHOP_SESSION_SECRET": secrets.token_hex(32),
    }
    try:
        with running_app(env, tmp / "app.log") as (_, port):
            yield Shop(db, tmp / "up", port, env, drill_password, demo_password, [tmp / "app.log"])
    finally:
        postgres_cluster.drop_database(db.name)


# ----------------------------------------------------------------------------------- against the app
def test_health_and_products(shop: Shop) -> None:
    client = Client(shop.port)
    assert client.request("GET", "/health").json == {"status": "ok", "db": "ok", "products": 50}
    products = client.request("GET", "/products?limit=3").json["products"]
    assert [p["id"] for p in products] == [1, 2, 3]
    assert set(products[0]) == {"id", "sku", "name", "price_cents", "stock", "image_path"}
    for bad in ("0", "101", "x", "-1"):
        assert client.request("GET", f"/products?limit={bad}").status == 400


def test_login_rejects_bad_credentials(shop: Shop) -> None:
    client = Client(shop.port)
    wrong = client.login("drill@shop.example", "not-the-password")
    unknown = client.login("nobody@shop.example", shop.drill_password)
    bulk = client.login("ada.lovelace.1@shop.example", "")  # bulk users' hashes match no password
    for answer in (wrong, unknown, bulk):
        assert (answer.status, answer.json) == (401, {"error": "invalid credentials"})
        assert "set-cookie" not in answer.headers
    assert client.request("POST", "/login", {"email": "drill@shop.example"}).status == 400
    assert client.request("POST", "/login", [1, 2]).status == 400
    assert client.request("GET", "/me").status == 401
    client.cookie = app.sign_session(b"a guessed secret", 1)
    assert client.request("GET", "/me").status == 401
    assert client.request("GET", "/cart").status == 401


def test_drill_journey_login_cart_checkout(shop: Shop) -> None:
    client = Client(shop.port)
    login = client.login(" Drill@Shop.Example ", shop.drill_password)
    assert login.status == 200 and login.json["email"] == "drill@shop.example"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("shop_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.request("GET", "/me").json == {
        "user_id": login.json["user_id"],
        "email": "drill@shop.example",
        "full_name": "Restore Drill",
    }

    products = [p for p in client.request("GET", "/products?limit=50").json["products"] if p["stock"] >= 3]
    first, second, third = products[:3]
    assert client.request("POST", "/cart/items", {"product_id": first["id"], "quantity": 2}).status == 200
    assert client.request("POST", "/cart/items", {"product_id": second["id"], "quantity": 1}).status == 200
    cart = client.request("POST", "/cart/items", {"product_id": second["id"], "quantity": 2}).json  # adds up
    assert client.request("POST", "/cart/items", {"product_id": 999_999, "quantity": 1}).status == 404
    for quantity in (0, -1, "x", 1.5, True):
        assert (
            client.request("POST", "/cart/items", {"product_id": first["id"], "quantity": quantity}).status
            == 400
        )
    expected = first["price_cents"] * 2 + second["price_cents"] * 3
    assert cart["total_cents"] == expected
    assert [(i["product_id"], i["quantity"], i["line_total_cents"]) for i in cart["items"]] == sorted(
        [(first["id"], 2, first["price_cents"] * 2), (second["id"], 3, second["price_cents"] * 3)]
    )
    client.request("POST", "/cart/items", {"product_id": third["id"], "quantity": 1})
    assert client.request("DELETE", f"/cart/items/{third['id']}").json["total_cents"] == expected
    assert client.request("DELETE", f"/cart/items/{third['id']}").status == 404
    assert client.request("GET", "/cart").json == cart

    stock = dict(shop.sql("SELECT id, stock FROM products WHERE id IN (%s, %s)", (first["id"], second["id"])))
    orders_before = shop.sql("SELECT count(*) FROM orders")[0][0]
    assert client.request("POST", "/checkout", {"payment_method": "card"}).status == 400
    checkout = client.request("POST", "/checkout", {"payment_method": "sandbox"})
    assert checkout.status == 201, checkout.body
    order = checkout.json
    assert order["status"] == "paid" and order["total_cents"] == expected
    payment = order["payment"]
    assert payment["status"] == "captured" and payment["amount_cents"] == expected
    assert payment["provider"] == "sandbox" and payment["provider_ref"].startswith("sbx_")
    assert checkout.headers["location"] == f"/orders/{order['order_id']}"
    assert client.request("GET", f"/orders/{order['order_id']}").json == order

    assert shop.sql("SELECT count(*) FROM orders")[0][0] == orders_before + 1
    assert dict(
        shop.sql("SELECT id, stock FROM products WHERE id IN (%s, %s)", (first["id"], second["id"]))
    ) == {first["id"]: stock[first["id"]] - 2, second["id"]: stock[second["id"]] - 3}
    assert shop.sql("SELECT status FROM carts WHERE user_id = %s", (login.json["user_id"],)) == [
        ("checked_out",)
    ]
    assert client.request("GET", "/cart").json == {"items": [], "total_cents": 0}
    assert client.request("POST", "/checkout", {"payment_method": "sandbox"}).status == 400  # empty cart
    assert shop.sql(invariant_sql()) == []
    assert shop.sql("SELECT * FROM shop_invariant_violations") == []

    other = Client(shop.port)  # someone else's order is not found, not forbidden
    assert other.login("demo@shop.example", shop.demo_password).status == 200
    assert other.request("GET", f"/orders/{order['order_id']}").status == 404


def test_checkout_refuses_insufficient_stock_and_races(shop: Shop) -> None:
    client = Client(shop.port)
    answer = client.request(
        "POST", "/login", form={"email": "demo@shop.example", "password": shop.demo_password}
    )
    assert answer.status == 200
    shop.sql("UPDATE products SET stock = 1 WHERE id = 7 RETURNING id")
    client.request("POST", "/cart/items", form={"product_id": "7", "quantity": "2"})
    orders = shop.sql("SELECT count(*) FROM orders")[0][0]
    refused = client.request("POST", "/checkout", {"payment_method": "sandbox"})
    assert refused.status == 409
    assert refused.json == {
        "error": "insufficient stock",
        "items": [{"product_id": 7, "quantity": 2, "stock": 1}],
    }
    assert shop.sql("SELECT count(*) FROM orders")[0][0] == orders  # nothing of the checkout remains
    assert shop.sql("SELECT stock FROM products WHERE id = 7") == [(1,)]
    assert client.request("GET", "/cart").json["items"][0]["quantity"] == 2

    shop.sql("UPDATE products SET stock = 100 WHERE id = 7 RETURNING id")
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                client.request("POST", "/checkout", {"payment_method": "sandbox"}).status
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201, 400, 400, 400]  # one cart, one order: the others find it empty
    assert shop.sql("SELECT stock FROM products WHERE id = 7") == [(98,)]
    assert shop.sql(invariant_sql()) == []


def test_uploads(shop: Shop) -> None:
    client = Client(shop.port)
    image = client.request("GET", "/uploads/products/p000001.jpg")
    assert image.status == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.body == (shop.uploads / "products" / "p000001.jpg").read_bytes()
    for path in client.request("GET", "/products?limit=5").json["products"]:
        assert client.request("GET", f"/uploads/{path['image_path']}").status == 200
    text = client.request("GET", "/uploads/" + quote("pages/größentabelle.txt"))
    assert text.status == 200 and text.headers["content-type"] == "text/plain; charset=utf-8"
    assert client.request("GET", "/uploads/pages/about%20us.txt").status == 200

    outside = shop.uploads.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("root:x:0:0")
    (shop.uploads / "escape.txt").symlink_to(outside / "secret.txt")
    (shop.uploads / "escape_dir").symlink_to(outside)
    for path in (
        "/uploads/../etc/passwd",
        "/uploads/..%2f..%2f..%2fetc%2fpasswd",
        "/uploads/%2e%2e/%2e%2e/etc/passwd",
        "/uploads/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/uploads//etc/passwd",
        "/uploads/%2Fetc%2Fpasswd",
        "/uploads/products/../../../../etc/passwd",
        "/uploads/..%252f..%252fetc%252fpasswd",
        "/uploads/%c0%ae%c0%ae/etc/passwd",
        "/uploads/products/p000001.jpg%00.txt",
        "/uploads/escape.txt",
        "/uploads/escape_dir/secret.txt",
        "/uploads/../outside/secret.txt",
        "/uploads/cache/tmp-0001.tmp",
        "/uploads/products/p999999.jpg",
        "/uploads/",
    ):
        answer = client.request("GET", path)
        assert answer.status in (400, 404), path
        assert b"root:" not in answer.body


def raw_request(port: int, data: bytes) -> tuple[int, Any]:
    """Send bytes as they are (malformed requests); the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_errors_are_json(shop: Shop) -> None:
    client = Client(shop.port)
    nope = client.request("GET", "/nope")
    assert (nope.status, nope.json) == (404, {"error": "not found"})
    assert client.request("POST", "/health").status == 405
    assert client.request("PATCH", "/cart").json == {"error": "method not allowed"}
    login = b"POST /login HTTP/1.0\r\nContent-Type: application/json\r\n"
    assert raw_request(shop.port, login + b"Content-Length: 9\r\n\r\n{not json") == (
        400,
        {"error": "invalid request body"},
    )
    assert raw_request(shop.port, login + b"Content-Length: 1000000\r\n\r\n")[0] == 413
    curl_d = b"POST /login HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"  # curl -d '{..}'
    body = b'{"email": "drill@shop.example", "password": "wrong"}'
    assert raw_request(shop.port, curl_d + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))[0] == 401
    assert raw_request(shop.port, b"BREW /pot HTTP/1.0\r\n\r\n")[0] == 501
    head = client.request("HEAD", "/uploads/products/p000001.jpg")  # probes like wget --spider
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == str((shop.uploads / "products" / "p000001.jpg").stat().st_size)
    assert raw_request(shop.port, b"GET / x HTTP/1.0\r\n\r\n") == (
        400,
        {"error": "Bad request syntax ('GET / x HTTP/1.0')"},
    )


def test_session_survives_restart_and_sigterm_is_graceful(shop: Shop, tmp_path: Path) -> None:
    client = Client(shop.port)
    assert client.login("drill@shop.example", shop.drill_password).status == 200
    shop.logs.append(tmp_path / "second.log")
    with running_app(shop.env, tmp_path / "second.log") as (proc, port):  # same secret, new process
        assert Client(port, client.cookie).request("GET", "/me").json["email"] == "drill@shop.example"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert "stopped" in (tmp_path / "second.log").read_text()


def test_health_503_when_database_unreachable_or_empty(
    shop: Shop, postgres_cluster: LocalPostgres, pg_role: tuple[str, str], tmp_path: Path
) -> None:
    unreachable = {
        **shop.env,
        "SHOP_DB_URL": shop.db.url.replace(f":{postgres_cluster.port}/", f":{free_port()}/"),
    }
    shop.logs.append(tmp_path / "down.log")
    with running_app(unreachable, tmp_path / "down.log") as (proc, port):
        client = Client(port)
        health = client.request("GET", "/health")
        assert health.status == 503
        assert health.json["status"] == "unavailable" and health.json["db"] == "unreachable"
        assert client.request("GET", "/products").json == {"error": "database unavailable"}
        assert client.login("drill@shop.example", shop.drill_password).status == 503
        assert client.request("GET", "/uploads/products/p000001.jpg").status == 200  # files need no database
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

    empty = new_database(postgres_cluster, pg_role, prefix="shop_empty")  # a restore that lost the schema
    try:
        shop.logs.append(tmp_path / "empty.log")
        with running_app({**shop.env, "SHOP_DB_URL": empty.url}, tmp_path / "empty.log") as (_, port):
            health = Client(port).request("GET", "/health")
            assert (health.status, health.json["db"]) == (503, "error")
            assert "UndefinedTable" in health.json["reason"]
    finally:
        postgres_cluster.drop_database(empty.name)


def test_logs_hold_no_passwords(shop: Shop) -> None:
    """Runs last: every app log of the module, with logins, failures and outages in it."""
    for log in shop.logs:
        text = log.read_text()
        assert "listening on http://127.0.0.1" in text
        for secret in (
            shop.db.password,
            shop.drill_password,
            shop.demo_password,
            shop.env["SHOP_SESSION_SECRET"],
        ):
            assert secret not in text, log
