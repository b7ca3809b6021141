"""collect.policy_runs: the runs read policy by policy, with their copies, encryption and
trigger, on SQLite and on PostgreSQL (four result sets open side by side on one connection)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from backupctl.catalog.store import Catalog, CopyState
from backupctl.evidence.collect import LOOKBACK, policy_runs
from backupctl.evidence.period import parse_month
from tests.fixtures.core import one_dump_manifest

NOV = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def catalog(catalog_on_each_backend: Catalog) -> Catalog:
    return catalog_on_each_backend  # tests/fixtures/postgres.py: SQLite, then PostgreSQL


def _run(
    catalog: Catalog,
    snapshot_id: str,
    policy: str,
    started: datetime,
    encrypted: bool,
    mp: pytest.MonkeyPatch,
) -> None:
    mp.setattr(socket, "gethostname", lambda: f"host-{policy}")  # what the run's host reports
    catalog.begin_snapshot(snapshot_id, policy, "0" * 64, started)
    manifest = one_dump_manifest(snapshot_id, policy, started, host=f"host-{policy}", encrypted=encrypted)
    copies = [CopyState(snapshot_id, "local", "complete", 40), CopyState(snapshot_id, "s3", "failed", 0)]
    catalog.finish_snapshot(manifest, "c" * 64, "complete", copies=copies)


def test_runs_come_policy_by_policy_with_their_copies(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two policies' runs interleaved in time, one in the lookback before the month, one after
    it: each policy's list holds only its own runs, oldest first, each with its own copies,
    encryption (artifacts of the period only) and trigger; `policies` keeps only those."""
    month = parse_month("2026-11")
    expected: dict[str, list[str]] = {"alpha": [], "beta": []}
    for day in range(6):
        for offset, policy in enumerate(("beta", "alpha")):  # written interleaved, beta first
            started = NOV + timedelta(days=day * 5, hours=2 + offset)
            snapshot_id = f"{policy}-{day}"
            _run(catalog, snapshot_id, policy, started, encrypted=policy == "alpha", mp=monkeypatch)
            expected[policy].append(snapshot_id)
    _run(
        catalog, "alpha-lookback", "alpha", NOV - LOOKBACK + timedelta(days=1), encrypted=True, mp=monkeypatch
    )
    _run(
        catalog,
        "alpha-before-lookback",
        "alpha",
        NOV - LOOKBACK - timedelta(days=1),
        encrypted=True,
        mp=monkeypatch,
    )
    _run(catalog, "beta-next-month", "beta", NOV + timedelta(days=31), encrypted=False, mp=monkeypatch)
    expected["alpha"].insert(0, "alpha-lookback")

    monkeypatch.undo()
    read = list(policy_runs(catalog, month))
    assert [[run.id for run in runs] for runs in read] == [expected["alpha"], expected["beta"]]
    for runs in read:
        assert [run.started_at for run in runs] == sorted(run.started_at for run in runs)
        for run in runs:
            assert run.policy == run.id.split("-")[0] and run.host == f"host-{run.policy}"
            assert run.copies.keys() == {"local", "s3"}
            assert run.copies["local"][0] == "complete" and run.copies["s3"][0] == "failed"
            assert run.trigger != "unknown"
            if run.id == "alpha-lookback":
                assert run.encrypted is None  # artifacts are read for the period's runs only
            else:
                assert run.encrypted is (run.policy == "alpha")
    only = list(policy_runs(catalog, month, ["beta"]))
    assert [[run.id for run in runs] for runs in only] == [expected["beta"]]
    assert list(policy_runs(catalog, month, ["gamma"])) == []
