"""Evidence: the achieved RPO of a WAL-archiving PostgreSQL source comes from what `wal verify`
observed of its archive (issue #14, control 1): recorded in archive_observations (migration
0005) and in the run ledger, read by the rpo-achieved control. A real PostgreSQL 15 server
whose archive_command is `backupctl wal push`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backupctl.catalog.ledger import audit
from backupctl.catalog.store import Catalog
from backupctl.evidence.controls import COMPLIANT, INSUFFICIENT_DATA, NON_COMPLIANT
from backupctl.evidence.document import build
from backupctl.evidence.period import Period
from backupctl.policy.loader import load_policy
from tests.integration.pitr.conftest import POLICY, SOURCE, PitrSetup, archiving_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[PitrSetup]:
    """Its own archiving server: this test edits the catalog as the test's user."""
    with archiving_cluster("backupctl-walevidence-") as setup:
        yield setup


def test_rpo_control_uses_the_wal_archive_observations_of_wal_verify(
    cluster: PitrSetup, tmp_path: Path
) -> None:
    began = datetime.now(UTC) - timedelta(seconds=1)
    based = cluster.run("wal", "base-backup", POLICY, "--source", SOURCE, "--json")
    assert based.returncode == 0, based.stderr
    cluster.switch_and_wait()
    cluster.switch_and_wait()  # two segments after the base backup: one can go missing as a gap
    unobserved = datetime.now(UTC)
    verified = cluster.run("wal", "verify", POLICY, "--source", SOURCE, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    observed = datetime.now(UTC)

    # A segment goes missing: `wal verify` names the gap, and records the archive not continuous.
    records = cluster.backups / POLICY / "pitr" / SOURCE / "records"
    names = sorted(p.name[:-4] for p in records.glob("0*.rec") if len(p.name) == 28)
    victim = names[-2]
    held = []
    for sub, suffix in (("records", ".rec"), ("segments", ".zst.age")):
        source = records.parent / sub / f"{victim}{suffix}"
        held.append((shutil.move(source, tmp_path / source.name), source))
    try:
        broken = cluster.run("wal", "verify", POLICY, "--source", SOURCE)
        assert broken.returncode == 1 and victim in broken.stdout, broken.stdout + broken.stderr
    finally:
        for moved, original in held:
            shutil.move(moved, original)
    after_gap = datetime.now(UTC)

    catalog = Catalog.open(f"sqlite:///{cluster.root}/state/catalog.sqlite")
    loaded = load_policy(cluster.policies / f"{POLICY}.yaml", check_secrets=False)

    def rpo(end: datetime) -> dict[str, Any]:
        document = build(catalog, Period("test", began, end), [loaded], include_all=False, now=end)
        return next(c for c in document["controls"] if c["control"] == "rpo-achieved")

    # A base backup and archived WAL, but no observation of the archive yet: not evidence.
    early = rpo(unobserved)
    assert early["status"] == INSUFFICIENT_DATA, early
    assert early["measured"]["point_in_time_archive"][SOURCE]["observations"] == 0

    # What `wal verify` read: continuous from the base backup, lag well under the 15 min RPO.
    good = rpo(observed)
    archive = good["measured"]["point_in_time_archive"][SOURCE]
    assert good["status"] == COMPLIANT, (good["exceptions"], good["measured"])
    assert archive["archive"] == "WAL" and archive["observations"] == 1
    assert 0 <= archive["worst_lag_seconds"] < 900 and good["measured"]["worst_gap_seconds"] < 900
    (reading,) = [r for r in good["records"] if r.startswith("archive-observation:")]
    with catalog.engine.connect() as connection:
        row = connection.execute(
            text("SELECT via, continuous FROM archive_observations WHERE id = :id"),
            {"id": int(reading.split(":")[1])},
        ).one()
    assert tuple(row) == ("wal verify", 1)

    # The reading with the gap: the control is not compliant and says which command saw what.
    late = rpo(after_gap)
    assert late["status"] == NON_COMPLIANT, late
    assert late["measured"]["point_in_time_archive"][SOURCE]["observations"] == 2
    (complaint,) = [e for e in late["exceptions"] if "not continuous" in e]
    assert "by `wal verify`" in complaint and victim in complaint, complaint

    # Each observation is a `pitr` record of the run ledger: an edited row is named by the audit.
    with catalog.engine.connect() as connection:
        assert audit(connection).ok
    with catalog.engine.begin() as connection:
        connection.execute(
            text("UPDATE archive_observations SET continuous = 1 WHERE continuous = 0"),
        )
    with catalog.engine.connect() as connection:
        problems = audit(connection).problems
    assert len(problems) == 1 and problems[0].startswith("catalog: pitr ") and "was edited" in problems[0]
    catalog.engine.dispose()
