#!/usr/bin/env python3
"""Seed the backupctl sample shop database (PostgreSQL 15).

    python docker/shop/seed.py --dsn postgresql://user@host:5432/shop [--scale N | --size 1GiB]
                               [--drill-password-env NAME] [--reset] [--no-check]

Applies schema.sql (idempotent), then generates the data on the server with
``INSERT ... SELECT ... FROM generate_series(...)``: nothing row-by-row crosses the wire, which is what
makes a 1 GiB database take a minute rather than an hour. Everything runs in one transaction: a failed
or interrupted seed leaves the database as it was.

Scale 1 is 200 users, 50 products, 100 carts and 500 orders (about 1 500 order items, 400 payments);
every count grows linearly with the scale. ``--size`` picks the scale for an approximate
``pg_database_size``: it seeds a first slice, measures the growth per scale unit, then seeds the rest.

Bulk users carry syntactically valid password hashes made from random bytes: no password logs in as
them. Two real accounts get real PBKDF2-SHA256 hashes (see ``verify_password``):

* ``demo@shop.example``, password from ``$SHOP_DEMO_PASSWORD`` (default ``demo-password``);
* ``drill@shop.example``, password from the variable named by ``--drill-password-env`` (default
  ``SHOP_DRILL_PASSWORD``); not created when that variable is unset or empty.

Data are a pure function of the scale (hashes of row ids), except timestamps and the bulk password
hashes. Stdlib + psycopg 3 only; does not import backupctl.

Exit codes: 0 seeded; 2 bad arguments; 3 database unreachable; 4 shop already seeded (use --reset);
5 invariant check failed; 1 any other database error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg is imported lazily: verify_password() must work without it
    import psycopg

SCHEMA_FILE = Path(__file__).with_name("schema.sql")

# ---------------------------------------------------------------------------------------------------
# Password hashes
# ---------------------------------------------------------------------------------------------------

HASH_ALGORITHM = "pbkdf2_sha256"
HASH_ITERATIONS = 200_000
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAX_ITERATIONS = 10_000_000  # a stored hash must not be able to make a login take minutes
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def hash_password(password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None) -> str:
    """Return ``pbkdf2_sha256$<iterations>$<salt_b64>$<hash_b64>`` for ``password``.

    salt: 16 random bytes unless given; hash: 32 bytes of PBKDF2-HMAC-SHA256 over the UTF-8 password;
    both in standard base64 with padding (alphabet ``A-Za-z0-9+/``, ``=``), which never contains ``$``.
    """
    if iterations < 1 or iterations > _MAX_ITERATIONS:
        raise ValueError(f"iterations must be 1..{_MAX_ITERATIONS}, got {iterations}")
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, _HASH_BYTES)
    b64 = base64.b64encode
    return f"{HASH_ALGORITHM}${iterations}${b64(salt).decode('ascii')}${b64(digest).decode('ascii')}"


def verify_password(stored: str, password: str) -> bool:
    """True when ``password`` matches ``stored``; False for a wrong password or a malformed hash.

    Format of ``stored`` (the ``users.password_hash`` column)::

        pbkdf2_sha256$<iterations>$<salt_b64>$<hash_b64>

    * ``iterations``: decimal, 1..10 000 000 (seed.py writes 200 000);
    * ``salt_b64``, ``hash_b64``: standard base64 with padding (RFC 4648 section 4);
    * hash = PBKDF2-HMAC-SHA256(password encoded as UTF-8, salt, iterations, dklen = len(hash)).

    The comparison is constant-time (``hmac.compare_digest``). Never raises on bad input.
    """
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != HASH_ALGORITHM:
        return False
    iterations_text, salt_b64, hash_b64 = parts[1], parts[2], parts[3]
    if not iterations_text.isdigit() or not iterations_text.isascii():
        return False
    iterations = int(iterations_text)
    if iterations < 1 or iterations > _MAX_ITERATIONS:
        return False
    if not (_B64.fullmatch(salt_b64) and _B64.fullmatch(hash_b64)):
        return False
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if not salt or not expected:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, len(expected))
    return hmac.compare_digest(actual, expected)


# ---------------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------------

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}


def parse_size(text: str) -> int:
    """Parse ``256MiB``, ``1GiB``, ``1.5G``, ``500MB``, ``1048576`` into bytes (K/M/G alone are binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 256MiB, 1GiB, 500MB)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value)


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------
# Data generation (all on the server)
# ---------------------------------------------------------------------------------------------------

# rows per scale unit; carts map to users 2c-1 (distinct users, so at most one open cart each)
USERS, PRODUCTS, CARTS, ORDERS = 200, 50, 100, 500
assert USERS >= 2 * CARTS
# pg_database_size growth per scale unit, measured on PostgreSQL 15 (first guess for --size only:
# the real growth is measured after a first slice)
BYTES_PER_SCALE_GUESS = 440_000
CHUNK_SCALE = 200  # scale units per statement batch: bounds the memory of one INSERT ... SELECT

TABLES = ("users", "products", "carts", "cart_items", "orders", "order_items", "payments")

# r(k, salt, n): a uniform pseudo-random integer in 0..n-1 that depends only on (k, salt). Inlined
# by the planner; lives in pg_temp, so nothing of it is left in the shop schema (or its backups).
_SQL_HELPERS = """
CREATE OR REPLACE FUNCTION pg_temp.r(k bigint, salt bigint, n bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8extended(k, salt) & 9223372036854775807) % n $$;
-- seconds between a user's sign-up and the seed time: 1 s .. 2 years
CREATE OR REPLACE FUNCTION pg_temp.user_age(u bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 1 + (hashint8extended(u, 3) & 9223372036854775807) % (730 * 86400) $$;
"""

_FIRST = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger",
          "Radia", "Donald", "Hedy", "John", "Katherine", "Niklaus", "Sophie", "Tim", "Annie", "Guido")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
         "Allen", "Dijkstra", "Perlman", "Knuth", "Lamarr", "Backus", "Johnson", "Wirth", "Wilson",
         "Berners", "Easley", "Rossum")
_ADJ = ("Sturdy", "Compact", "Classic", "Deluxe", "Rustic", "Modern", "Handmade", "Vintage", "Smart",
        "Organic", "Foldable", "Portable", "Silent", "Bright", "Cozy", "Sleek", "Robust", "Tiny",
        "Grand", "Everyday")
_MATERIAL = ("oak", "steel", "linen", "ceramic", "bamboo", "wool", "glass", "copper", "leather",
             "cotton")
_NOUN = ("Kettle", "Backpack", "Lamp", "Mug", "Notebook", "Chair", "Blanket", "Teapot", "Clock",
         "Skillet", "Umbrella", "Planter", "Speaker", "Wallet", "Scarf", "Bottle", "Desk", "Rug",
         "Vase", "Toolbox")
_PHRASES = ("Built to last for years of daily use.", "Easy to clean and dishwasher safe.",
            "Ships in recycled packaging.", "Designed in a small studio by people who care.",
            "Backed by our two-year warranty.", "Pairs well with the rest of the collection.",
            "Each piece is inspected by hand before it leaves the workshop.",
            "Lightweight enough to take anywhere.", "A customer favourite since the day we opened.",
            "Gift wrapping available at checkout.")


def _arr(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


_PAD = "lpad({0}::text, greatest(6, length({0}::text)), '0')"  # %06d, never truncating

USERS_SQL = f"""
INSERT INTO users (id, email, password_hash, full_name, created_at)
SELECT u,
       lower(f.first) || '.' || lower(f.last) || '.' || u || '@shop.example',
       'pbkdf2_sha256$200000$'
           || encode(substr(sha256(int8send(u) || int8send((random() * 9e18)::bigint)), 1, 16), 'base64')
           || '$' || encode(sha256(int8send((random() * 9e18)::bigint) || int8send(u)), 'base64'),
       f.first || ' ' || f.last,
       %(now)s::timestamptz - pg_temp.user_age(u) * interval '1 second'
  FROM generate_series(%(u0)s::bigint, %(u1)s::bigint) u,
       LATERAL (SELECT ({_arr(_FIRST)})[1 + pg_temp.r(u, 1, {len(_FIRST)})] AS first,
                       ({_arr(_LAST)})[1 + pg_temp.r(u, 2, {len(_LAST)})] AS last) f
"""

PRODUCTS_SQL = f"""
INSERT INTO products (id, sku, name, description, price_cents, stock, image_path)
SELECT p,
       'SKU-' || {_PAD.format("p")},
       x.adj || ' ' || initcap(x.material) || ' ' || x.noun,
       'A ' || lower(x.adj) || ' ' || lower(x.noun) || ' made of ' || x.material || '. '
           || ({_arr(_PHRASES)})[1 + pg_temp.r(p, 14, {len(_PHRASES)})] || ' '
           || ({_arr(_PHRASES)})[1 + (pg_temp.r(p, 14, {len(_PHRASES)}) + 1
                                      + pg_temp.r(p, 15, {len(_PHRASES) - 1})) %% {len(_PHRASES)}],
       199 + pg_temp.r(p, 16, 25000),
       pg_temp.r(p, 17, 500),
       'products/p' || {_PAD.format("p")} || '.jpg'
  FROM generate_series(%(p0)s::bigint, %(p1)s::bigint) p,
       LATERAL (SELECT ({_arr(_ADJ)})[1 + pg_temp.r(p, 11, {len(_ADJ)})] AS adj,
                       ({_arr(_MATERIAL)})[1 + pg_temp.r(p, 12, {len(_MATERIAL)})] AS material,
                       ({_arr(_NOUN)})[1 + pg_temp.r(p, 13, {len(_NOUN)})] AS noun) x
"""

# Cart c belongs to user 2c-1: distinct users, so "one open cart per user" holds by construction.
CARTS_SQL = """
INSERT INTO carts (id, user_id, created_at, status)
SELECT c, 2 * c - 1,
       %(now)s::timestamptz
           - pg_temp.r(c, 41, least(pg_temp.user_age(2 * c - 1), 90 * 86400)) * interval '1 second',
       CASE WHEN pg_temp.r(c, 42, 100) < 40 THEN 'open'
            WHEN pg_temp.r(c, 42, 100) < 75 THEN 'checked_out'
            ELSE 'abandoned' END
  FROM generate_series(%(c0)s::bigint, %(c1)s::bigint) c
"""

# Line l of cart/order k has product 1 + (start + (l-1) * stride) mod np, stride 1..7, l <= 5: the
# offsets 0..28 are distinct modulo np >= 50, so (k, product) never repeats (it is the primary key).
CART_ITEMS_SQL = """
INSERT INTO cart_items (cart_id, product_id, quantity)
SELECT c, 1 + (pg_temp.r(c, 43, %(np)s) + (l - 1) * (1 + pg_temp.r(c, 44, 7))) %% %(np)s,
       1 + pg_temp.r(c * 8 + l, 45, 3)
  FROM generate_series(%(c0)s::bigint, %(c1)s::bigint) c,
       generate_series(1, 1 + pg_temp.r(c, 46, 4)::int) l
"""

# Orders and their items in one statement, so that total_cents is exactly the sum of the items.
ORDERS_SQL = """
WITH o AS (
    SELECT o AS id,
           1 + pg_temp.r(o, 21, %(nu)s) AS user_id,
           1 + pg_temp.r(o, 22, 5)::int AS nlines,
           pg_temp.r(o, 23, 100) AS st
      FROM generate_series(%(o0)s::bigint, %(o1)s::bigint) o
), lines AS (
    SELECT o.id AS order_id,
           1 + (pg_temp.r(o.id, 24, %(np)s) + (l - 1) * (1 + pg_temp.r(o.id, 25, 7))) %% %(np)s
               AS product_id,
           (CASE WHEN q < 70 THEN 1 WHEN q < 90 THEN 2 ELSE 3 + q %% 3 END)::int AS quantity
      FROM o, generate_series(1, o.nlines) l, LATERAL (SELECT pg_temp.r(o.id * 8 + l, 26, 100) AS q) qq
), priced AS MATERIALIZED (
    SELECT lines.order_id, lines.product_id, lines.quantity, p.price_cents AS unit_price_cents
      FROM lines JOIN products p ON p.id = lines.product_id
), new_orders AS (
    INSERT INTO orders (id, user_id, total_cents, status, created_at)
    SELECT o.id, o.user_id, t.total,
           CASE WHEN o.st < 75 THEN 'paid' WHEN o.st < 83 THEN 'pending'
                WHEN o.st < 93 THEN 'cancelled' ELSE 'refunded' END,
           %(now)s::timestamptz
               - pg_temp.r(o.id, 27, pg_temp.user_age(o.user_id)) * interval '1 second'
      FROM o
      JOIN (SELECT order_id, sum(quantity * unit_price_cents)::int AS total
              FROM priced GROUP BY order_id) t ON t.order_id = o.id
)
INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)
SELECT order_id, product_id, quantity, unit_price_cents FROM priced
"""

# Failed attempts first (some paid/refunded orders had one; many pending/cancelled ones too), then the
# one successful payment of every paid ('captured') or refunded ('refunded') order, of the order total.
PAYMENTS_SQL = """
INSERT INTO payments (order_id, amount_cents, provider, status, created_at, provider_ref)
SELECT id, total_cents, 'sandbox', 'failed',
       created_at + (5 + pg_temp.r(id, 31, 120)) * interval '1 second',
       'sbx_' || md5(id || ':failed')
  FROM orders
 WHERE id BETWEEN %(o0)s AND %(o1)s
   AND CASE WHEN status IN ('paid', 'refunded') THEN pg_temp.r(id, 32, 100) < 8
            ELSE pg_temp.r(id, 32, 100) < 40 END;
INSERT INTO payments (order_id, amount_cents, provider, status, created_at, provider_ref)
SELECT id, total_cents, 'sandbox', CASE status WHEN 'paid' THEN 'captured' ELSE 'refunded' END,
       created_at + (130 + pg_temp.r(id, 33, 600)) * interval '1 second',
       'sbx_' || md5(id || ':ok')
  FROM orders
 WHERE id BETWEEN %(o0)s AND %(o1)s AND status IN ('paid', 'refunded')
"""

RESET_SQL = """
DROP VIEW IF EXISTS shop_invariant_violations;
DROP TABLE IF EXISTS payments, order_items, orders, cart_items, carts, products, users CASCADE;
"""

UPSERT_ACCOUNT_SQL = """
INSERT INTO users (email, password_hash, full_name) VALUES (%s, %s, %s)
ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, full_name = EXCLUDED.full_name
"""

INVARIANT_SQL = "SELECT invariant, table_name, row_id FROM shop_invariant_violations ORDER BY 1, 3 LIMIT 20"


@dataclass(frozen=True)
class Account:
    email: str
    full_name: str
    password: str


def seed_slice(cur: psycopg.Cursor[Any], s0: int, s1: int, now: Any) -> None:
    """Insert the rows of scale units s0+1..s1 (ids s0*N+1 .. s1*N of every table)."""
    params = {
        "now": now,
        "u0": s0 * USERS + 1, "u1": s1 * USERS,
        "p0": s0 * PRODUCTS + 1, "p1": s1 * PRODUCTS,
        "c0": s0 * CARTS + 1, "c1": s1 * CARTS,
        "o0": s0 * ORDERS + 1, "o1": s1 * ORDERS,
        "nu": s1 * USERS, "np": s1 * PRODUCTS,
    }
    for sql in (USERS_SQL, PRODUCTS_SQL, CARTS_SQL, CART_ITEMS_SQL, ORDERS_SQL, *PAYMENTS_SQL.split(";")):
        cur.execute(sql, params)


def seed_range(cur: psycopg.Cursor[Any], s0: int, s1: int, now: Any) -> None:
    for a in range(s0, s1, CHUNK_SCALE):
        seed_slice(cur, a, min(a + CHUNK_SCALE, s1), now)


def db_size(cur: psycopg.Cursor[Any]) -> int:
    return int(_fetch_one(cur, "SELECT pg_database_size(current_database())"))


def shop_size(cur: psycopg.Cursor[Any]) -> int:
    """Bytes of the shop tables with their indexes and TOAST (0 for tables that do not exist).

    Unlike pg_database_size, this ignores the files of relations dropped earlier in the transaction,
    which stay on disk until the commit."""
    return int(_fetch_one(cur, (
        "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) FROM unnest(ARRAY['"
        + "','".join(TABLES) + "']) t")))


@dataclass(frozen=True)
class Deferred:
    drop: str
    create: str


def deferred_ddl(cur: psycopg.Cursor[Any]) -> list[Deferred]:
    """Foreign keys, unique constraints and secondary indexes of the shop tables, in creation order.

    A bulk load is about twice as fast without them (no row-by-row foreign-key triggers, no random
    inserts into unique B-trees); re-creating them afterwards validates every row in one pass each.
    Read from the catalog, so whatever schema.sql declares is restored exactly. Primary keys stay.
    """
    cur.execute(
        """
        WITH t AS (SELECT to_regclass(n) AS oid FROM unnest(%(tables)s::text[]) n)
        SELECT 1 AS stage, format('DROP INDEX %%s', i.indexrelid::regclass),
               pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN t ON t.oid = i.indrelid
         WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        UNION ALL
        SELECT CASE c.contype WHEN 'u' THEN 2 ELSE 3 END,
               format('ALTER TABLE %%s DROP CONSTRAINT %%I', c.conrelid::regclass, c.conname),
               format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', c.conrelid::regclass, c.conname,
                      pg_get_constraintdef(c.oid))
          FROM pg_constraint c JOIN t ON t.oid = c.conrelid
         WHERE c.contype IN ('u', 'f')
         ORDER BY 1, 2
        """,
        {"tables": list(TABLES)},
    )
    return [Deferred(drop, create) for _stage, drop, create in cur.fetchall()]


def drop_deferred(cur: psycopg.Cursor[Any], ddl: list[Deferred]) -> None:
    for d in reversed(ddl):
        cur.execute(d.drop)


def create_deferred(cur: psycopg.Cursor[Any], ddl: list[Deferred]) -> None:
    for d in ddl:
        cur.execute(d.create)


def masked_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable DSN>"
    host = d.get("host") or "(default socket)"
    port = f":{d['port']}" if d.get("port") else ""
    user = f"{d['user']}@" if d.get("user") else ""
    return f"postgresql://{user}{host}{port}/{d.get('dbname') or ''}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="seed.py", description="Create and fill the backupctl sample shop database.",
        epilog="Exit codes: 0 ok, 2 bad arguments, 3 database unreachable, 4 already seeded "
               "(use --reset), 5 invariant violated, 1 other database error.")
    p.add_argument("--dsn", default=os.environ.get("SHOP_DSN"),
                   help="libpq connection string or URL (default: $SHOP_DSN)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--scale", type=int, default=None,
                      help=f"scale factor (default 1: {USERS} users, {PRODUCTS} products, {ORDERS} orders)")
    size.add_argument("--size", default=None, help="approximate target pg_database_size, e.g. 256MiB, 1GiB")
    p.add_argument("--drill-password-env", default="SHOP_DRILL_PASSWORD", metavar="NAME",
                   help="environment variable holding the password of drill@shop.example "
                        "(default SHOP_DRILL_PASSWORD; unset: no drill account)")
    p.add_argument("--reset", action="store_true", help="drop the shop tables first, then re-create them")
    p.add_argument("--no-check", action="store_true", help="skip the invariant check at the end")
    args = p.parse_args(argv)
    if not args.dsn:
        p.error("--dsn is required (or set SHOP_DSN)")
    if args.scale is not None and args.scale < 1:
        p.error("--scale must be >= 1")
    if args.size is not None:
        try:
            args.size_bytes = parse_size(args.size)
        except ValueError as e:
            p.error(str(e))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.drill_password_env):
        p.error(f"--drill-password-env: not an environment variable name: {args.drill_password_env!r}")
    return args


def accounts(drill_env: str, say: Any) -> list[Account]:
    result = []
    demo_password = os.environ.get("SHOP_DEMO_PASSWORD")
    if demo_password:
        say("account demo@shop.example: password from $SHOP_DEMO_PASSWORD")
    else:
        demo_password = "demo-password"
        say("account demo@shop.example: password is the DEMO DEFAULT 'demo-password' "
            "($SHOP_DEMO_PASSWORD unset) - for demos only")
    result.append(Account("demo@shop.example", "Demo Shopper", demo_password))
    drill_password = os.environ.get(drill_env)
    if drill_password:
        say(f"account drill@shop.example: password from ${drill_env}")
        result.append(Account("drill@shop.example", "Restore Drill", drill_password))
    else:
        say(f"account drill@shop.example: NOT created (${drill_env} is unset or empty)")
    return result


class _Abort(Exception):
    """Stop seeding, roll back, exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _fetch_one(cur: psycopg.Cursor[Any], sql: str) -> Any:
    cur.execute(sql)
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _seed(
    cur: psycopg.Cursor[Any], args: argparse.Namespace, hashed: list[tuple[str, str, str]], where: str,
    say: Any,
) -> tuple[int, dict[str, int], float, float]:
    """Schema + data inside the caller's transaction; returns (scale, counts, gen s, check s)."""
    cur.execute("SET LOCAL synchronous_commit = off")
    cur.execute("SET LOCAL jit = off")  # compiling these one-shot queries costs more than it saves
    cur.execute("SET LOCAL work_mem = '64MB'")
    if _fetch_one(cur, "SELECT current_setting('server_version_num')::int") < 110000:
        raise _Abort(1, "PostgreSQL 11 or newer is needed (hashint8extended)")
    other = db_size(cur) - shop_size(cur)
    if args.reset:
        say("--reset: dropping the shop tables")
        cur.execute(RESET_SQL)
    cur.execute(SCHEMA_FILE.read_text(encoding="utf-8"))
    if _fetch_one(cur, "SELECT EXISTS (SELECT 1 FROM users)"):
        raise _Abort(4, f"{where} already holds shop data; pass --reset to drop and re-seed")
    cur.execute(_SQL_HELPERS)
    now = _fetch_one(cur, "SELECT now()")
    cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds

    empty = shop_size(cur)
    ddl = deferred_ddl(cur)
    drop_deferred(cur, ddl)
    t_gen = time.monotonic()
    if args.size is not None:
        # growth wanted = target database size - what is not the shop's (catalog, ...) - empty tables
        target = args.size_bytes - other - empty
        guess = max(1, round(target / BYTES_PER_SCALE_GUESS))
        first = max(1, math.ceil(guess / 6))
        seed_range(cur, 0, first, now)
        create_deferred(cur, ddl)  # measure with the indexes; dropped again for the rest of the load
        per_scale = max(1.0, (shop_size(cur) - empty) / first)
        drop_deferred(cur, ddl)
        scale = max(first, round(target / per_scale))
        say(f"target {format_size(args.size_bytes)}: {format_size(per_scale)} per scale unit measured "
            f"at scale {first}; seeding scale {scale}")
        if target < per_scale:
            say(f"target is below the size of a scale-1 shop ({format_size(other + empty + per_scale)})")
        seed_range(cur, first, scale, now)
    else:
        scale = args.scale or 1
        seed_range(cur, 0, scale, now)
    create_deferred(cur, ddl)

    for table in ("users", "products", "carts", "orders", "payments"):
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
    cur.executemany(UPSERT_ACCOUNT_SQL, hashed)  # after setval: the accounts take the next user ids
    cur.execute("ANALYZE " + ", ".join(TABLES))
    gen_seconds = time.monotonic() - t_gen

    counts = {table: int(_fetch_one(cur, f"SELECT count(*) FROM {table}")) for table in TABLES}

    check_seconds = 0.0
    if not args.no_check:
        t_check = time.monotonic()
        cur.execute(INVARIANT_SQL)
        bad = cur.fetchall()
        check_seconds = time.monotonic() - t_check
        if bad:
            lines = "".join(f"\n  {inv}: {table}.id={row_id}" for inv, table, row_id in bad)
            raise _Abort(5, f"generated data break the shop invariant (rolled back):{lines}")
    return scale, counts, gen_seconds, check_seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(msg: str) -> None:
        print(f"seed: {msg}", flush=True)

    import psycopg

    where = masked_dsn(args.dsn)
    t_start = time.monotonic()
    try:
        conn = psycopg.connect(args.dsn, autocommit=True, connect_timeout=10, application_name="shop-seed")
    except psycopg.OperationalError as e:
        detail = " ".join(str(e).split())
        print(f"seed: error: cannot connect to PostgreSQL at {where}: {detail}", file=sys.stderr)
        return 3

    # hash the real accounts' passwords before the transaction starts (0.1-0.2 s each)
    wanted = accounts(args.drill_password_env, say)
    hashed = [(a.email, hash_password(a.password), a.full_name) for a in wanted]

    try:
        with conn.cursor() as cur:
            with conn.transaction():
                scale, counts, gen_seconds, check_seconds = _seed(cur, args, hashed, where, say)
            size = db_size(cur)  # after the commit: files of dropped relations are gone
    except KeyboardInterrupt:
        print("seed: interrupted; the transaction was rolled back", file=sys.stderr)
        return 130
    except _Abort as e:  # raised inside the transaction block: everything was rolled back
        print(f"seed: error: {e.message}", file=sys.stderr)
        return e.code
    except psycopg.OperationalError as e:
        print(f"seed: error: lost the connection to {where}: {' '.join(str(e).split())}", file=sys.stderr)
        return 3
    except psycopg.Error as e:
        print(f"seed: error: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    finally:
        conn.close()

    total_seconds = time.monotonic() - t_start
    say(f"seeded {where} at scale {scale}")
    for table in TABLES:
        say(f"  {table:<12} {counts[table]:>12,} rows")
    target_note = f" (target {format_size(args.size_bytes)})" if args.size is not None else ""
    say(f"database size {format_size(size)}{target_note}, {size} bytes")
    check_note = "skipped" if args.no_check else f"ok, {check_seconds:.2f}s"
    say(f"generated in {gen_seconds:.2f}s, invariant check {check_note}, total {total_seconds:.2f}s")
    say(f"product images: python docker/shop/uploads.py DIR --products {counts['products']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
