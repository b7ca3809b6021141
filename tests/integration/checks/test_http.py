"""HTTP checks against a real HTTP server on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from backupctl.checks import CheckContext, run_check
from backupctl.drills.schema import HttpCheck, Service

from .conftest import PASSWORD, RuntimeDouble, ShopServer


def http_check(*steps: dict[str, Any], name: str = "shop-smoke") -> HttpCheck:
    return HttpCheck.model_validate({"type": "http", "name": name, "service": "app", "steps": list(steps)})


LOGIN = {"method": "POST", "path": "/login",
         "json": {"email": "drill@example.com", "password": "env:SHOP_DRILL_PASSWORD"}}


@pytest.fixture(autouse=True)
def drill_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_DRILL_PASSWORD", PASSWORD)


def test_session_cookie_carries_login_cart_checkout(context: CheckContext) -> None:
    check = http_check(
        LOGIN | {"expect": {"json": {"user.email": "drill@example.com", "user.id": 7}}},
        {"method": "POST", "path": "/cart/items", "json": {"sku": "sku-1", "quantity": 2},
         "expect": {"status": 201}},
        {"path": "/cart", "expect": {"json": {"items[0].sku": "sku-1", "items[-1].quantity": 2,
                                              "total_cents": {"$gte": 1998, "$lt": 2000}}}},
        {"method": "POST", "path": "/checkout", "expect": {"status": 201, "contains": "captured"},
         "save": {"order": "order_id"}},
        {"path": "/orders/${order}", "expect": {"json": {"id": "${order}", "status": "paid",
                                                         "total": {"$eq": "19.98"}}}},
    )
    result = run_check(check, context)
    assert result.ok, result.detail
    assert (result.name, result.kind) == ("shop-smoke", "http")
    assert [step["step"] for step in result.steps] == [
        "POST /login", "POST /cart/items", "GET /cart", "POST /checkout", "GET /orders/42"]
    assert [step["status"] for step in result.steps] == [200, 201, 200, 201, 200]
    assert result.detail.startswith("5 steps passed: POST /login → 200")
    assert result.duration > 0


def test_without_the_login_step_the_cart_is_refused(context: CheckContext) -> None:
    result = run_check(http_check({"path": "/cart"}), context)
    assert not result.ok
    assert result.detail.startswith("step 1/1 GET /cart: expected status 200, got 401")
    assert "login required" in result.detail


def test_checks_do_not_share_cookies(context: CheckContext) -> None:
    assert run_check(http_check(LOGIN, {"path": "/cart"}), context).ok
    assert not run_check(http_check({"path": "/cart"}), context).ok


def test_wrong_password_fails_clearly_and_masks_the_password(
    context: CheckContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DRILL_PASSWORD", "wrong-password-1234")
    result = run_check(http_check(LOGIN, {"path": "/cart"}, {"method": "POST", "path": "/checkout"}), context)
    assert not result.ok
    assert result.detail.startswith("step 1/3 POST /login: expected status 200, got 401; body: ")
    assert "invalid credentials" in result.detail
    # the server echoed the password it was sent: the detail and the step records mask it
    assert "wrong-password-1234" not in result.detail
    assert "********" in result.detail
    assert "wrong-password-1234" not in repr(result.steps)
    assert len(result.steps) == 1, "a failing step stops the check"


def test_json_and_contains_expectations_name_what_differs(context: CheckContext) -> None:
    result = run_check(http_check({"path": "/health", "expect": {"json": {"version": "2.0.0"}}}), context)
    assert result.detail == "step 1/1 GET /health: version: expected '2.0.0', got '1.2.3'"

    result = run_check(http_check({"path": "/health", "expect": {"json": {"build.sha": {"$exists": True}}}}),
                       context)
    assert result.detail == ("step 1/1 GET /health: build.sha: expected it to exist "
                             "(no key 'build' at the top level)")

    result = run_check(http_check({"path": "/html", "expect": {"contains": "Goodbye"}}), context)
    assert not result.ok
    assert "expected the body to contain 'Goodbye'; body: <html><body>Welcome to the shop" in result.detail

    result = run_check(http_check({"path": "/html", "expect": {"json": {"a": 1}}}), context)
    assert "expected a JSON body (for json/save), got body: <html>" in result.detail

    assert run_check(http_check({"path": "/html", "expect": {"contains": "Welcome"}}), context).ok


def test_status_expectation_other_than_200(context: CheckContext) -> None:
    assert run_check(http_check(LOGIN, {"path": "/nowhere", "expect": {"status": 404}}), context).ok
    result = run_check(http_check(LOGIN, {"method": "POST", "path": "/checkout", "expect": {"status": 201}}),
                       context)
    assert "step 2/2 POST /checkout: expected status 201, got 409" in result.detail
    assert "cart is empty" in result.detail


def test_redirects_stay_on_the_service(context: CheckContext) -> None:
    followed = run_check(http_check({"path": "/home", "expect": {"json": {"status": "ok"}}}), context)
    assert followed.ok, followed.detail

    away = run_check(http_check({"path": "/away"}), context)
    assert not away.ok
    refused = "got 302 (redirect to http://198.51.100.7/stolen not followed: it leaves the service)"
    assert refused in away.detail

    # expecting a 3xx: nothing is followed, so the redirect itself can be checked
    assert run_check(http_check({"path": "/away", "expect": {"status": 302}}), context).ok


def test_absolute_urls_are_refused(context: CheckContext) -> None:
    result = run_check(http_check({"path": "http://198.51.100.7/x"}), context)
    assert not result.ok
    assert "must start with a single '/'" in result.detail


def test_timeout_and_refused_connection(tmp_path: Path, shop_server: ShopServer) -> None:
    services = {"app": Service(name="app", kind="app")}
    slow = CheckContext(RuntimeDouble(tmp_path, shop_server.port), services, http_timeout=0.3)
    result = run_check(http_check({"path": "/slow"}), slow)
    assert result.detail == "step 1/1 GET /slow: no answer within 0.3s"
    assert result.duration < 1.9

    from backupctl.local_cluster.postgres import free_port

    closed = CheckContext(RuntimeDouble(tmp_path, free_port()), services)
    result = run_check(http_check({"path": "/health"}), closed)
    assert not result.ok
    assert result.detail.startswith("step 1/1 GET /health: cannot connect: ")
    assert "refused" in result.detail.lower()


def test_form_body_and_secret_headers(context: CheckContext, tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text("tok-5f1e9a2c7b\n")
    os.chmod(token_file, 0o600)
    check = http_check(
        {"method": "POST", "path": "/form-login",
         "form": {"email": "drill@example.com", "password": "env:SHOP_DRILL_PASSWORD"}},
        {"path": "/headers", "headers": {"X-Api-Token": f"file:{token_file}", "Accept": "text/plain"},
         "expect": {"json": {"x-api-token": "tok-5f1e9a2c7b", "accept": "text/plain",
                             "user-agent": "backupctl-drill", "cookie": {"$contains": "session="}}}},
    )
    result = run_check(check, context)
    assert result.ok, result.detail


def test_secret_token_in_a_failure_detail_is_masked(context: CheckContext, tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text("tok-5f1e9a2c7b")
    os.chmod(token_file, 0o600)
    check = http_check({"path": "/headers", "headers": {"X-Api-Token": f"file:{token_file}"},
                        "expect": {"contains": "never there"}})
    result = run_check(check, context)
    assert not result.ok
    assert "tok-5f1e9a2c7b" not in result.detail
    assert "********" in result.detail


def test_unknown_placeholder_fails_the_step(context: CheckContext) -> None:
    result = run_check(http_check({"path": "/orders/${order}"}), context)
    assert result.detail == "step 1/1 GET /orders/${order}: placeholder ${order} is not defined (known: none)"


def test_context_values_fill_placeholders(runtime: RuntimeDouble) -> None:
    context = CheckContext(runtime, {"app": Service(name="app", kind="app")}, values={"version": "1.2.3"})
    check = http_check({"path": "/health", "expect": {"json": {"version": "${version}"}}})
    assert run_check(check, context).ok


def test_unknown_service_fails_the_check(context: CheckContext) -> None:
    check = HttpCheck.model_validate({"type": "http", "name": "x", "service": "web",
                                      "steps": [{"path": "/"}]})
    result = run_check(check, context)
    assert not result.ok
    assert "service 'web', which the drill does not define (services: app, db, lite)" in result.detail


def test_several_contains_not_contains_headers_and_sha256(context: CheckContext) -> None:
    from .conftest import BIG_BODY

    digest = hashlib.sha256(BIG_BODY).hexdigest()
    check = http_check(
        {"path": "/html", "expect": {"contains": ["Welcome", "shop"], "not_contains": ["critical error"],
                                     "headers": {"content-type": "application/json"}}},
        {"path": "/big", "expect": {"sha256": digest, "headers": {"X-Content-Kind": "image/jpeg"}}},
    )  # fmt: skip
    result = run_check(check, context)
    assert result.ok, result.detail
    failing = [
        ({"path": "/html", "expect": {"contains": ["Welcome", "checkout"]}}, "contain 'checkout'"),
        ({"path": "/html", "expect": {"not_contains": ["nothing", "Welcome"]}}, "not to contain 'Welcome'"),
        ({"path": "/html", "expect": {"headers": {"X-Frame-Options": ""}}}, "header X-Frame-Options"),
        ({"path": "/big", "expect": {"sha256": "0" * 64}}, f"got {digest} ({len(BIG_BODY)} bytes)"),
    ]
    for step, said in failing:
        outcome = run_check(http_check(step), context)
        assert not outcome.ok and said in outcome.detail, outcome.detail


def test_save_from_a_header_and_from_an_html_form_token(context: CheckContext) -> None:
    check = http_check(
        {"path": "/home", "expect": {"status": 302}, "save": {"next": "header:Location"}},
        {"path": "/form", "save": {"nonce": 'regex:name="_wpnonce" value="([^"]+)"', "tag": "regex:<form>"}},
        {"path": "/form", "save": {"php": "header:X-Powered-By"}},
        {"path": "/headers", "headers": {"X-Nonce": "${nonce}", "X-Next": "${next}"},
         "expect": {"json": {"x-nonce": "n0nce-7f3a", "x-next": "/health"}}},
    )  # fmt: skip
    result = run_check(check, context)
    assert result.ok, result.detail
    pattern = 'regex:name="missing" value="(\\w+)"'
    missing = run_check(http_check({"path": "/form", "save": {"x": pattern}}), context)
    assert not missing.ok and "does not match" in missing.detail


def test_per_step_and_per_check_timeouts(context: CheckContext) -> None:
    slow_step = run_check(http_check({"path": "/slow", "timeout": "1s"}), context)
    assert not slow_step.ok and "no answer within 1s" in slow_step.detail
    patient = HttpCheck.model_validate(
        {"type": "http", "name": "slow", "service": "app", "timeout": "1s",
         "steps": [{"path": "/slow", "timeout": "5s"}, {"path": "/health"}]}
    )  # fmt: skip
    assert run_check(patient, context).ok
    impatient = HttpCheck.model_validate(
        {"type": "http", "name": "slow", "service": "app", "timeout": "1s", "steps": [{"path": "/slow"}]}
    )
    assert not run_check(impatient, context).ok
