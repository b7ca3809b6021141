"""Alerts and metrics for every job kind, not only backups (docs/monitoring.md).

After a drill, verify, prune, replicate or status run, `record_job`:
- keeps the job's last outcome in `STATE_DIR/jobs/<policy>.json` (last run, ok, last success,
  duration per job kind), so a success after a failure is a `recovered` event and a `status`
  run alerts only when compliance is lost or regained, not every time it is checked;
- sends the outcome through the policy's notification channels (backupctl.notify);
- writes the job kind's own Prometheus textfile next to the policy's `metrics_file`
  (`backupctl-shop.prom` → `backupctl-shop-verify.prom`), so one job never erases another's
  gauges. Its gauges carry a `job` label and include `backupctl_job_last_success_timestamp_seconds`
  for dead-man alerts.

All of it is best effort: a problem is logged as a warning and never changes the exit code.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.core.secrets import mask
from backupctl.metrics import escape_label, write_metrics_file

if TYPE_CHECKING:
    from backupctl.notify import Job
    from backupctl.policy.schema import Policy
    from backupctl.settings import Settings

log = logging.getLogger("backupctl.jobs")

JOB_METRICS: dict[str, str] = {
    "backupctl_job_last_run_timestamp_seconds": "Unix time the last run of the job kind ended.",
    "backupctl_job_last_run_success": "1 if the last run of the job kind succeeded, else 0.",
    "backupctl_job_last_success_timestamp_seconds": "Unix time of the last successful run of the job kind.",
    "backupctl_job_last_run_duration_seconds": "Wall-clock duration of the last run of the job kind.",
}


@dataclass
class JobState:
    """The last outcome of one job kind of one policy."""

    last_run: float
    ok: bool
    seconds: float
    last_success: float | None
    error: str | None = None


def metrics_path(policy: Policy, job: Job) -> Path | None:
    """The textfile of `job` beside the policy's metrics_file, or None when it has none."""
    if not policy.metrics_file:
        return None
    base = Path(policy.metrics_file)
    stem = base.name[: -len(".prom")] if base.name.endswith(".prom") else base.name
    return base.with_name(f"{stem}-{job}.prom")


def render_job_metrics(policy_name: str, job: Job, state: JobState) -> str:
    """The Prometheus text of one job kind's gauges (labels `policy`, `job`)."""
    values = {
        "backupctl_job_last_run_timestamp_seconds": state.last_run,
        "backupctl_job_last_run_success": 1.0 if state.ok else 0.0,
        "backupctl_job_last_success_timestamp_seconds": state.last_success,
        "backupctl_job_last_run_duration_seconds": round(state.seconds, 3),
    }
    labels = f'policy="{escape_label(policy_name)}",job="{job}"'
    lines: list[str] = []
    for name, help_text in JOB_METRICS.items():
        value = values[name]
        if value is None:
            continue  # no success yet: absent, not 0 (as in the backup file)
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f"{name}{{{labels}}} {_number(value)}",
        ]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _state_file(settings: Settings, policy_name: str) -> Path:
    return settings.state_dir / "jobs" / f"{policy_name}.json"


def _read_states(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_job(
    settings: Settings,
    policy: Policy,
    job: Job,
    *,
    ok: bool,
    seconds: float,
    error: str | None = None,
    summary: dict[str, Any] | None = None,
) -> JobState:
    """Remember, notify and write the metrics of one finished `job` run; returns its new state.

    `status` notifies only on a change (compliance lost, regained); other kinds notify every
    failure, and `recovered` when a success follows a failure. Never raises."""
    from backupctl.notify import notifier_from_config

    now = time.time()
    path = _state_file(settings, policy.name)
    states = _read_states(path)
    previous = states.get(job)
    previous_ok = bool(previous.get("ok")) if previous else None
    last_success = now if ok else (previous or {}).get("last_success")
    state = JobState(now, ok, seconds, last_success, mask(error) if error else None)
    details = {"job": job, "seconds": round(seconds, 3), **(summary or {})}
    try:
        notifier = notifier_from_config(policy.notifications)
        if not ok and (job != "status" or previous_ok is not False):
            notifier.failure(policy.name, state.error or "failed", details, job)
        elif ok and previous_ok is False:
            notifier.recovered(policy.name, details, job)
        elif ok:
            notifier.success(policy.name, details, job)
    except Exception as problem:  # a notification must never change the job's outcome
        log.warning("notifications for %s of %s not sent: %s", job, policy.name, mask(str(problem)))
    try:
        states[job] = asdict(state)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(states, indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as problem:
        log.warning("job state %s not written: %s", path, problem)
    target = metrics_path(policy, job)
    if target is not None:
        try:
            write_metrics_file(target, render_job_metrics(policy.name, job, state))
        except OSError as problem:
            log.warning("metrics file %s not written: %s", target, mask(str(problem)))
    return state
