"""`backupctl status` shows the achieved RPO of a binlog archive and fails when it is breached."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from backupctl.actions.access import open_catalog
from backupctl.actions.status import gather
from backupctl.metrics import parse_metrics, render_metrics
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.integration.pitr_mysql.pitr import SOURCE, make_pitr


def test_status_shows_the_binlog_rpo_and_fails_when_it_is_breached(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    pitr.backup()
    binlog_database.sql("INSERT INTO orders (label) VALUES ('after the dump');")
    collected = pitr.collect()
    assert collected.archived and collected.covered_until is not None

    done = workspace.run("status", "shop", "--json")
    (shown,) = json.loads(done.stdout)
    (archive,) = shown["pitr"]
    assert archive["source"] == SOURCE and archive["archive"] == "binlogs" and archive["ok"]
    assert 0 <= archive["rpo_seconds"] < 60 and archive["objective_seconds"] == 900
    assert archive["newest"] == collected.newest and archive["problems"] == []
    assert shown["rules"]["pitr_rpo"]["ok"] and "achieved RPO" in shown["rules"]["pitr_rpo"]["detail"]
    # One local target cannot make 3 copies: status fails, but not because of the binlog archive.
    assert done.returncode == 1 and "pitr_rpo" not in done.stderr

    # An hour later with nothing archived since: the same archive, read again, breaches 15m.
    later = datetime.now(UTC) + timedelta(hours=1)
    status = gather(open_catalog(pitr.settings), pitr.policy, later, settings=pitr.settings)
    rule = next(rule for rule in status.rules if rule.name == "pitr_rpo")
    assert not rule.ok and not status.compliant and "RPO breached" in rule.detail
    (late,) = status.pitr
    assert late.rpo_seconds is not None and late.rpo_seconds >= 3600
    assert late.rpo_seconds == pytest.approx(later.timestamp() - collected.covered_until, abs=1)
    text = render_metrics(
        "shop", backup=None, status=status, snapshots_per_target={}, last_drill=None, now=later
    )
    samples = {(name, labels.get("rule")): (labels, value) for name, labels, value in parse_metrics(text)}
    labels, rpo = samples[("backupctl_binlog_rpo_seconds", None)]
    assert labels == {"policy": "shop", "source": SOURCE} and rpo == pytest.approx(late.rpo_seconds, abs=0.1)
    assert samples[("backupctl_binlog_ok", None)][1] == 0
    assert samples[("backupctl_compliance", "pitr_rpo")][1] == 0
