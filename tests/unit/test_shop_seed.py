"""Pure-logic tests of the sample shop generators (docker/shop): password hashes, sizes, uploads tree.

The database side of seed.py is exercised against a real PostgreSQL by the integration tier.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

SHOP = Path(__file__).resolve().parents[2] / "docker" / "shop"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"shop_{name}", SHOP / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


seed = _load("seed")
uploads = _load("uploads")

# the CHECK constraint users_password_hash_format of schema.sql, in Python syntax
SCHEMA_HASH_RE = re.compile(r"pbkdf2_sha256\$[1-9][0-9]*\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}")


def test_hash_round_trip_and_format() -> None:
    stored = seed.hash_password("correct horse", iterations=1000)
    assert SCHEMA_HASH_RE.fullmatch(stored)
    algorithm, iterations, salt_b64, hash_b64 = stored.split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", "1000")
    assert len(base64.b64decode(salt_b64)) == 16 and len(base64.b64decode(hash_b64)) == 32
    assert seed.verify_password(stored, "correct horse")
    assert not seed.verify_password(stored, "correct horse ")
    assert seed.hash_password("x", iterations=1000) != seed.hash_password("x", iterations=1000)  # salted


def test_default_iterations_and_unicode_password() -> None:
    stored = seed.hash_password("pässwörd ✓", salt=b"0123456789abcdef")
    assert stored.startswith("pbkdf2_sha256$200000$MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert seed.verify_password(stored, "pässwörd ✓")


def test_rfc7914_vector() -> None:
    # RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, dkLen=64; any implementation
    # of the format (e.g. the web app's) must accept this string.
    dk = bytes.fromhex(
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b64599166 4b39d77ef317c71b845b1e30bd509112041d3a19783".replace(" ", ""))
    stored = f"pbkdf2_sha256$1${base64.b64encode(b'salt').decode()}${base64.b64encode(dk).decode()}"
    assert seed.verify_password(stored, "passwd")
    assert not seed.verify_password(stored, "passwd2")


@pytest.mark.parametrize("stored", [
    "",
    "pbkdf2_sha256$1000$c2FsdA==",                       # three fields
    "pbkdf2_sha1$1000$c2FsdA==$aGFzaA==",                # other algorithm
    "pbkdf2_sha256$0$c2FsdA==$aGFzaA==",                 # zero iterations
    "pbkdf2_sha256$-5$c2FsdA==$aGFzaA==",
    "pbkdf2_sha256$99999999999$c2FsdA==$aGFzaA==",       # would take hours
    "pbkdf2_sha256$\u0661\u0660\u0660\u0660$c2FsdA==$aGFzaA==",  # Arabic-Indic digits
    "pbkdf2_sha256$1000$not base64!$aGFzaA==",
    "pbkdf2_sha256$1000$c2FsdA==$aGFzaA",                # bad padding
    "pbkdf2_sha256$1000$$aGFzaA==",                      # empty salt
    "pbkdf2_sha256$1000$c2FsdA==$aGFzaA==$extra",
])
def test_malformed_hashes_are_rejected_not_raised(stored: str) -> None:
    assert seed.verify_password(stored, "hash") is False


def test_bulk_hash_shape_matches_format() -> None:
    # what USERS_SQL builds: 16-byte salt, 32-byte digest, standard base64
    salt = base64.b64encode(hashlib.sha256(b"a").digest()[:16]).decode()
    digest = base64.b64encode(hashlib.sha256(b"b").digest()).decode()
    stored = f"pbkdf2_sha256$200000${salt}${digest}"
    assert SCHEMA_HASH_RE.fullmatch(stored)
    assert "pbkdf2_sha256$200000$" in seed.USERS_SQL
    assert not seed.verify_password(stored, "")


@pytest.mark.parametrize(("text", "expected"), [
    ("256MiB", 256 * 2**20), ("1GiB", 2**30), ("1G", 2**30), ("1.5GiB", 3 * 2**29),
    ("500MB", 500_000_000), ("4096", 4096), (" 10 kib ", 10240),
])
def test_parse_size(text: str, expected: int) -> None:
    assert seed.parse_size(text) == expected
    assert uploads.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "12XB", "-1MiB", "0"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        seed.parse_size(text)


def test_size_range() -> None:
    assert uploads.size_range(None, None) == (50, 5 * 1024, 200 * 1024)
    assert uploads.size_range(7, None) == (7, 5 * 1024, 200 * 1024)
    n, lo, hi = uploads.size_range(None, 100 * 2**20)
    assert n == 999 and (lo, hi) == (5 * 1024, 200 * 1024)
    n, lo, hi = uploads.size_range(100, 2**20)  # 10 KiB each on average
    assert n == 100 and 5 * 1024 <= lo < hi <= 200 * 1024 and abs((lo + hi) / 2 - 10.24 * 1024) <= 1
    with pytest.raises(ValueError):
        uploads.size_range(10, 2**30)


def test_uploads_tree_is_deterministic_and_grows_as_a_superset(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    uploads.generate(small, 3, 5 * 1024, 200 * 1024, 42)
    count, total = uploads.generate(large, 5, 5 * 1024, 200 * 1024, 42)
    files = {p.relative_to(large).as_posix(): p.read_bytes() for p in large.rglob("*") if p.is_file()}
    assert count == len(files) and total == sum(map(len, files.values()))
    for p in small.rglob("*"):
        if p.is_file():
            assert files[p.relative_to(small).as_posix()] == p.read_bytes()
    assert {"README.txt", "invoices/2026/11/inv-0001.txt", "cache/tmp-0001.tmp",
            "products/p000005.jpg", "pages/about us.txt"} <= set(files)
    assert "products/p000006.jpg" not in files
    image = files["products/p000001.jpg"]
    assert image[:4] == b"\xff\xd8\xff\xe0" and image[6:11] == b"JFIF\x00" and image[-2:] == b"\xff\xd9"
    assert 5 * 1024 <= len(image) <= 200 * 1024
    other_seed = uploads.image_bytes(43, 1, 5 * 1024, 200 * 1024)
    assert other_seed != image


def test_image_paths_of_seed_match_uploads_names() -> None:
    # seed.py: 'products/p' || lpad(id, greatest(6, length(id)), '0') || '.jpg'  ==  p%06d.jpg
    assert "'products/p' ||" in seed.PRODUCTS_SQL and "'.jpg'" in seed.PRODUCTS_SQL
    for product_id in (1, 123, 999_999, 1_234_567):
        text = str(product_id)
        assert f"p{text.rjust(max(6, len(text)), '0')}.jpg" == f"p{product_id:06d}.jpg"
