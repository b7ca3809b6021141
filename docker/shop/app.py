#!/usr/bin/env python3
"""The sample shop's web app: a JSON API over the shop database and uploads, for restore drills' smoke checks.

Env: SHOP_DB_URL (required, no password in it), SHOP_DB_PASSWORD, SHOP_UPLOADS_DIR (/srv/uploads), SHOP_PORT
(8080), SHOP_BIND (0.0.0.0), SHOP_SESSION_SECRET (random per process if unset). Endpoints and examples:
docker/shop/README.md, "Web app". Python 3.11 stdlib + psycopg 3 only; no backupctl import.

Sessions are stateless: cookie ``shop_session`` = ``<user_id>.<expires>.<HMAC-SHA256>``, valid in any process
with the same secret (so a restart keeps them). Each request has its own connection and transaction: no
pool to go stale when a drill restarts the database. SIGTERM finishes the requests in flight, exits 0.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

log = logging.getLogger("shop")

SESSION_COOKIE, SESSION_TTL = "shop_session", 24 * 3600
MAX_BODY = 64 * 1024
MAX_QUANTITY = 1000  # per cart line: keeps order totals far below the int4 limit of orders.total_cents
INT4_MAX, INT8_MAX = 2**31 - 1, 2**63 - 1
# the upload types served; anything else (cache/*.tmp, ...) is a 404
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".txt": "text/plain; charset=utf-8", ".pdf": "application/pdf"}

# --- Password hashes: seed.py's verify_password re-implemented (app.py runs alone in its container, so
# it cannot import seed.py; tests/integration/shop/test_app.py checks that the two agree).
HASH_ALGORITHM, HASH_ITERATIONS, _MAX_ITERATIONS = "pbkdf2_sha256", 200_000, 10_000_000
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def verify_password(stored: str, password: str) -> bool:
    """True when ``password`` matches ``pbkdf2_sha256$<iterations>$<salt_b64>$<hash_b64>``.

    False for a wrong password or a malformed hash, never raises; the comparison is constant-time.
    """
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != HASH_ALGORITHM or not (parts[1].isascii() and parts[1].isdigit()):
        return False
    if not 1 <= int(parts[1]) <= _MAX_ITERATIONS or not all(_B64.fullmatch(p) for p in parts[2:]):
        return False
    try:
        salt, expected = (base64.b64decode(p, validate=True) for p in parts[2:])
    except (binascii.Error, ValueError):
        return False
    if not salt or not expected:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, int(parts[1]), len(expected))
    return hmac.compare_digest(actual, expected)


def dummy_hash() -> str:
    """A well-formed hash nothing matches: an unknown e-mail costs one PBKDF2 too (no timing oracle)."""
    salt, digest = (base64.b64encode(secrets.token_bytes(n)).decode() for n in (16, 32))
    return f"{HASH_ALGORITHM}${HASH_ITERATIONS}${salt}${digest}"


# --- Sessions: <user_id>.<expires, unix time>.<base64url HMAC-SHA256(secret, "shop_session:<first two>")>
_TOKEN = re.compile(r"([1-9][0-9]{0,18})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, f"{SESSION_COOKIE}:{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_session(secret: bytes, user_id: int, now: float | None = None) -> str:
    """A session token for ``user_id``, valid for SESSION_TTL seconds."""
    payload = f"{user_id}.{int((time.time() if now is None else now) + SESSION_TTL)}"
    return f"{payload}.{_mac(secret, payload)}"


def read_session(secret: bytes, token: str, now: float | None = None) -> int | None:
    """The user id of a valid, unexpired token; None otherwise."""
    m = _TOKEN.fullmatch(token)
    if m is None or not hmac.compare_digest(_mac(secret, f"{m[1]}.{m[2]}"), m[3]):
        return None
    return int(m[1]) if int(m[2]) >= (time.time() if now is None else now) else None


# --- Configuration and uploads
@dataclass(frozen=True)
class Config:
    """Settings from the environment (see the module docstring)."""

    db_url: str
    db_password: str | None
    uploads_dir: Path
    bind: str
    port: int
    session_secret: bytes

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        """Read the SHOP_* variables; ValueError (whose message holds no secret) when one is invalid."""
        try:
            conninfo_to_dict(env["SHOP_DB_URL"])
        except (KeyError, psycopg.Error):
            raise ValueError("SHOP_DB_URL must be a libpq URL: postgresql://user@host:port/db") from None
        port = env.get("SHOP_PORT", "8080")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"SHOP_PORT must be 1..65535, got {port!r}")
        secret = env.get("SHOP_SESSION_SECRET", "").encode() or secrets.token_bytes(32)
        return cls(env["SHOP_DB_URL"], env.get("SHOP_DB_PASSWORD") or None,
                   Path(env.get("SHOP_UPLOADS_DIR", "/srv/uploads")), env.get("SHOP_BIND", "0.0.0.0"),
                   int(port), secret)

    def masked_db(self) -> str:
        """Where the database is, without any password (for the log)."""
        d = conninfo_to_dict(self.db_url)
        return f"postgresql://{d.get('user')}@{d.get('host')}:{d.get('port')}/{d.get('dbname')}"


def resolve_upload(root: Path, raw: str) -> tuple[Path, str] | None:
    """(file, content type) for the URL path ``raw`` below ``root``, or None when it must not be served.

    Refused: undecodable escapes, empty or dot segments (``..``, hidden files), backslashes, NULs, unknown
    extensions, and anything whose real path (symlinks resolved) is not a regular file inside root.
    """
    try:
        parts = unquote(raw, errors="strict").split("/")  # %2e%2e and %2f are decoded before the check
    except UnicodeDecodeError:
        return None
    if any(not p or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    content_type = CONTENT_TYPES.get(os.path.splitext(parts[-1])[1].lower())
    try:
        base = root.resolve(strict=True)
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if content_type is None or not target.is_relative_to(base) or not target.is_file():
        return None
    return target, content_type


# --- HTTP
class ApiError(Exception):
    """An error answer: HTTP status, a message for the client, optional extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


ROUTES = [(method, re.compile(pattern), name) for method, pattern, name in (
    ("GET", r"/health", "health"), ("POST", r"/login", "login"), ("GET", r"/me", "me"),
    ("GET", r"/products", "products"), ("GET", r"/cart", "cart"), ("POST", r"/cart/items", "add_item"),
    ("DELETE", r"/cart/items/([0-9]{1,19})", "remove_item"), ("POST", r"/checkout", "checkout"),
    ("GET", r"/orders/([0-9]{1,19})", "order"), ("GET", r"/uploads/(.+)", "upload"))]

CART_SQL = """
SELECT ci.product_id, p.sku, p.name, ci.quantity, p.price_cents AS unit_price_cents,
       ci.quantity::bigint * p.price_cents AS line_total_cents,
       (sum(ci.quantity::bigint * p.price_cents) OVER ())::bigint AS total_cents
  FROM carts c JOIN cart_items ci ON ci.cart_id = c.id JOIN products p ON p.id = ci.product_id
 WHERE c.user_id = %s AND c.status = 'open' ORDER BY ci.product_id"""

Conn = psycopg.Connection[dict[str, Any]]


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):  # form fields are strings
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{key} must be an integer")
    return value


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


class ShopServer(ThreadingHTTPServer):
    """The HTTP server, holding the configuration. server_close() waits for the requests in flight."""

    daemon_threads, block_on_close = False, True

    def __init__(self, config: Config) -> None:
        self.config, self.dummy = config, dummy_hash()
        if ":" in config.bind:  # SHOP_BIND=:: listens on IPv6 (and IPv4, where the system maps it)
            self.address_family = socket.AF_INET6
        super().__init__((config.bind, config.port), ShopHandler)

    def connect(self) -> Conn:
        """A new connection; the caller's ``with`` block is one transaction, committed at its end."""
        # the timeouts turn a hung database into a 503 instead of a hung request
        return psycopg.connect(self.config.db_url, password=self.config.db_password, row_factory=dict_row,
                               connect_timeout=5, application_name="shop-app",
                               options="-c statement_timeout=15000 -c lock_timeout=5000")


class ShopHandler(BaseHTTPRequestHandler):
    """One request (HTTP/1.0: one per connection): route, run the handler, answer JSON or a file."""

    server_version, sys_version = "shop/1", "python"
    timeout = 10  # seconds: a stalled client cannot hold a thread (and so a graceful shutdown) for long
    server: ShopServer
    _responded, _cookie = False, ""

    def do_GET(self) -> None:
        """Every method goes through the route table (http.server looks up do_<METHOD>)."""
        self._dispatch(self.command)

    do_HEAD = do_POST = do_DELETE = do_PUT = do_PATCH = do_GET  # HEAD: for probes such as wget --spider

    def log_message(self, format: str, *args: Any) -> None:
        """Access log on stderr: request lines only, never bodies (which hold passwords)."""
        log.info("%s %s", self.client_address[0], format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request, unknown method) as JSON too."""
        self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.split("#", 1)[0].partition("?")
        status, body = 500, {"error": "internal error"}
        try:
            for route_method, pattern, name in ROUTES:
                m = pattern.fullmatch(path)
                if m and route_method == ("GET" if method == "HEAD" else method):
                    result = getattr(self, f"h_{name}")(query, *m.groups())
                    if result is not None:
                        self._send_json(*result)
                    return
            status, body = (405, {"error": "method not allowed"}) if any(
                p.fullmatch(path) for _, p, _ in ROUTES) else (404, {"error": "not found"})
        except ApiError as e:
            status, body = e.status, {"error": e.message, **e.extra}
        except psycopg.OperationalError as e:  # unreachable, restarted, timed out
            log.warning("%s %s: database unavailable: %s", method, path, _one_line(e))
            status, body = 503, {"error": "database unavailable"}
        except (BrokenPipeError, ConnectionResetError):
            log.info("%s %s: the client went away", method, path)
            return
        except psycopg.Error as e:
            log.error("%s %s: database error: %s: %s", method, path, type(e).__name__, _one_line(e))
            body = {"error": "database error"}
        except Exception:
            log.exception("%s %s: unhandled error", method, path)  # the traceback stays in the log
        if not self._responded:  # once the headers are out, a failure can only close the connection
            self._send_json(status, body)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, default=lambda value: value.isoformat()).encode()  # created_at columns
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                           "Cache-Control": "no-store", **(headers or {})}.items():
            self.send_header(key, value)
        if self._cookie:
            self.send_header("Set-Cookie", self._cookie)
        self.end_headers()
        self._responded = True
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        """The request body: a JSON object, or an urlencoded form (the last value of each field)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "invalid Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise ApiError(413, "request body too large")
        raw = self.rfile.read(length)
        try:
            form = self.headers.get_content_type() == "application/x-www-form-urlencoded"
            if form and not raw.lstrip().startswith(b"{"):  # `curl -d '{...}'` labels JSON as a form
                return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()}
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ApiError(400, "invalid request body") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object")
        return data

    def _user_id(self) -> int:
        """The logged-in user's id from the signed session cookie; 401 without a valid one."""
        for item in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = item.strip().partition("=")
            user_id = read_session(self.server.config.session_secret, value) if name == SESSION_COOKIE else 0
            if user_id:
                return user_id
        raise ApiError(401, "login required")

    # --- handlers: (status, JSON[, headers]), or None when they answered themselves
    def h_health(self, query: str) -> tuple[int, Any]:
        try:
            with self.server.connect() as conn:
                row = conn.execute("SELECT count(*) AS n FROM products").fetchone()
        except psycopg.OperationalError as e:
            log.warning("health: database unreachable: %s", _one_line(e))
            return 503, {"status": "unavailable", "db": "unreachable", "reason": _one_line(e)}
        except psycopg.Error as e:  # reachable, but e.g. the restore lost the products table
            reason = f"{type(e).__name__} (SQLSTATE {e.sqlstate})"
            log.warning("health: database error: %s: %s", reason, _one_line(e))
            return 503, {"status": "unavailable", "db": "error", "reason": reason}
        return 200, {"status": "ok", "db": "ok", "products": row["n"] if row else 0}

    def h_login(self, query: str) -> tuple[int, Any]:
        data = self._body()
        email, password = data.get("email"), data.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise ApiError(400, "email and password are required")
        with self.server.connect() as conn:
            user = conn.execute("SELECT id, email, password_hash FROM users WHERE email = %s",
                                (email.strip().lower(),)).fetchone()
        # PBKDF2 runs with the connection closed, and for unknown users too: same time, same answer
        if not verify_password(user["password_hash"] if user else self.server.dummy, password) or not user:
            raise ApiError(401, "invalid credentials")
        token = sign_session(self.server.config.session_secret, user["id"])
        # no Secure flag: drills talk plain HTTP to a network-isolated staging container
        self._cookie = f"{SESSION_COOKIE}={token}; Path=/; Max-Age={SESSION_TTL}; HttpOnly; SameSite=Lax"
        return 200, {"user_id": user["id"], "email": user["email"]}

    def h_me(self, query: str) -> tuple[int, Any]:
        user_id = self._user_id()
        with self.server.connect() as conn:
            user = conn.execute("SELECT id AS user_id, email, full_name FROM users WHERE id = %s",
                                (user_id,)).fetchone()
        if user is None:  # e.g. a session from before a restore that lacks this user
            raise ApiError(401, "login required")
        return 200, user

    def h_products(self, query: str) -> tuple[int, Any]:
        limit = parse_qs(query).get("limit", ["10"])[-1]
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise ApiError(400, "limit must be 1..100")
        with self.server.connect() as conn:
            rows = conn.execute("SELECT id, sku, name, price_cents, stock, image_path FROM products "
                                "ORDER BY id LIMIT %s", (int(limit),)).fetchall()
        return 200, {"products": rows}

    def h_cart(self, query: str) -> tuple[int, Any]:
        user_id = self._user_id()
        with self.server.connect() as conn:
            return 200, self._cart(conn, user_id)

    def h_add_item(self, query: str) -> tuple[int, Any]:
        user_id, data = self._user_id(), self._body()
        product_id, quantity = _int_field(data, "product_id"), _int_field(data, "quantity")
        if not 0 < quantity <= MAX_QUANTITY:
            raise ApiError(400, f"quantity must be 1..{MAX_QUANTITY}")
        with self.server.connect() as conn:
            if not 0 < product_id <= INT8_MAX or not conn.execute(
                    "SELECT 1 FROM products WHERE id = %s", (product_id,)).fetchone():
                raise ApiError(404, "unknown product")
            added = conn.execute(  # adding a product again adds to its quantity
                "INSERT INTO cart_items (cart_id, product_id, quantity) VALUES (%s, %s, %s) "
                "ON CONFLICT (cart_id, product_id) DO UPDATE SET quantity = cart_items.quantity + "
                "EXCLUDED.quantity WHERE cart_items.quantity + EXCLUDED.quantity <= %s RETURNING 1",
                (self._lock_cart(conn, user_id, create=True), product_id, quantity, MAX_QUANTITY)).fetchone()
            if not added:
                raise ApiError(400, f"quantity must be 1..{MAX_QUANTITY}")
            return 200, self._cart(conn, user_id)

    def h_remove_item(self, query: str, product_id: str) -> tuple[int, Any]:
        user_id = self._user_id()
        with self.server.connect() as conn:
            cart_id = self._lock_cart(conn, user_id, create=False)
            if cart_id is None or int(product_id) > INT8_MAX or not conn.execute(
                    "DELETE FROM cart_items WHERE cart_id = %s AND product_id = %s RETURNING 1",
                    (cart_id, int(product_id))).fetchone():
                raise ApiError(404, "product not in cart")
            return 200, self._cart(conn, user_id)

    def h_checkout(self, query: str) -> tuple[int, Any, dict[str, str]]:
        """Order, order items, stock, one captured sandbox payment and the cart's status: one transaction."""
        user_id, data = self._user_id(), self._body()
        if data.get("payment_method") != "sandbox":
            raise ApiError(400, "payment_method must be 'sandbox'")
        with self.server.connect() as conn:  # commits at the end of the block, rolls back on any error
            cart_id = self._lock_cart(conn, user_id, create=False)
            # the products are locked in id order: concurrent checkouts can neither oversell nor deadlock
            lines = [] if cart_id is None else conn.execute(
                "SELECT ci.product_id, ci.quantity, p.price_cents, p.stock FROM cart_items ci JOIN products "
                "p ON p.id = ci.product_id WHERE ci.cart_id = %s ORDER BY p.id FOR NO KEY UPDATE OF p",
                (cart_id,)).fetchall()
            if not lines:
                raise ApiError(400, "cart is empty")
            short = [{"product_id": r["product_id"], "quantity": r["quantity"], "stock": r["stock"]}
                     for r in lines if r["quantity"] > r["stock"]]
            if short:
                raise ApiError(409, "insufficient stock", items=short)
            total = sum(r["quantity"] * r["price_cents"] for r in lines)
            if total > INT4_MAX:
                raise ApiError(400, "order total too large")
            order = conn.execute("INSERT INTO orders (user_id, total_cents, status) VALUES (%s, %s, 'paid') "
                                 "RETURNING id", (user_id, total)).fetchone()
            assert order is not None
            params = {"order": order["id"], "cart": cart_id, "total": total,
                      "ref": f"sbx_{secrets.token_hex(16)}"}
            # the prices are those of the rows locked above, so the items add up to `total` exactly
            conn.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents) "
                         "SELECT %(order)s, ci.product_id, ci.quantity, p.price_cents FROM cart_items ci "
                         "JOIN products p ON p.id = ci.product_id WHERE ci.cart_id = %(cart)s", params)
            conn.execute("UPDATE products p SET stock = p.stock - ci.quantity FROM cart_items ci "
                         "WHERE ci.cart_id = %(cart)s AND p.id = ci.product_id", params)
            # The sandbox provider IS this INSERT: there is no payment gateway code in this app at all,
            # so a checkout never sends anything over the network. The charge is captured at once.
            conn.execute("INSERT INTO payments (order_id, amount_cents, provider, status, provider_ref) "
                         "VALUES (%(order)s, %(total)s, 'sandbox', 'captured', %(ref)s)", params)
            conn.execute("UPDATE carts SET status = 'checked_out' WHERE id = %(cart)s", params)
            body = self._order(conn, order["id"], user_id)
        log.info("checkout: user %s, order %s, %s cents, sandbox payment captured",
                 user_id, order["id"], total)
        return 201, body, {"Location": f"/orders/{order['id']}"}

    def h_order(self, query: str, order_id: str) -> tuple[int, Any]:
        user_id = self._user_id()
        with self.server.connect() as conn:
            order = self._order(conn, int(order_id), user_id) if int(order_id) <= INT8_MAX else None
        if order is None:  # someone else's order looks exactly like a missing one
            raise ApiError(404, "order not found")
        return 200, order

    def h_upload(self, query: str, raw: str) -> None:
        found = resolve_upload(self.server.config.uploads_dir, raw)
        if found is None:
            raise ApiError(404, "not found")
        try:  # in case the file changed since resolve_upload(): follow no symlink, never block on a FIFO
            fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise ApiError(404, "not found") from None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd)
            if not stat.S_ISREG(size.st_mode):
                raise ApiError(404, "not found")
            self.send_response(200)
            for key, value in (("Content-Type", found[1]), ("Content-Length", str(size.st_size)),
                               ("X-Content-Type-Options", "nosniff")):
                self.send_header(key, value)
            self.end_headers()
            self._responded = True
            if self.command != "HEAD":
                shutil.copyfileobj(f, self.wfile, 64 * 1024)

    # --- queries
    @staticmethod
    def _lock_cart(conn: Conn, user_id: int, *, create: bool) -> Any:
        """Id of the user's open cart (None if none and not ``create``), row-locked: all cart changes and
        checkouts serialise on it. The unique index carts_one_open_per_user keeps racing creators to one."""
        if create:
            try:
                conn.execute("INSERT INTO carts (user_id) VALUES (%s) "
                             "ON CONFLICT (user_id) WHERE status = 'open' DO NOTHING", (user_id,))
            except psycopg.errors.ForeignKeyViolation:  # the session's user no longer exists
                raise ApiError(401, "login required") from None
        row = conn.execute("SELECT id FROM carts WHERE user_id = %s AND status = 'open' FOR UPDATE",
                           (user_id,)).fetchone()
        if row is None and create:  # a concurrent checkout closed it between the INSERT and the SELECT
            raise ApiError(409, "the cart changed concurrently, retry")
        return row["id"] if row else None

    @staticmethod
    def _cart(conn: Conn, user_id: int) -> dict[str, Any]:
        rows = conn.execute(CART_SQL, (user_id,)).fetchall()
        return {"items": [{k: v for k, v in r.items() if k != "total_cents"} for r in rows],
                "total_cents": rows[0]["total_cents"] if rows else 0}

    @staticmethod
    def _order(conn: Conn, order_id: int, user_id: int) -> dict[str, Any] | None:
        order = conn.execute("SELECT id AS order_id, status, total_cents, created_at FROM orders "
                             "WHERE id = %s AND user_id = %s", (order_id, user_id)).fetchone()
        if order is None:
            return None
        order["items"] = conn.execute(
            "SELECT i.product_id, p.sku, p.name, i.quantity, i.unit_price_cents, i.quantity::bigint * "
            "i.unit_price_cents AS line_total_cents FROM order_items i JOIN products p ON p.id = "
            "i.product_id WHERE i.order_id = %s ORDER BY i.product_id", (order_id,)).fetchall()
        order["payments"] = conn.execute(
            "SELECT id AS payment_id, provider, status, amount_cents, provider_ref, created_at "
            "FROM payments WHERE order_id = %s ORDER BY id", (order_id,)).fetchall()
        # "payment": the captured one, else the latest attempt (seeded orders may have failed ones first)
        captured = [p for p in order["payments"] if p["status"] == "captured"]
        order["payment"] = (captured or order["payments"] or [None])[-1]
        return order


def main() -> int:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shop %(levelname)s %(message)s")
    try:
        config = Config.from_env(dict(os.environ))
        server = ShopServer(config)
    except (ValueError, OSError) as e:
        log.error("cannot start: %s", e)
        return 2

    def stop(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        # shutdown() waits for serve_forever() to return, which runs in this very thread: use another
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    secret = "SHOP_SESSION_SECRET" if os.environ.get("SHOP_SESSION_SECRET") else "a random per-process secret"
    log.info("listening on http://%s:%d; database %s; uploads %s; sessions signed with %s",
             config.bind, config.port, config.masked_db(), config.uploads_dir, secret)
    try:
        server.serve_forever()
    finally:
        server.server_close()  # joins the request threads (block_on_close)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
