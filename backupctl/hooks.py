"""Hooks: commands an operator runs around a backup (maintenance mode, flush, fsfreeze, ...).

Order of one run: the policy's `before`, then each source's `before` (policy order); the backup;
then on success each source's `after` and the policy's `after`, on failure (a `before` that failed
included) the sources' and the policy's `on_failure`. A failing or timed-out `before` aborts the
run with JobFailed (exit 1) before anything is written; a failing `after`/`on_failure` is logged
and fails the run too (after: exit 1) or is only logged (on_failure: the first error wins).
Every line a hook prints goes to the log. A string runs with `/bin/sh -c`, a list as argv. Hooks
see BACKUPCTL_POLICY, BACKUPCTL_HOOK (before/after/on_failure), BACKUPCTL_SOURCE for a source's
hooks and BACKUPCTL_ERROR in `on_failure`; secrets are not passed to them.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from typing import TypeVar

from backupctl.core.secrets import mask
from backupctl.errors import JobFailed
from backupctl.policy.schema import Hooks, Policy

log = logging.getLogger("backupctl.hooks")
T = TypeVar("T")


def _argv(command: str | list[str]) -> list[str]:
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def run_hook_commands(hooks: Hooks, stage: str, env: dict[str, str], where: str) -> None:
    """Run the `stage` commands of `hooks` in order. Raises JobFailed at the first that fails."""
    commands: list[str | list[str]] = getattr(hooks, stage)
    timeout = hooks.timeout.total_seconds()
    for command in commands:
        shown = command if isinstance(command, str) else " ".join(command)
        log.info("hook %s %s: %s", where, stage, mask(shown))
        try:
            done = subprocess.run(_argv(command), env={**os.environ, **env}, capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        except FileNotFoundError:
            raise JobFailed(f"hook {where} {stage}: program not found: {mask(shown)}") from None
        except subprocess.TimeoutExpired:
            message = f"hook {where} {stage} did not finish within {timeout:g}s: {mask(shown)}"
            raise JobFailed(message) from None
        for line in (done.stdout + done.stderr).splitlines():
            log.info("hook %s %s | %s", where, stage, mask(line))
        if done.returncode != 0:
            raise JobFailed(f"hook {where} {stage} exited with {done.returncode}: {mask(shown)}")


def _stages(policy: Policy, stage: str) -> list[tuple[Hooks, dict[str, str], str]]:
    base = {"BACKUPCTL_POLICY": policy.name, "BACKUPCTL_HOOK": stage}
    sources = [(s.hooks, {**base, "BACKUPCTL_SOURCE": s.name}, f"{policy.name}/{s.name}")
               for s in policy.sources if s.hooks is not None]  # fmt: skip
    own = [(policy.hooks, base, policy.name)] if policy.hooks is not None else []
    return own + sources if stage == "before" else sources + own


def run_with_hooks(policy: Policy, job: Callable[[], T]) -> T:
    """Run `job` (the backup) between the policy's and its sources' hooks; return its result.

    Raises JobFailed when a `before` or `after` hook fails; re-raises the job's own error after
    the `on_failure` hooks ran.
    """
    try:
        for hooks, env, where in _stages(policy, "before"):
            run_hook_commands(hooks, "before", env, where)
        result = job()
    except BaseException as error:
        for hooks, env, where in _stages(policy, "on_failure"):
            try:
                run_hook_commands(hooks, "on_failure", {**env, "BACKUPCTL_ERROR": mask(str(error))}, where)
            except JobFailed as hook_error:
                log.error("%s", hook_error)  # the backup's own error is the one that counts
        raise
    for hooks, env, where in _stages(policy, "after"):
        run_hook_commands(hooks, "after", env, where)
    return result
