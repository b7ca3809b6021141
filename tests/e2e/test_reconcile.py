"""`catalog reconcile` compares the catalog with what local, S3 (moto) and restic targets really
hold, in both directions (docs/operations.md, "Reconcile"):
(a) a copy the catalog calls complete that a target lacks is recorded missing, replicate refills it;
(b) an authentic snapshot the catalog does not know is imported;
(c) a complete, signed snapshot whose run the catalog records as failed is not imported (neither by
    reconcile nor by `catalog rebuild`) and prune removes it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.fixtures.core import Workspace
from tests.fixtures.s3 import new_bucket_name

RESTIC_PASSWORD = "restic-reconcile-password"


def _kinds(report: dict[str, Any]) -> set[tuple[str, str | None, str]]:
    return {(f["target"], f["snapshot_id"], f["kind"]) for f in report["findings"]}


def test_reconcile_both_directions(
    workspace: Workspace, tmp_path: Path, s3_server: str, s3_client: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_bytes(os.urandom(32 << 10))
    bucket = new_bucket_name()
    s3_client.create_bucket(Bucket=bucket)
    repository = tmp_path / "restic"
    workspace.env["RC_RESTIC_PASSWORD"] = RESTIC_PASSWORD
    workspace.write_policy("app", workspace.base_policy("app", [
        {"name": "files", "type": "files", "path": str(data)},
    ], [
        {"name": "local", "type": "local", "path": str(workspace.backups)},
        {"name": "offsite", "type": "s3", "bucket": bucket, "endpoint_url": s3_server, "region": "us-east-1"},
        {"name": "dedup", "type": "restic", "repository": str(repository),
         "password": "env:RC_RESTIC_PASSWORD", "medium": "disk"},
    ]))  # fmt: skip
    workspace.run("target", "setup", "app", "dedup", check=True)
    workspace.run("target", "setup", "app", "offsite", check=True)
    first = workspace.run_json("backup", "app")["snapshot_id"]
    second = workspace.run_json("backup", "app")["snapshot_id"]

    agree = workspace.run_json("catalog", "reconcile", "app")
    assert agree["schema"] == "backupctl.catalog.reconcile/1"
    assert agree["ok"] and agree["findings"] == [], agree
    assert agree["targets"]["dedup"] == {"listed": 2, "claimed_by_catalog": 2}, agree

    # (a) one S3 object deleted, and the local copy of the first snapshot removed entirely.
    objects = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"app/{second}/")["Contents"]
    key = next(item["Key"] for item in objects if ".zst.age" in item["Key"])
    s3_client.delete_object(Bucket=bucket, Key=key)
    for path in sorted((workspace.backups / "app" / first).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (workspace.backups / "app" / first).rmdir()
    dry = workspace.run_json("catalog", "reconcile", "app", "--target", "local", "--target", "offsite",
                             "--dry-run")  # fmt: skip
    assert _kinds(dry) == {("offsite", second, "missing"), ("local", first, "missing")}, dry
    offsite = next(f for f in dry["findings"] if f["target"] == "offsite")
    assert key in offsite["detail"] and "replicate" in offsite["action"], offsite
    snapshots = {s["id"]: s for s in workspace.run_json("snapshots", "app")}
    assert snapshots[second]["targets"]["offsite"] == "complete"  # a dry run changes nothing
    fixed = workspace.run_json("catalog", "reconcile", "app", "--target", "local", "--target", "offsite")
    assert _kinds(fixed) == _kinds(dry)
    snapshots = {s["id"]: s for s in workspace.run_json("snapshots", "app")}
    assert snapshots[second]["targets"]["offsite"] == "missing"
    assert snapshots[first]["targets"]["local"] == "missing"
    refilled = workspace.run_json("replicate", "app")
    assert {f"{second} → offsite", f"{first} → local"} <= set(refilled["copied"]), refilled
    healed = workspace.run_json("catalog", "reconcile", "app", "--target", "local", "--target", "offsite")
    assert healed["findings"] == [], healed

    # (a) on restic: a restic snapshot forgotten behind backupctl's back.
    env = {**os.environ, "RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_REPOSITORY": str(repository)}
    listed = json.loads(
        subprocess.run(["restic", "snapshots", "--json", "--tag", f"snapshot={first},source=files"],
                       env=env, check=True, capture_output=True, text=True).stdout
    )  # fmt: skip
    subprocess.run(["restic", "forget", listed[0]["id"]], env=env, check=True, capture_output=True)
    restic = workspace.run_json("catalog", "reconcile", "app", "--target", "dedup")
    assert _kinds(restic) == {("dedup", first, "missing")}, restic
    assert "restic snapshot of files" in restic["findings"][0]["detail"]

    # (b) a new, empty catalog: every authentic snapshot on every target is imported.
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    imported = workspace.run_json("--catalog", fresh, "catalog", "reconcile", "app", "--target", "local",
                                  "--target", "offsite")  # fmt: skip
    assert _kinds(imported) == {(t, s, "imported") for t in ("local", "offsite") for s in (first, second)}
    again = workspace.run_json("--catalog", fresh, "snapshots", "app")
    assert {s["id"] for s in again} == {first, second}
    assert all(s["targets"] == {"local": "complete", "offsite": "complete"} for s in again), again

    # (c) a run the catalog records as failed, whose signed snapshot reached the targets (what a
    # run killed after its manifest was written leaves): not imported, not resurrected, pruned.
    third = workspace.run_json("backup", "app")["snapshot_id"]
    with sqlite3.connect(workspace.state / "catalog.sqlite") as connection:
        failed = "UPDATE snapshots SET status = 'failed', error = 'interrupted' WHERE id = ?"
        connection.execute(failed, (third,))
        connection.execute("UPDATE snapshot_copies SET status = 'failed' WHERE snapshot_id = ?", (third,))
    report = workspace.run_json("catalog", "reconcile", "app", "--target", "local", "--target", "offsite")
    assert _kinds(report) == {(t, third, "unfinished-run") for t in ("local", "offsite")}, report
    assert all("prune" in f["action"] for f in report["findings"])
    rebuilt = workspace.run_json("catalog", "rebuild", "--target", "local")
    assert rebuilt["failed_runs"] == [f"app/{third}: recorded failed"], rebuilt
    states = {s["id"]: s["status"] for s in workspace.run_json("snapshots", "app", "--all")}
    assert states[third] == "failed", states
    workspace.run("prune", "app", check=True)
    assert not (workspace.backups / "app" / third).exists()
    assert not s3_client.list_objects_v2(Bucket=bucket, Prefix=f"app/{third}/").get("Contents")
    final = workspace.run_json("catalog", "reconcile", "app", "--target", "local", "--target", "offsite")
    assert final["findings"] == [], final
