"""Prometheus textfile-collector metrics for one policy (see docs/monitoring.md).

node_exporter's textfile collector reads every `*.prom` file of its directory; write one file per
policy (`backupctl-<policy>.prom`) with `write_metrics_file`, which replaces it atomically.
`render_metrics` is pure; `update_metrics_file` reads the previous file back so that a failed run
updates `backupctl_last_run_*` but keeps `backupctl_last_success_timestamp_seconds`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backupctl.actions.backup import BackupResult
    from backupctl.actions.status import PolicyStatus
    from backupctl.catalog.models import DrillRow

COMPLIANCE_RULES = ("copies", "media", "offsite", "immutable", "errors", "rpo", "pitr_rpo")
SUCCESS_STATUSES = ("complete",)

# name -> (type, help). Order here is the order in the file.
METRICS: dict[str, tuple[str, str]] = {
    "backupctl_last_success_timestamp_seconds": (
        "gauge",
        "Unix time of the last backup run that completed on every target.",
    ),
    "backupctl_last_run_timestamp_seconds": ("gauge", "Unix time the last backup run ended."),
    "backupctl_last_run_success": ("gauge", "1 if the last backup run completed on every target, else 0."),
    "backupctl_last_run_duration_seconds": ("gauge", "Wall-clock duration of the last backup run."),
    "backupctl_source_bytes": (
        "gauge",
        "Bytes of each source in the last run: kind=plain (dump) or stored (compressed + encrypted).",
    ),
    "backupctl_target_bytes": ("gauge", "Encrypted bytes the last run stored on each target."),
    "backupctl_snapshots": ("gauge", "Complete snapshots of the policy held by each target (catalog)."),
    "backupctl_compliance": ("gauge", "1 if the 3-2-1-1-0 / RPO rule passes, else 0."),
    "backupctl_rpo_age_seconds": ("gauge", "Age of the newest complete snapshot."),
    "backupctl_drill_last_success": ("gauge", "1 if the last restore drill passed, else 0."),
    "backupctl_drill_last_rto_seconds": ("gauge", "Measured recovery time of the last restore drill."),
    "backupctl_drill_last_timestamp_seconds": ("gauge", "Unix time the last restore drill finished."),
}

Sample = tuple[str, dict[str, str], float]


def escape_label(value: str) -> str:
    """Escape a label value for the text exposition format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value)


def render_metrics(
    policy_name: str,
    *,
    backup: Mapping[str, Any] | None,
    status: PolicyStatus | None,
    snapshots_per_target: Mapping[str, int],
    last_drill: Mapping[str, Any] | None,
    now: datetime,
    previous_last_success: float | None = None,
) -> str:
    """Render the metrics of one policy in the Prometheus text exposition format.

    `backup` is a run summary (`summary_from_result` / `summary_from_error`, or
    `BackupResult.as_dict()`): `status` ("complete" | "partial" | "failed"), `seconds`,
    `sources` {name: {plain_bytes, stored_bytes}}, `targets` {name: {stored_bytes?}}. `now` is
    the end of the run. `last_drill` has `ok`, `rto_seconds`, `finished_at` (`drill_summary`).
    A run that did not complete keeps `previous_last_success` as the last success timestamp.
    """
    policy = {"policy": policy_name}
    samples: list[Sample] = []

    def add(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            samples.append((name, {**policy, **labels}, float(value)))

    last_success = previous_last_success
    if backup is not None:
        succeeded = backup.get("status") in SUCCESS_STATUSES
        if succeeded:
            last_success = now.timestamp()
        add("backupctl_last_success_timestamp_seconds", last_success)
        add("backupctl_last_run_timestamp_seconds", now.timestamp())
        add("backupctl_last_run_success", 1 if succeeded else 0)
        add("backupctl_last_run_duration_seconds", backup.get("seconds"))
        for source, sizes in sorted((backup.get("sources") or {}).items()):
            add("backupctl_source_bytes", sizes.get("plain_bytes"), source=source, kind="plain")
            add("backupctl_source_bytes", sizes.get("stored_bytes"), source=source, kind="stored")
        for target, info in sorted((backup.get("targets") or {}).items()):
            add("backupctl_target_bytes", info.get("stored_bytes"), target=target)
    else:
        add("backupctl_last_success_timestamp_seconds", last_success)
    for target, count in sorted(snapshots_per_target.items()):
        add("backupctl_snapshots", count, target=target)
    if status is not None:
        rules = {rule.name: rule.ok for rule in status.rules}
        for rule in COMPLIANCE_RULES:
            if rule in rules:
                add("backupctl_compliance", 1 if rules[rule] else 0, rule=rule)
        add("backupctl_rpo_age_seconds", status.latest_age_seconds)
    if last_drill is not None:
        add("backupctl_drill_last_success", 1 if last_drill.get("ok") else 0)
        add("backupctl_drill_last_rto_seconds", last_drill.get("rto_seconds"))
        add("backupctl_drill_last_timestamp_seconds", _timestamp(last_drill.get("finished_at")))

    lines: list[str] = []
    if status is not None:
        # Each engine's point-in-time archive gauges, under the engine's own names
        # (backupctl_pitr_* for WAL, backupctl_binlog_* for binlogs: actions/pitr_status.py).
        pitr_lines = render_samples(
            [
                (name, help_text, {**policy, "source": item.source}, value)
                for item in status.pitr
                for name, help_text, value in item.metrics
            ]
        )
    for name, (kind, help_text) in METRICS.items():
        family = [sample for sample in samples if sample[0] == name]
        if not family:
            continue
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        for _, labels, value in family:
            rendered = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{rendered}}} {_format_value(value)}")
    if status is not None and pitr_lines.strip():
        lines.append(pitr_lines.rstrip("\n"))
    return "\n".join(lines) + "\n"


def render_samples(samples: list[tuple[str, str, Mapping[str, str], float]]) -> str:
    """Text exposition of (name, help, labels, value) samples: one HELP/TYPE per family, in the
    order families first appear; a name ending in `_total` is a counter, any other a gauge."""
    families: dict[str, tuple[str, list[tuple[Mapping[str, str], float]]]] = {}
    for name, help_text, labels, value in samples:
        families.setdefault(name, (help_text, []))[1].append((labels, value))
    lines: list[str] = []
    for name, (help_text, members) in families.items():
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}")
        for labels, value in members:
            rendered = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{rendered}}} {_format_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def _unescape_label(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_metrics(text: str) -> list[Sample]:
    """Parse samples of the text format (as written by `render_metrics`); comments are skipped."""
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a metrics sample: {line!r}")
        name, label_text, value = match.groups()
        labels: dict[str, str] = {}
        position = 0
        label_text = label_text or ""
        while position < len(label_text):
            label = _LABEL.match(label_text, position)
            if label is None:
                raise ValueError(f"bad labels in {line!r}")
            labels[label.group(1)] = _unescape_label(label.group(2))
            position = label.end()
        samples.append((name, labels, float(value)))
    return samples


def read_previous_last_success(path: Path, policy_name: str) -> float | None:
    """The last success timestamp of `policy_name` in an existing metrics file, if any."""
    try:
        samples = parse_metrics(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    for name, labels, value in samples:
        if name == "backupctl_last_success_timestamp_seconds" and labels.get("policy") == policy_name:
            return value
    return None


def write_metrics_file(path: Path | str, text: str) -> None:
    """Replace `path` atomically: temp file in the same directory, fsync, chmod 0644, rename.

    The temp name does not end in `.prom`, so the textfile collector never reads a partial file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def update_metrics_file(path: Path | str, policy_name: str, **kwargs: Any) -> str:
    """Render (keeping the previous last success from `path`) and write atomically; returns the text."""
    target = Path(path)
    kwargs.setdefault("previous_last_success", read_previous_last_success(target, policy_name))
    text = render_metrics(policy_name, **kwargs)
    write_metrics_file(target, text)
    return text


def summary_from_result(result: BackupResult) -> dict[str, Any]:
    """`BackupResult.as_dict()` plus the encrypted bytes each target stored."""
    summary = result.as_dict()
    for name, outcome in result.targets.items():
        stored = outcome.stored_bytes or sum(a.stored_bytes for a in outcome.artifacts)
        summary["targets"].setdefault(name, {})["stored_bytes"] = stored
    return summary


def summary_from_error(policy_name: str, error: BaseException | str, seconds: float) -> dict[str, Any]:
    """A run summary for a run that raised (JobFailed, PartialFailure, ...): no sizes known."""
    from backupctl.core.secrets import mask
    from backupctl.errors import PartialFailure

    return {
        "policy": policy_name,
        "status": "partial" if isinstance(error, PartialFailure) else "failed",
        "seconds": round(seconds, 3),
        "error": mask(str(error)),
    }


def drill_summary(row: DrillRow | None) -> dict[str, Any] | None:
    """The fields `render_metrics` needs from the newest `drill_history` row."""
    if row is None:
        return None
    return {"ok": bool(row.ok), "rto_seconds": row.rto_seconds, "finished_at": row.finished_at}


def snapshots_per_target(snapshots: list[Any], target_names: list[str]) -> dict[str, int]:
    """Count complete copies per target from `Catalog.snapshots(policy)` (SnapshotView list)."""
    counts = dict.fromkeys(target_names, 0)
    for view in snapshots:
        for target, state in view.targets.items():
            if state == "complete":
                counts[target] = counts.get(target, 0) + 1
    return counts
