"""Evidence: the achieved RPO of a binlog-archiving source comes from what `status` observed of
its archive (issue #14, control 1), recorded in the catalog and in the run ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from backupctl.actions.access import open_catalog
from backupctl.actions.status import gather
from backupctl.catalog.ledger import audit
from backupctl.evidence.controls import COMPLIANT, INSUFFICIENT_DATA, NON_COMPLIANT
from backupctl.evidence.document import build
from backupctl.evidence.period import Period
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase
from tests.integration.pitr_mysql.pitr import SOURCE, make_pitr


def test_rpo_control_uses_the_binlog_archive_observations(
    workspace: Workspace, binlog_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    pitr = make_pitr(workspace, binlog_database, monkeypatch)
    start = datetime.now(UTC) - timedelta(seconds=1)
    pitr.backup()
    binlog_database.sql("INSERT INTO orders (label) VALUES ('after the dump');")
    assert pitr.collect().covered_until is not None
    unobserved = datetime.now(UTC)
    workspace.run("status", "shop", "--json")  # the real command reads the archive, records it
    observed = datetime.now(UTC)
    catalog = open_catalog(pitr.settings)

    def rpo(end: datetime) -> dict:  # type: ignore[type-arg]
        document = build(catalog, Period("test", start, end), [pitr.loaded], include_all=False, now=end)
        return next(c for c in document["controls"] if c["control"] == "rpo-achieved")

    # A dump but no observation of the archive yet: not evidence of the point-in-time RPO.
    early = rpo(unobserved)
    assert early["status"] == INSUFFICIENT_DATA, early
    assert early["measured"]["point_in_time_archive"][SOURCE]["observations"] == 0

    good = rpo(observed + timedelta(seconds=5))
    archive = good["measured"]["point_in_time_archive"][SOURCE]
    assert good["status"] == COMPLIANT, good
    assert archive["archive"] == "binlogs" and archive["observations"] == 1
    assert 0 <= archive["worst_lag_seconds"] < 60 and good["measured"]["worst_gap_seconds"] < 900
    (reading,) = [r for r in good["records"] if r.startswith("archive-observation:")]

    # An hour later with nothing archived since: status reads the same archive 1 h behind.
    later = datetime.now(UTC) + timedelta(hours=1)
    gather(catalog, pitr.policy, later, settings=pitr.settings)
    late = rpo(later + timedelta(seconds=1))
    assert late["status"] == NON_COMPLIANT
    assert late["measured"]["point_in_time_archive"][SOURCE]["worst_lag_seconds"] >= 3600
    assert any("behind when observed" in e and "`status`" in e for e in late["exceptions"]), late

    # Each observation is a `pitr` record of the run ledger: an edited row is found.
    with catalog.engine.connect() as connection:
        assert audit(connection).ok
    with catalog.engine.begin() as connection:
        connection.execute(
            text("UPDATE archive_observations SET newest_at = observed_at WHERE id = :id"),
            {"id": int(reading.split(":")[1])},
        )
    with catalog.engine.connect() as connection:
        problems = audit(connection).problems
    assert problems == [f"catalog: pitr {reading.split(':')[1]} was edited after it was recorded"]
