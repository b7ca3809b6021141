"""The hash-chained run ledger on SQLite and on a shared PostgreSQL catalog (a fleet)."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from backupctl.catalog.ledger import audit, read_ledger
from backupctl.catalog.store import Catalog
from backupctl.evidence.collect import collect, policy_runs
from backupctl.evidence.period import parse_month


@pytest.fixture
def catalog(catalog_on_each_backend: Catalog) -> Catalog:
    return catalog_on_each_backend  # tests/fixtures/postgres.py: SQLite, then PostgreSQL


def _problems(catalog: Catalog) -> list[str]:
    with catalog.engine.connect() as connection:
        return audit(connection).problems


def test_fleet_export_covers_every_host_and_finds_deletions(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = datetime(2026, 11, 3, 2, tzinfo=UTC)
    for index, host in enumerate(("web-1", "web-2")):
        # Each host writes its own runs into the one catalog; the host name is what it reports.
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        catalog.begin_snapshot(f"s{index}", "shop", "0" * 64, started + timedelta(hours=index))
        catalog.fail_snapshot(f"s{index}", "disk full")
    monkeypatch.undo()
    month = parse_month("2026-11")
    data = collect(catalog, month)
    # The runs are read policy by policy (four queries side by side on one connection).
    read = list(policy_runs(catalog, month))
    assert [[(run.id, run.host, run.status, run.trigger) for run in runs] for runs in read] == [
        [("s0", "web-1", "failed", read[0][0].trigger), ("s1", "web-2", "failed", read[0][0].trigger)]
    ]
    assert read[0][0].trigger != "unknown"
    assert sorted({run.host for runs in read for run in runs}) == ["web-1", "web-2"]
    assert data.audit.ok and data.audit.records == 4
    with catalog.engine.begin() as connection:
        connection.execute(text("DELETE FROM snapshots WHERE id = 's0'"))
    assert _problems(catalog) == ["catalog: snapshot s0 was deleted from the catalog"]
    with catalog.engine.begin() as connection:
        connection.execute(text("DELETE FROM run_records WHERE seq = 3"))
    assert "ledger: records 3..3 are missing (deleted)" in _problems(catalog)


def test_concurrent_appends_keep_one_chain(catalog: Catalog) -> None:
    errors: list[BaseException] = []

    def observe(name: str) -> None:
        try:
            for index in range(15):
                catalog.record_observation("status", name, {"n": index})
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=observe, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with catalog.engine.connect() as connection:
        result, records = audit(connection), read_ledger(connection)
    assert result.ok and [r.seq for r in records] == list(range(1, 31))


def test_audit_names_every_kind_of_tampering(catalog: Catalog) -> None:
    """The packed index (DigestIndex) keeps each record's newest digest: two records per run
    (begun, failed) audit clean; an edited, a deleted and an inserted catalog row, an edited
    ledger row and a gap in the chain are each named, in ledger order."""
    started = datetime(2026, 11, 3, 2, tzinfo=UTC)
    for index in range(6):
        catalog.begin_snapshot(f"s{index}", "shop", "0" * 64, started + timedelta(hours=index))
        catalog.fail_snapshot(f"s{index}", "disk full")
    with catalog.engine.connect() as connection:
        clean = audit(connection)
    assert clean.ok and clean.records == 12
    with catalog.engine.begin() as connection:
        connection.execute(text("UPDATE snapshots SET error = 'fine' WHERE id = 's1'"))
        connection.execute(text("DELETE FROM snapshots WHERE id IN ('s4', 's2')"))
        connection.execute(
            text(
                "INSERT INTO snapshots (id, policy, status, started_at, host, policy_sha256) "
                "SELECT 'x9', policy, status, started_at, host, policy_sha256 FROM snapshots WHERE id = 's0'"
            )
        )
    assert _problems(catalog) == [
        "catalog: snapshot s1 was edited after it was recorded",
        "catalog: snapshot x9 is not in the ledger (inserted behind its back)",
        "catalog: snapshot s2 was deleted from the catalog",
        "catalog: snapshot s4 was deleted from the catalog",
    ]
    with catalog.engine.begin() as connection:
        connection.execute(text("UPDATE run_records SET payload = payload || ' ' WHERE seq = 8"))
        connection.execute(text("DELETE FROM run_records WHERE seq IN (10, 11)"))
    problems = _problems(catalog)
    assert problems[:2] == [
        "ledger: record 8 (snapshot s3) was edited (hash differs)",
        "ledger: records 10..11 are missing (deleted)",
    ]
    assert "catalog: snapshot s3 was edited after it was recorded" in problems
