"""JSON paths, JSON expectations, placeholders and secret resolution of HTTP checks."""

from __future__ import annotations

from typing import Any

import pytest

from backupctl.checks.http import (
    PathMissing,
    _fill_path,
    check_value,
    fill_text,
    json_equal,
    lookup,
    parse_json_path,
    resolve_value,
)
from backupctl.core.secrets import mask
from backupctl.errors import ConfigError

DOCUMENT: dict[str, Any] = {
    "user": {"email": "a@example.com", "roles": ["buyer", "admin"]},
    "items": [{"sku": "sku-1", "quantity": 2, "price": "9.99"}, {"sku": "sku-2", "quantity": 1}],
    "total": 1998,
    "paid": True,
    "note": None,
}


@pytest.mark.parametrize(("path", "tokens"), [
    ("a", ["a"]),
    ("a.b[0].c", ["a", "b", 0, "c"]),
    ("[0].id", [0, "id"]),
    ("items[-1]", ["items", -1]),
    ("matrix[1][2]", ["matrix", 1, 2]),
    ("$.a.b", ["a", "b"]),
    ("$", []),
    ("order-id", ["order-id"]),
])
def test_parse_json_path(path: str, tokens: list[str | int]) -> None:
    assert parse_json_path(path) == tokens


@pytest.mark.parametrize("path", ["a..b", "a.", "a[x]", "a[0]b", ".a", "a[", "a]"])
def test_malformed_json_paths(path: str) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        parse_json_path(path)


def test_lookup() -> None:
    assert lookup(DOCUMENT, "items[0].sku") == "sku-1"
    assert lookup(DOCUMENT, "items[-1].quantity") == 1
    assert lookup(DOCUMENT, "user.roles[1]") == "admin"
    assert lookup(DOCUMENT, "note") is None
    assert lookup([{"id": 3}], "[0].id") == 3
    assert lookup(DOCUMENT, "$") == DOCUMENT


@pytest.mark.parametrize(("path", "message"), [
    ("items[5].sku", "index 5 is out of range at items (array of 2)"),
    ("user.name", "no key 'name' at user"),
    ("missing", "no key 'missing' at the top level"),
    ("total.cents", "total is a number, not an object"),
    ("user[0]", "user is an object, not an array"),
    ("items[0].sku.x", "items[0].sku is a string, not an object"),
])
def test_lookup_says_where_the_path_broke_off(path: str, message: str) -> None:
    with pytest.raises(PathMissing) as caught:
        lookup(DOCUMENT, path)
    assert str(caught.value) == message


@pytest.mark.parametrize(("expected", "actual", "equal"), [
    (42, 42, True),
    (1, 1.0, True),
    ("42", 42, False),
    (True, 1, False),
    (1, True, False),
    (False, False, True),
    (None, None, True),
    (None, "", False),
    ({"a": [1, "x"]}, {"a": [1.0, "x"]}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ([1, 2], [2, 1], False),
])
def test_json_equal(expected: Any, actual: Any, equal: bool) -> None:
    assert json_equal(expected, actual) is equal


@pytest.mark.parametrize(("path", "expected", "problem"), [
    ("total", 1998, None),
    ("total", "1998", "total: expected '1998', got 1998"),
    ("paid", True, None),
    ("user.email", "b@example.com", "user.email: expected 'b@example.com', got 'a@example.com'"),
    ("user.name", "x", "user.name: expected 'x', but it is missing (no key 'name' at user)"),
    ("total", {"$gte": 1000, "$lt": 2000}, None),
    ("total", {"$gt": 1998}, "total: expected $gt 1998, got 1998"),
    ("items[0].price", {"$lte": 10}, None),  # numeric strings compare as numbers
    ("user.email", {"$gt": 1}, "user.email: expected $gt 1, got 'a@example.com'"),
    ("total", {"$ne": 0}, None),
    ("total", {"$eq": 1998.0}, None),
    ("user.roles", {"$contains": "admin"}, None),
    ("user.email", {"$contains": "@example."}, None),
    ("user", {"$contains": "roles"}, None),
    ("user.roles", {"$contains": "root"},
     "user.roles: expected $contains 'root', got [\"buyer\", \"admin\"]"),
    ("note", {"$exists": True}, None),
    ("user.name", {"$exists": False}, None),
    ("user.email", {"$exists": False}, "user.email: expected it to be absent, got 'a@example.com'"),
    ("items[9]", {"$gte": 1},
     "items[9]: expected $gte 1, but it is missing (index 9 is out of range at items (array of 2))"),
    ("user", {"email": "a@example.com", "roles": ["buyer", "admin"]}, None),  # a plain map: equality
])
def test_check_value(path: str, expected: Any, problem: str | None) -> None:
    assert check_value(expected, DOCUMENT, path) == problem


def test_unknown_operator_and_non_numeric_bound_are_configuration_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown operator '\$regex'"):
        check_value({"$regex": "a.*"}, DOCUMENT, "user.email")
    with pytest.raises(ConfigError, match=r"\$gte needs a number"):
        check_value({"$gte": "many"}, DOCUMENT, "total")


def test_fill_text() -> None:
    values = {"order": 42, "name": "drill", "flags": [1, 2]}
    assert fill_text("/orders/${order}", values) == "/orders/42"
    assert fill_text("${name}-${order}: ${flags}", values) == "drill-42: [1, 2]"
    assert fill_text("no placeholders, $ and {} alone", values) == "no placeholders, $ and {} alone"
    with pytest.raises(ConfigError, match=r"\$\{cart\} is not defined \(known: flags, name, order\)"):
        fill_text("${cart}", values)


def test_fill_path_encodes_values_and_refuses_other_hosts() -> None:
    assert _fill_path("/orders/${id}", {"id": "a b?c"}) == "/orders/a%20b%3Fc"
    assert _fill_path("${image}", {"image": "/uploads/p 1.png"}) == "/uploads/p%201.png"
    for bad in ("http://elsewhere/x", "//elsewhere/x", "relative"):
        with pytest.raises(ConfigError, match="must start with a single '/'"):
            _fill_path(bad, {})
    with pytest.raises(ConfigError):
        _fill_path("${url}", {"url": "//evil.example/x"})


def test_resolve_value_resolves_secrets_and_typed_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_SHOP_PASSWORD", "unit-pw-8c1f")
    body = {"password": "env:UNIT_SHOP_PASSWORD", "order_id": "${order}", "note": "order ${order}",
            "items": [{"sku": "${sku}"}], "count": 3}
    resolved = resolve_value(body, {"order": 42, "sku": "sku-1"}, typed=True)
    assert resolved == {"password": "unit-pw-8c1f", "order_id": 42, "note": "order 42",
                        "items": [{"sku": "sku-1"}], "count": 3}
    assert mask("sent unit-pw-8c1f") == "sent ********", "resolved secrets are registered for masking"
    # form fields and headers are text: a whole placeholder becomes text too
    assert resolve_value({"id": "${order}"}, {"order": 42}) == {"id": "42"}


def test_secret_references_coming_from_a_response_are_not_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_NOT_FOR_THE_SERVER", "top-secret-value")
    saved = {"next": "env:UNIT_NOT_FOR_THE_SERVER", "evil": "cmd:touch /tmp/pwned"}
    resolved = resolve_value({"a": "${next}", "b": "${evil}"}, saved, typed=True)
    assert resolved == {"a": "env:UNIT_NOT_FOR_THE_SERVER", "b": "cmd:touch /tmp/pwned"}
    assert resolve_value("${next}", saved) == "env:UNIT_NOT_FOR_THE_SERVER"


def test_bad_secret_reference_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        resolve_value("file:relative/path", {})


def test_expr_operator_compares_with_arithmetic() -> None:
    import pytest

    from backupctl.checks.http import check_value, evaluate_arithmetic
    from backupctl.errors import ConfigError

    assert evaluate_arithmetic("1999 * 2 + (2500 - 1)") == 6497
    assert check_value({"$expr": "1999 * 2 + 2500"}, {"total_cents": 6498}, "total_cents") is None
    assert "expected $expr" in (check_value({"$expr": "1 + 1"}, {"t": 3}, "t") or "")
    with pytest.raises(ConfigError):
        evaluate_arithmetic("__import__('os').system('true')")
