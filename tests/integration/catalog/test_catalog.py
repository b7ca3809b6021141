"""The catalog on SQLite and on a real PostgreSQL (a fleet sharing one catalog)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupctl.catalog.store import HEAD_REVISION, Catalog, CopyState
from backupctl.core.manifest import ArtifactRecord, Manifest, new_snapshot_id, utc_now_text
from backupctl.errors import ConfigError


@pytest.fixture
def catalog(catalog_on_each_backend: Catalog) -> Catalog:
    return catalog_on_each_backend  # tests/fixtures/postgres.py: SQLite, then PostgreSQL


def _manifest(snapshot_id: str, policy: str = "shop") -> Manifest:
    now = utc_now_text()
    return Manifest(
        snapshot_id=snapshot_id,
        policy=policy,
        policy_sha256="0" * 64,
        host="h",
        backupctl_version="0",
        started_at=now,
        finished_at=now,
        recipients=[],
        signing_public_key="",
        artifacts=[
            ArtifactRecord(
                "db",
                "postgres",
                "db.pgdump.zst.age",
                "pgdump",
                100,
                "blake3:" + "a" * 64,
                40,
                "b" * 64,
                {"row_counts": {"public.t": 1}},
            )
        ],
    )


def test_lifecycle(catalog: Catalog) -> None:
    assert catalog.revision() == HEAD_REVISION
    first, second = new_snapshot_id(), new_snapshot_id()
    for snapshot_id in (first, second):
        catalog.begin_snapshot(snapshot_id, "shop", "0" * 64, datetime.now(UTC))
    catalog.record_copy(first, "local", "complete", 40)
    catalog.finish_snapshot(_manifest(first), "c" * 64, "complete")
    catalog.fail_snapshot(second, "pg_dump exited with status 1")

    views = catalog.snapshots("shop")
    assert [view.id for view in views] == [first]
    assert views[0].targets == {"local": "complete"} and views[0].sources == ["db"]
    assert catalog.resolve("shop", "latest").id == first
    assert catalog.resolve("shop", first[:10]).id == first
    with pytest.raises(ConfigError, match="is failed"):
        catalog.resolve("shop", second)
    assert {v.status for v in catalog.snapshots("shop", include_incomplete=True)} == {"complete", "failed"}

    # Rebuild path: importing a manifest is idempotent.
    third = new_snapshot_id()
    assert catalog.import_manifest(_manifest(third), "d" * 64, "nas") is True
    assert catalog.import_manifest(_manifest(third), "d" * 64, "nas") is False
    catalog.record_verification(third, "nas", True, [])
    assert [v.ok for v in catalog.verifications(third)] == [True]


def test_unreachable_catalog_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="catalog"):
        Catalog.open("postgresql://nobody:secret-pw@127.0.0.1:1/none")


def test_record_copies_updates_and_inserts_in_one_call(catalog: Catalog) -> None:
    """prune records every removed copy of a target at once; new copies are inserted."""
    # More than one IN chunk of 500. Not new_snapshot_id(): 1,201 ids made within one second share
    # its timestamp, and their 24 random bits then collide in about 4 % of runs.
    ids = [f"20260101T000000Z-{number:06x}" for number in range(1201)]
    for snapshot_id in ids:
        catalog.begin_snapshot(snapshot_id, "shop", "0" * 64, datetime.now(UTC))
    catalog.record_copies([CopyState(snapshot_id, "local", "complete", 40) for snapshot_id in ids[:1000]])
    catalog.record_copies(
        [CopyState(snapshot_id, "local", "deleted") for snapshot_id in ids]
        + [CopyState(ids[0], "s3", "failed", 0, "bucket unreachable")]
    )
    views = {view.id: view.targets for view in catalog.snapshots("shop", include_incomplete=True)}
    assert all(views[snapshot_id]["local"] == "deleted" for snapshot_id in ids)
    assert views[ids[0]] == {"local": "deleted", "s3": "failed"}
