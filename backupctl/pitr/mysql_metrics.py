"""Prometheus textfile metrics of a source's binlog archive (docs/pitr-mysql.md, monitoring).

One file per source, `backupctl-<policy>-binlog-<source>.prom` next to the policy's own metrics
file, written atomically by `binlog collect --metrics-file` and `binlog status --metrics-file`.
"""

from __future__ import annotations

from typing import Any

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
    from backupctl.metrics import render_samples

    labels = {"policy": status["policy"], "source": status["source"]}
    return render_samples(
        [(name, help_text, labels, value) for name, help_text, value in binlog_samples(status, covered_until)]
    )


def binlog_samples(status: dict[str, Any], covered_until: int | None) -> list[tuple[str, str, float]]:
    """(name, help, value) of the binlog gauges of `BinlogStatus.as_dict()`; missing values left out."""
    values = {
        "backupctl_binlog_rpo_seconds": status["rpo_seconds"],
        "backupctl_binlog_rpo_objective_seconds": status["objective_seconds"],
        "backupctl_binlog_covered_until_timestamp_seconds": covered_until,
        "backupctl_binlog_files": status["files"],
        "backupctl_binlog_stored_bytes": status["stored_bytes"],
        "backupctl_binlog_gaps": len(status["gaps"]),
        "backupctl_binlog_ok": 1 if status["ok"] else 0,
    }
    return [
        (name, help_text, float(values[name]))
        for name, help_text in METRICS.items()
        if values[name] is not None
    ]
