"""`@job_alerts(kind)`: notifications and metrics for a CLI command that runs a job of a policy.

Put it directly above the command function (below `@pass_app`): after the command returns or
raises, the outcome is recorded by `backupctl.jobs.record_job` (notify + per-kind metrics), and
the command's own result or exception is passed on unchanged. Commands stay as they are.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from backupctl.cli.context import App

if TYPE_CHECKING:  # notify imports pydantic: not at the start-up of every command
    from backupctl.notify import Job

P = ParamSpec("P")
R = TypeVar("R")


def _policy_argument(arguments: dict[str, Any]) -> str | None:
    """The policy a command's arguments name: `policy_name`, or a drill's `what` (file or name)."""
    name = arguments.get("policy_name")
    if isinstance(name, str):
        return name
    what = arguments.get("what")
    if not isinstance(what, str) or what == "cleanup":
        return None
    from pathlib import Path

    path = Path(what)
    if path.suffix in (".yaml", ".yml") or path.exists():
        from backupctl.drills.loader import load_drill

        return load_drill(path).policy
    return what


def job_alerts(job: Job) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a command callback `(app, ...)` whose run is a `job` of one policy.

    Dry runs (`dry_run=True`) and commands that name no policy are not recorded. A failure is
    any exception but a configuration error (exit 2: nothing ran), and is re-raised."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            app = next((arg for arg in args if isinstance(arg, App)), None)
            if app is None or kwargs.get("dry_run"):
                return function(*args, **kwargs)
            started = time.monotonic()
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                _record(app, job, kwargs, started, error)
                raise
            _record(app, job, kwargs, started, None)
            return result

        return run

    return decorate


def _record(app: App, job: Job, arguments: dict[str, Any], started: float, error: Exception | None) -> None:
    from backupctl.errors import EXIT_CONFIG, BackupctlError
    from backupctl.jobs import record_job

    if isinstance(error, BackupctlError) and error.exit_code == EXIT_CONFIG:
        return  # bad usage or configuration: the job never ran (exit 2 says so)
    try:
        name = _policy_argument(arguments)
        policy = app.policy(name, check_secrets=False).policy if name else None
    except Exception:  # the policy itself is unreadable: the command's own error says why
        return
    if policy is None:
        return
    seconds = time.monotonic() - started
    record_job(
        app.settings, policy, job, ok=error is None, seconds=seconds, error=str(error) if error else None
    )


def record_compliance(app: App, results: list[Any]) -> None:
    """After `status`: record each policy's compliance (alerts only when it is lost or regained)."""
    from backupctl.jobs import record_job

    for result in results:
        try:
            policy = app.policy(result.policy, check_secrets=False).policy
        except Exception:
            continue
        failing = [f"{rule.name}: {rule.detail}" for rule in result.rules if not rule.ok]
        compliant = bool(result.compliant)
        summary = {"compliant": compliant}
        error = "; ".join(failing) or None
        record_job(app.settings, policy, "status", ok=compliant, seconds=0.0, error=error, summary=summary)
