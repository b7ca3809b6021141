"""Prometheus textfile metrics: exposition format, label escaping, last success kept, atomic write."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from backupctl.actions.status import PolicyStatus, Rule
from backupctl.errors import JobFailed, PartialFailure
from backupctl.metrics import (
    METRICS,
    escape_label,
    parse_metrics,
    read_previous_last_success,
    render_metrics,
    snapshots_per_target,
    summary_from_error,
    update_metrics_file,
    write_metrics_file,
)

NOW = datetime(2024, 5, 1, 2, 30, tzinfo=UTC)
LINE = re.compile(r'^[a-z_]+\{([a-z_]+="(?:[^"\\\n]|\\[\\"n])*",?)+\} -?[0-9.e+]+$')


def _status(rpo_ok: bool = True) -> PolicyStatus:
    rules = [Rule(name, name != "immutable", "") for name in ("copies", "media", "offsite", "immutable")]
    rules += [Rule("errors", True, ""), Rule("rpo", rpo_ok, "")]
    return PolicyStatus("shop", False, "snap-1", 3600.5, rules, [])


def _backup(status: str = "complete") -> dict[str, Any]:
    return {
        "status": status,
        "seconds": 12.5,
        "sources": {"db": {"plain_bytes": 1000, "stored_bytes": 400}},
        "targets": {"local": {"status": "complete", "stored_bytes": 400}, "s3": {"status": "complete"}},
    }


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in parse_metrics(text)}


def _get(text: str, name: str, **labels: str) -> float:
    return _values(text)[(name, tuple(sorted({"policy": "shop", **labels}.items())))]


def test_full_render_is_valid_exposition_format() -> None:
    drill = {"ok": True, "rto_seconds": 321.0, "finished_at": NOW - timedelta(days=1)}
    text = render_metrics(
        "shop",
        backup=_backup(),
        status=_status(),
        snapshots_per_target={"local": 7, "s3": 5},
        last_drill=drill,
        now=NOW,
    )
    assert text.endswith("\n")
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped and kind == "gauge"
        else:
            assert LINE.match(line), line
            assert line.split("{")[0] in helped
    assert helped == set(METRICS)  # every documented metric is present in a full render

    assert _get(text, "backupctl_last_success_timestamp_seconds") == NOW.timestamp()
    assert _get(text, "backupctl_last_run_timestamp_seconds") == NOW.timestamp()
    assert _get(text, "backupctl_last_run_success") == 1
    assert _get(text, "backupctl_last_run_duration_seconds") == 12.5
    assert _get(text, "backupctl_source_bytes", source="db", kind="plain") == 1000
    assert _get(text, "backupctl_source_bytes", source="db", kind="stored") == 400
    assert _get(text, "backupctl_target_bytes", target="local") == 400
    assert ("backupctl_target_bytes", (("policy", "shop"), ("target", "s3"))) not in _values(text)
    assert _get(text, "backupctl_snapshots", target="s3") == 5
    assert _get(text, "backupctl_compliance", rule="immutable") == 0
    assert _get(text, "backupctl_compliance", rule="rpo") == 1
    assert _get(text, "backupctl_rpo_age_seconds") == 3600.5
    assert _get(text, "backupctl_drill_last_success") == 1
    assert _get(text, "backupctl_drill_last_rto_seconds") == 321
    assert _get(text, "backupctl_drill_last_timestamp_seconds") == (NOW - timedelta(days=1)).timestamp()


def test_label_values_are_escaped_and_parse_back() -> None:
    nasty = 'we"ird\\name\nline2'
    assert escape_label(nasty) == 'we\\"ird\\\\name\\nline2'
    text = render_metrics(
        "shop", backup=None, status=None, snapshots_per_target={nasty: 3}, last_drill=None, now=NOW
    )
    assert len(text.splitlines()) == 3  # HELP, TYPE, one sample: the newline did not break the line
    assert _get(text, "backupctl_snapshots", target=nasty) == 3


def test_failed_run_keeps_previous_last_success(tmp_path) -> None:
    path = tmp_path / "backupctl-shop.prom"
    earlier = NOW - timedelta(hours=6)
    update_metrics_file(
        path, "shop", backup=_backup(), status=None, snapshots_per_target={}, last_drill=None, now=earlier
    )
    assert read_previous_last_success(path, "shop") == earlier.timestamp()

    failed = summary_from_error("shop", JobFailed("target s3: access denied"), 3.0)
    text = update_metrics_file(
        path, "shop", backup=failed, status=_status(False), snapshots_per_target={}, last_drill=None, now=NOW
    )
    assert path.read_text() == text
    assert _get(text, "backupctl_last_success_timestamp_seconds") == earlier.timestamp()
    assert _get(text, "backupctl_last_run_timestamp_seconds") == NOW.timestamp()
    assert _get(text, "backupctl_last_run_success") == 0
    assert _get(text, "backupctl_last_run_duration_seconds") == 3
    assert _get(text, "backupctl_compliance", rule="rpo") == 0
    assert not any(name == "backupctl_source_bytes" for name, _, _ in parse_metrics(text))


def test_failed_first_run_has_no_last_success_and_partial_is_not_success(tmp_path) -> None:
    path = tmp_path / "m.prom"
    partial = summary_from_error("shop", PartialFailure("s3 failed"), 1.0)
    assert partial["status"] == "partial"
    text = update_metrics_file(
        path, "shop", backup=partial, status=None, snapshots_per_target={}, last_drill=None, now=NOW
    )
    assert _get(text, "backupctl_last_run_success") == 0
    assert "backupctl_last_success_timestamp_seconds" not in text
    assert read_previous_last_success(path, "shop") is None
    assert read_previous_last_success(tmp_path / "missing.prom", "shop") is None


def test_previous_value_of_another_policy_is_ignored(tmp_path) -> None:
    path = tmp_path / "m.prom"
    update_metrics_file(
        path, "crm", backup=_backup(), status=None, snapshots_per_target={}, last_drill=None, now=NOW
    )
    assert read_previous_last_success(path, "shop") is None


def test_atomic_write_leaves_only_the_file_with_mode_0644(tmp_path) -> None:
    path = tmp_path / "textfile" / "backupctl-shop.prom"
    old_umask = os.umask(0o077)
    try:
        write_metrics_file(path, "a 1\n")
        write_metrics_file(path, "a 2\n")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "a 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["backupctl-shop.prom"]


def test_failed_write_removes_the_temp_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "backupctl-shop.prom"

    def broken_replace(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_metrics_file(path, "a 1\n")
    assert list(tmp_path.iterdir()) == []


def test_snapshots_per_target_counts_complete_copies() -> None:
    views = [
        SimpleNamespace(targets={"local": "complete", "s3": "complete"}),
        SimpleNamespace(targets={"local": "complete", "s3": "failed"}),
    ]
    assert snapshots_per_target(views, ["local", "s3", "sftp"]) == {"local": 2, "s3": 1, "sftp": 0}
