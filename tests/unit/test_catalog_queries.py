"""Catalog read queries on SQLite: listing, resolving, what prune plans from, marking pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupctl.actions.prune import PRUNED, mark_pruned
from backupctl.catalog.store import Catalog
from backupctl.core.manifest import ArtifactRecord, Manifest, new_snapshot_id
from backupctl.errors import ConfigError

START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def _manifest(snapshot_id: str, sources: list[str]) -> Manifest:
    artifacts = [
        ArtifactRecord(source, "files", f"{source}.tar.zst.age", "tar", 10, "a" * 64, 5, "b" * 64, {})
        for source in sources
    ]
    stamp = "2026-11-01T02:00:00.000000Z"
    return Manifest(
        snapshot_id=snapshot_id, policy="shop", policy_sha256="0" * 64, host="h", backupctl_version="0",
        started_at=stamp, finished_at=stamp, recipients=[], signing_public_key="", artifacts=artifacts,
    )  # fmt: skip


def _snapshot(catalog: Catalog, day: int, copies: dict[str, str], status: str = "complete") -> str:
    started = START + timedelta(days=day)
    snapshot_id = new_snapshot_id(started)
    catalog.begin_snapshot(snapshot_id, "shop", "0" * 64, started)
    for target, state in copies.items():
        catalog.record_copy(snapshot_id, target, state, 5)
    if status == "failed":
        catalog.fail_snapshot(snapshot_id, "pg_dump exited with status 1")
    else:
        catalog.finish_snapshot(_manifest(snapshot_id, ["uploads", "db"]), "c" * 64, status)
    return snapshot_id


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog.open(f"sqlite:///{tmp_path}/catalog.sqlite")


def test_listing_newest_first_with_targets_and_sources_by_name(catalog: Catalog) -> None:
    old = _snapshot(catalog, 0, {"usb": "complete", "nas": "complete"})
    failed = _snapshot(catalog, 1, {"nas": "failed"}, status="failed")
    new = _snapshot(catalog, 2, {"offsite": "failed", "nas": "complete"}, status="partial")
    views = catalog.snapshots("shop")
    assert [view.id for view in views] == [new, old]
    assert list(views[0].targets.items()) == [("nas", "complete"), ("offsite", "failed")]
    assert list(views[1].targets) == ["nas", "usb"] and views[1].sources == ["db", "uploads"]
    assert views[1].started_at == START and views[1].started_at.tzinfo is not None
    assert [view.id for view in catalog.snapshots("shop", include_incomplete=True)] == [new, failed, old]
    assert catalog.snapshots("other") == []


def test_resolve(catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match="no complete snapshot"):
        catalog.resolve("shop", "latest")
    first = _snapshot(catalog, 0, {"nas": "complete"})
    second = _snapshot(catalog, 1, {"nas": "complete"})
    failed = _snapshot(catalog, 2, {"nas": "failed"}, status="failed")
    assert catalog.resolve("shop", "latest").id == second
    assert catalog.resolve("shop", first).id == first
    assert catalog.resolve("shop", second[:9]).id == second  # 20261102T: one snapshot that day
    with pytest.raises(ConfigError, match="matches 2 snapshots"):
        catalog.resolve("shop", "2026")
    with pytest.raises(ConfigError, match="is failed"):
        catalog.resolve("shop", failed)
    for reference in ("2026%", "2026110_", first.lower(), "nope"):  # LIKE wildcards and case: exact
        with pytest.raises(ConfigError, match="has no snapshot"):
            catalog.resolve("shop", reference)


def test_complete_copies_and_mark_pruned(catalog: Catalog) -> None:
    gone = _snapshot(catalog, 0, {"nas": "deleted", "usb": "deleted"})
    kept = _snapshot(catalog, 1, {"nas": "deleted", "usb": "complete"})
    bare = _snapshot(catalog, 2, {})
    failed = _snapshot(catalog, 3, {"nas": "failed"}, status="failed")
    assert [(copy[0], copy[2]) for copy in catalog.complete_copies("shop")] == [(kept, "usb")]
    assert mark_pruned(catalog, "shop") == [gone]
    statuses = {view.id: view.status for view in catalog.snapshots("shop", include_incomplete=True)}
    assert statuses == {gone: PRUNED, kept: "complete", bare: "complete", failed: "failed"}
    assert mark_pruned(catalog, "shop") == []
