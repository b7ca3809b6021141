"""HTTP checks: a scripted conversation with an app service (log in → fill a cart → pay).

Steps run in order and share ONE cookie jar, so a session cookie set by `/login` is sent by
every later step. The first failing step stops the check.

Per step:
- `path` is relative to the service's endpoint (`runtime.endpoint(service)`); absolute URLs
  are refused, and redirects are followed only within the same scheme, host and port (when
  `expect.status` is a 3xx, redirects are not followed at all, so the 3xx can be checked).
- String values in `json`, `form` and `headers` that are secret references (`env:NAME`,
  `file:/path`, `cmd:program`) are resolved (and thereby masked in every detail).
- `${name}` in `path`, body and header strings is replaced by a value saved by an earlier step
  (`save: {order: "order_id"}`) or offered by the drill (`CheckContext.values`). In a JSON body a
  string that is exactly one placeholder takes the saved value with its JSON type (`42`, not
  `"42"`). An unknown placeholder fails the step.
- Expectations: `status` (default 200); `contains`, a substring of the body; `json`, a map of
  JSON paths (`a.b[0].c`, `[0].id`, `items[-1]`, optional leading `$.`) to expected values.
  A plain expected value must be equal with its JSON type (`"42"` is not `42`, `true` is not
  `1`; `1` equals `1.0`). A map of operators compares instead:
  `$eq`, `$ne` (equality as above), `$gt`, `$gte`, `$lt`, `$lte` (numbers, or strings that
  read as numbers such as "12.50"), `$contains` (substring of a string, element of a list, key
  of an object), `$exists` (true/false). Several operators in one map must all hold:
  `{"$gte": 1, "$lte": 100}`. `$expr` compares with an arithmetic expression of numbers and
  saved values: `{"$expr": "${p1_price} * 2 + ${p2_price}"}` (+ - * / and parentheses only).

Each request has a timeout of `CheckContext.http_timeout` (10 s) for connecting and for each
read; environment proxies are ignored (staging is reached directly, never through a proxy).
"""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from backupctl.checks.base import CheckContext, CheckOutcome, as_number, excerpt, register_check, show
from backupctl.core.secrets import SCHEMES, SecretRef
from backupctl.drills.schema import HttpCheck, HttpStep
from backupctl.errors import ConfigError, JobFailed
from backupctl.staging.origin import StayOnOrigin, origin_of

MAX_BODY = 1024 * 1024  # bytes of a response kept for expectations; smoke checks need no more
USER_AGENT = "backupctl-drill"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
_INDEX = re.compile(r"\[(-?\d+)\]")
_KEY = re.compile(r"[^.\[\]]+")
_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$contains", "$exists", "$expr"})


# ------------------------------------------------------------------------------------- JSON paths
class PathMissing(LookupError):
    """The JSON path leads nowhere; the message says where it stopped."""


def parse_json_path(path: str) -> list[str | int]:
    """`a.b[0].c` -> ['a', 'b', 0, 'c']. ConfigError for a malformed path."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:].removeprefix(".")
    tokens: list[str | int] = []
    position = 0
    while position < len(text):
        index = _INDEX.match(text, position)
        if index:
            tokens.append(int(index[1]))
            position = index.end()
            continue
        if tokens:
            if text[position] != ".":
                raise ConfigError(f"JSON path '{path}' is malformed at character {position + 1}")
            position += 1
        key = _KEY.match(text, position)
        if not key:
            raise ConfigError(f"JSON path '{path}' is malformed at character {position + 1}")
        tokens.append(key[0])
        position = key.end()
    return tokens


def lookup(document: Any, path: str) -> Any:
    """The value at `path` in a parsed JSON document; PathMissing says where the path broke off."""
    current = document
    walked = ""
    for token in parse_json_path(path):
        where = walked or "the top level"
        if isinstance(token, int):
            if not isinstance(current, list):
                raise PathMissing(f"{where} is {_json_type(current)}, not an array")
            if not -len(current) <= token < len(current):
                raise PathMissing(f"index {token} is out of range at {where} (array of {len(current)})")
            current = current[token]
            walked += f"[{token}]"
        else:
            if not isinstance(current, dict):
                raise PathMissing(f"{where} is {_json_type(current)}, not an object")
            if token not in current:
                raise PathMissing(f"no key '{token}' at {where}")
            current = current[token]
            walked += f".{token}" if walked else token
    return current


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# ----------------------------------------------------------------------------------- expectations
def json_equal(expected: Any, actual: Any) -> bool:
    """Equality with JSON types: booleans are not numbers, 1 equals 1.0, containers recursively."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(json_equal(expected[k], actual[k]) for k in expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(json_equal, expected, actual))
    return type(expected) is type(actual) and bool(expected == actual)


def is_operator_map(expected: Any) -> bool:
    """True for `{"$gte": 1}`-style expectations (every key starts with `$`)."""
    return isinstance(expected, dict) and bool(expected) and all(str(k).startswith("$") for k in expected)


def check_value(expected: Any, document: Any, path: str) -> str | None:
    """None when the value at `path` meets `expected`, else what is wrong (for the detail)."""
    try:
        actual, found, missing = lookup(document, path), True, ""
    except PathMissing as error:
        actual, found, missing = None, False, str(error)
    if not is_operator_map(expected):
        if not found:
            return f"{path}: expected {show(expected)}, but it is missing ({missing})"
        if json_equal(expected, actual):
            return None
        return f"{path}: expected {show(expected)}, got {show(actual)}"
    problems = []
    for operator, operand in expected.items():
        if operator not in _OPERATORS:
            known = ", ".join(sorted(_OPERATORS))
            raise ConfigError(f"unknown operator '{operator}' for {path} (known: {known})")
        if operator == "$exists":
            if bool(operand) != found:
                problems.append(f"expected it to {'exist' if operand else 'be absent'}"
                                + (f" ({missing})" if missing else f", got {show(actual)}"))
        elif not found:
            problems.append(f"expected {operator} {show(operand)}, but it is missing ({missing})")
        elif not _operator_holds(operator, operand, actual):
            problems.append(f"expected {operator} {show(operand)}, got {show(actual)}")
    return f"{path}: " + "; ".join(problems) if problems else None


def evaluate_arithmetic(text: str) -> float:
    """`{"$expr": "${p1_price} * 2 + ${p2_price}"}`: numbers with + - * / and parentheses only
    (after placeholders are filled), evaluated without eval()."""
    import ast
    import operator as op

    allowed = {ast.Add: op.add, ast.Sub: op.sub, ast.Mult: op.mul, ast.Div: op.truediv}

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value: Any = node.value
            return float(value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in allowed:
            return float(allowed[type(node.op)](walk(node.left), walk(node.right)))
        raise ConfigError(f"$expr allows numbers, + - * / and parentheses only: {text!r}")

    try:
        return walk(ast.parse(str(text), mode="eval"))
    except SyntaxError:
        raise ConfigError(f"$expr is not an arithmetic expression: {text!r}") from None


def _operator_holds(operator: str, operand: Any, actual: Any) -> bool:
    if operator == "$expr":
        got = as_number(actual)
        return got is not None and abs(float(got) - evaluate_arithmetic(operand)) < 1e-9
    if operator == "$eq":
        return json_equal(operand, actual)
    if operator == "$ne":
        return not json_equal(operand, actual)
    if operator == "$contains":
        if isinstance(actual, str):
            return isinstance(operand, str) and operand in actual
        if isinstance(actual, list):
            return any(json_equal(operand, item) for item in actual)
        return isinstance(actual, dict) and operand in actual
    want, got = as_number(operand), as_number(actual)
    if want is None:
        raise ConfigError(f"{operator} needs a number, got {show(operand)}")
    if got is None:
        return False
    return {"$gt": got > want, "$gte": got >= want, "$lt": got < want, "$lte": got <= want}[operator]


# ---------------------------------------------------------------------- placeholders and secrets
def fill_text(text: str, values: dict[str, Any]) -> str:
    """Replace `${name}` by its value (JSON text for non-strings); ConfigError for an unknown name."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise ConfigError(f"placeholder ${{{name}}} is not defined (known: {known})")
        value = values[name]
        return value if isinstance(value, str) else json.dumps(value)

    return _PLACEHOLDER.sub(replace, text)


def is_secret_ref(text: str) -> bool:
    scheme, separator, _ = text.partition(":")
    return bool(separator) and scheme in SCHEMES


def resolve_value(value: Any, values: dict[str, Any], *, typed: bool = False) -> Any:
    """Resolve secret references and fill placeholders in every string inside `value`.

    Only strings written in the drill are resolved as secret references, never text that came
    from a placeholder: a response must not be able to make us read a file or run a `cmd:`.
    With `typed` (JSON bodies) a string that is exactly `${name}` takes the value's own type.
    """
    if isinstance(value, str):
        if is_secret_ref(value):
            try:
                return SecretRef.parse(value).resolve()
            except ValueError as error:
                raise ConfigError(str(error)) from None
        whole = _PLACEHOLDER.fullmatch(value)
        if typed and whole and whole[1] in values:
            return values[whole[1]]
        return fill_text(value, values)
    if isinstance(value, dict):
        return {key: resolve_value(item, values, typed=typed) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_value(item, values, typed=typed) for item in value]
    return value


# ---------------------------------------------------------------------------------------- requests
@dataclass
class Response:
    status: int
    body: bytes
    redirect_refused: str | None = None
    headers: Any = None  # an email.message.Message (case-insensitive get), None when absent
    sha256: str = ""  # of the whole body, also beyond the MAX_BODY bytes kept
    size: int = 0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


# The rule is shared with the readiness probes (staging/origin.py).
_StayOnService = StayOnOrigin
_origin = origin_of


def _read_body(answer: Any) -> tuple[bytes, str, int]:
    """(the first MAX_BODY bytes, sha256 hex of the whole body, its size): a download is
    hashed to its end without being kept."""
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    while chunk := answer.read(1 << 16):
        digest.update(chunk)
        size += len(chunk)
        if len(kept) < MAX_BODY:
            kept += chunk[: MAX_BODY - len(kept)]
    return bytes(kept), digest.hexdigest(), size


def _send(jar: http.cookiejar.CookieJar, request: urllib.request.Request, timeout: float,
          follow_redirects: bool) -> Response:
    redirects = _StayOnService(_origin(request.full_url), follow_redirects)
    # ProxyHandler({}): never send staging traffic (and its credentials) through an env proxy.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar), redirects
    )
    try:
        with opener.open(request, timeout=timeout) as answer:
            body, digest, size = _read_body(answer)
            return Response(answer.status, body, redirects.refused, answer.headers, digest, size)
    except urllib.error.HTTPError as error:  # 4xx/5xx (and unfollowed 3xx) are answers too
        body, digest, size = _read_body(error) if error.fp is not None else (b"", "", 0)
        return Response(error.code, body, redirects.refused, error.headers, digest, size)
    except TimeoutError:
        raise JobFailed(f"no answer within {timeout:g}s") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            raise JobFailed(f"no answer within {timeout:g}s") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise JobFailed(f"cannot connect: {text}") from None
    except (OSError, http.client.HTTPException) as error:  # reset, closed mid-answer, bad status line
        raise JobFailed(f"the connection failed: {type(error).__name__}: {error}") from None


# ------------------------------------------------------------------------------------------- steps
@register_check("http")
def run_http(check: HttpCheck, context: CheckContext) -> CheckOutcome:
    """Run the steps of an HTTP check against its service, sharing one cookie jar."""
    service = context.service(check.service)
    host, port = context.runtime.endpoint(service)
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    jar = http.cookiejar.CookieJar()
    values: dict[str, Any] = dict(context.values)
    records: list[dict[str, Any]] = []
    total = len(check.steps)
    for number, step in enumerate(check.steps, start=1):
        label = f"{step.method} {step.path}"
        started = time.monotonic()
        status: int | None = None
        try:
            path = _fill_path(step.path, values)
            label = f"{step.method} {path}"
            limit = step.timeout or check.timeout
            timeout = limit.total_seconds() if limit is not None else context.http_timeout
            response = _send(jar, _build_request(base, path, step, values), timeout,
                             follow_redirects=not 300 <= step.expect.status < 400)
            status = response.status
            problem = _judge(step, response, values)
        except (ConfigError, JobFailed) as error:
            problem = str(error)
        record = {"step": label, "status": status, "ok": problem is None,
                  "seconds": round(time.monotonic() - started, 6), "detail": problem or f"{status}"}
        records.append(record)
        if problem is not None:
            return CheckOutcome(False, f"step {number}/{total} {label}: {problem}", records)
    passed = "; ".join(f"{r['step']} → {r['status']}" for r in records)
    return CheckOutcome(True, f"{total} step{'s' if total > 1 else ''} passed: {passed}", records)


def _fill_path(template: str, values: dict[str, Any]) -> str:
    # Saved values go into the URL percent-encoded ('/' kept, so a saved path still works).
    path = _PLACEHOLDER.sub(lambda m: quote(fill_text(m[0], values), safe="/"), template)
    if not path.startswith("/") or path.startswith("//"):
        raise ConfigError(f"path '{path}' must start with a single '/': checks only talk to their service")
    return path


def _build_request(base: str, path: str, step: HttpStep, values: dict[str, Any]) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json, */*;q=0.5"}
    data: bytes | None = None
    if step.json_body is not None and step.form is not None:
        raise ConfigError("a step sends either a json body or a form, not both")
    if step.json_body is not None:
        data = json.dumps(resolve_value(step.json_body, values, typed=True)).encode()
        headers["Content-Type"] = "application/json"
    elif step.form is not None:
        data = urlencode(resolve_value(step.form, values)).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    # Header names are case-insensitive: the drill's own headers replace the defaults above.
    defaults = {name.lower(): name for name in headers}
    for name, value in step.headers.items():
        headers.pop(defaults.get(name.lower(), name), None)
        headers[name] = str(resolve_value(value, values))
    return urllib.request.Request(base + path, data=data, headers=headers, method=step.method)


def _judge(step: HttpStep, response: Response, values: dict[str, Any]) -> str | None:
    """None when the response meets the step's expectations (and saves its values), else why not."""
    expect = step.expect
    body = f"; body: {excerpt(response.text)}" if response.body else "; empty body"
    if response.status != expect.status:
        refused = (f" (redirect to {response.redirect_refused} not followed: it leaves the service)"
                   if response.redirect_refused else "")
        return f"expected status {expect.status}, got {response.status}{refused}{body}"
    for wanted in _texts(expect.contains, values):
        if wanted not in response.text:
            return f"expected the body to contain {show(wanted)}{body}"
    for unwanted in _texts(expect.not_contains, values):
        if unwanted in response.text:
            return f"expected the body not to contain {show(unwanted)}{body}"
    for name, wanted in expect.headers.items():
        found = response.headers.get(name) if response.headers is not None else None
        text = str(resolve_value(wanted, values))
        if found is None or text not in found:
            return f"expected header {name} containing {show(text)}, got {show(found)}"
    if expect.sha256 is not None and response.sha256 != expect.sha256.lower():
        wanted = expect.sha256.lower()
        return f"expected a body with sha256 {wanted}, got {response.sha256} ({response.size} bytes)"
    json_saves = {name: how for name, how in step.save.items() if not how.startswith(("header:", "regex:"))}
    for name, how in step.save.items():
        if name not in json_saves and (problem := _save_other(name, how, response, values)) is not None:
            return problem
    if not expect.json_paths and not json_saves:
        return None
    try:
        document = json.loads(response.body)
    except ValueError:
        return f"expected a JSON body (for json/save), got{body.removeprefix(';')}"
    problems = [
        problem for path, expected in expect.json_paths.items()
        if (problem := check_value(resolve_value(expected, values, typed=True), document, path)) is not None
    ]
    if problems:
        return "; ".join(problems)
    for name, path in json_saves.items():
        try:
            values[name] = lookup(document, path.removeprefix("json:"))
        except PathMissing as error:
            return f"cannot save ${{{name}}} from {path}: {error}"
    return None


def _texts(wanted: str | list[str] | None, values: dict[str, Any]) -> list[str]:
    """`contains`/`not_contains` as a list of texts, placeholders filled."""
    if wanted is None:
        return []
    return [str(resolve_value(text, values)) for text in ([wanted] if isinstance(wanted, str) else wanted)]


def _save_other(name: str, how: str, response: Response, values: dict[str, Any]) -> str | None:
    """Save `header:NAME` or `regex:PATTERN` (first group, else the whole match) as ${name}."""
    kind, _, what = how.partition(":")
    if kind == "header":
        found = response.headers.get(what) if response.headers is not None else None
        if found is None:
            return f"cannot save ${{{name}}}: the response has no header {what}"
        values[name] = found
        return None
    try:
        match = re.search(what, response.text)
    except re.error as error:
        return f"cannot save ${{{name}}}: bad regex {show(what)}: {error}"
    if match is None:
        return f"cannot save ${{{name}}}: {show(what)} does not match; body: {excerpt(response.text)}"
    values[name] = match.group(1) if match.groups() else match.group(0)
    return None
