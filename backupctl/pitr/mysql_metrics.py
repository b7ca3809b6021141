"""Prometheus textfile metrics of a source's binlog archive (docs/pitr-mysql.md, monitoring).

One file per source, `backupctl-<policy>-binlog-<source>.prom` next to the policy's own metrics
file, written atomically by `binlog collect --metrics-file` and `binlog status --metrics-file`.
"""

from __future__ import annotations

from typing import Any

from backupctl.metrics import escape_label

METRICS: dict[str, str] = {
    "backupctl_binlog_rpo_seconds": "Achieved RPO: now minus the time the newest archived binlog covers.",
    "backupctl_binlog_rpo_objective_seconds": "The binlog archive's RPO objective (binlog.rpo).",
    "backupctl_binlog_covered_until_timestamp_seconds": "Unix time up to which archived binlogs cover.",
    "backupctl_binlog_files": "Archived binlog files of the source.",
    "backupctl_binlog_stored_bytes": "Encrypted bytes of the archived binlogs (first binlog target).",
    "backupctl_binlog_gaps": "Holes in the chain from the oldest kept dump (0 when restorable to now).",
    "backupctl_binlog_ok": "1 when the RPO is met and the chain has no hole, else 0.",
}


def render_binlog_metrics(status: dict[str, Any], covered_until: int | None) -> str:
    """The text exposition of `BinlogStatus.as_dict()`; missing values are left out."""
    labels = f'policy="{escape_label(status["policy"])}",source="{escape_label(status["source"])}"'
    values = {
        "backupctl_binlog_rpo_seconds": status["rpo_seconds"],
        "backupctl_binlog_rpo_objective_seconds": status["objective_seconds"],
        "backupctl_binlog_covered_until_timestamp_seconds": covered_until,
        "backupctl_binlog_files": status["files"],
        "backupctl_binlog_stored_bytes": status["stored_bytes"],
        "backupctl_binlog_gaps": len(status["gaps"]),
        "backupctl_binlog_ok": 1 if status["ok"] else 0,
    }
    lines = []
    for name, help_text in METRICS.items():
        if values[name] is None:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {values[name]}"]
    return "\n".join(lines) + "\n"
