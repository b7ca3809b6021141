"""The check interface, its registry, and what every kind shares.

A check kind is a function `run(check, context) -> CheckOutcome` registered under the `type:`
the drill YAML uses (`http`, `sql`, `command`). `run_check` is the only entry point the drill
orchestration calls: it looks the kind up, measures the duration, turns any exception into a
failed result (one broken check must never abort a drill: the staging still has to be torn down
and the report written) and masks every registered secret in what the result says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from backupctl.core.secrets import mask
from backupctl.drills.schema import Service
from backupctl.errors import BackupctlError, ConfigError
from backupctl.staging.base import StagingRuntime

DEFAULT_HTTP_TIMEOUT = 10.0  # seconds per HTTP request
EXCERPT_CHARS = 300  # how much of a body or an output a failure detail quotes


@dataclass
class CheckResult:
    """What one check found.

    `detail` says what was expected and what came (secrets masked); `duration` is in seconds;
    `steps` holds one dict per HTTP step (`step`, `status`, `ok`, `seconds`, `detail`).
    """

    name: str
    kind: str
    ok: bool
    detail: str
    duration: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    not_run: bool = False  # the drill stopped before this check ran (ok is then False)

    @property
    def status(self) -> str:
        """"passed", "failed" or "not run"."""
        return "not run" if self.not_run else "passed" if self.ok else "failed"


@dataclass
class CheckOutcome:
    """What a kind's `run` returns; `run_check` adds name, kind and duration."""

    ok: bool
    detail: str
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckContext:
    """Everything a check may use: the staging runtime and the drill's services by name.

    `values` are extra `${name}` placeholders offered to HTTP steps (e.g. the per-run drill
    secret); values saved by earlier steps of a check take precedence over them.
    """

    runtime: StagingRuntime
    services: Mapping[str, Service]
    values: dict[str, str] = field(default_factory=dict)
    http_timeout: float = DEFAULT_HTTP_TIMEOUT

    def service(self, name: str) -> Service:
        """The service called `name`; ConfigError naming the known ones when there is none."""
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigError(f"the check refers to service '{name}', which the drill does not define "
                              f"(services: {known})") from None


class CheckKind(Protocol):
    """One kind of check: run `check` (a model from backupctl.drills.schema) in `context`."""

    def __call__(self, check: Any, context: CheckContext, /) -> CheckOutcome: ...


_REGISTRY: dict[str, CheckKind] = {}
_BUILTIN = ("http", "sql", "command")  # modules under backupctl.checks, imported for registration


def register_check(kind: str) -> Callable[[CheckKind], CheckKind]:
    """Decorator: register the run function of `type: kind`. Registering a kind twice is an error."""

    def decorate(run: CheckKind) -> CheckKind:
        if kind in _REGISTRY:
            raise RuntimeError(f"check type '{kind}' is registered twice")
        _REGISTRY[kind] = run
        return run

    return decorate


def registered_checks() -> list[str]:
    """The check types available in this build."""
    _load_builtin()
    return sorted(_REGISTRY)


def run_check(check: Any, context: CheckContext) -> CheckResult:
    """Run one check and report what happened; never raises for a failing or broken check.

    `check` is an HttpCheck, SqlCheck or CommandCheck (anything with `type` and `name`).
    KeyboardInterrupt and SystemExit do propagate: the drill must stop and tear down.
    """
    kind = str(getattr(check, "type", "?"))
    name = str(getattr(check, "name", "?"))
    started = time.monotonic()
    try:
        _load_builtin()
        try:
            run = _REGISTRY[kind]
        except KeyError:
            raise ConfigError(f"check type '{kind}' is not available in this build "
                              f"(available: {', '.join(sorted(_REGISTRY))})") from None
        outcome = run(check, context)
    except Exception as error:  # a crashing check is a failed check, not a crashed drill
        outcome = CheckOutcome(False, describe_error(error))
    return CheckResult(
        name=name,
        kind=kind,
        ok=outcome.ok,
        detail=mask(outcome.detail),
        duration=time.monotonic() - started,
        steps=[mask_tree(step) for step in outcome.steps],
    )


def _load_builtin() -> None:
    """Import the built-in kinds for their registration: an explicit list, no scanning."""
    import importlib

    for module in _BUILTIN:
        importlib.import_module(f"backupctl.checks.{module}")


# ---------------------------------------------------------------------------------- shared helpers
def describe_error(error: BaseException) -> str:
    """Operator-facing text of an exception: our own errors speak for themselves."""
    if isinstance(error, BackupctlError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def mask_tree(value: Any) -> Any:
    """`mask` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_tree(item) for item in value]
    return value


def excerpt(text: str, limit: int = EXCERPT_CHARS, *, tail: bool = False) -> str:
    """A masked one-line excerpt of `text`: the head (bodies) or the tail (command output)."""
    flat = " ".join(mask(text).split())
    if len(flat) <= limit:
        return flat
    return "…" + flat[-limit:] if tail else flat[:limit] + "…"


def as_number(value: Any) -> Decimal | None:
    """`value` as an exact number when it is one or reads as one ('42', ' 4.50 ', 42, 1.5).

    Booleans are not numbers here: `true` must not pass for 1.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        # via str: Decimal(0.1) would be 0.1000000000000000055..., Decimal("0.1") is what was meant
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def show(value: Any) -> str:
    """A short, unambiguous rendering of an expected or actual value for details."""
    text = repr(value) if isinstance(value, str) else _json_like(value)
    return text if len(text) <= 120 else text[:120] + "…"


def _json_like(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)
