"""`status` and `replicate` read what the targets really hold, not only what the catalog says.

A deleted object, a swapped (empty) bucket and a forgotten restic snapshot are each reported by
`status` (exit 1, naming what is missing); `replicate` refills the blob targets and `status`
sees them whole again.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.fixtures.core import Workspace
from tests.fixtures.s3 import new_bucket_name

RESTIC_PASSWORD = "restic-status-password"


def _policy(space: Workspace, data: Path, bucket: str, s3_server: str, repository: Path) -> None:
    space.write_policy("app", space.base_policy("app", [
        {"name": "files", "type": "files", "path": str(data)},
    ], [
        {"name": "local", "type": "local", "path": str(space.backups)},
        {"name": "offsite", "type": "s3", "bucket": bucket, "endpoint_url": s3_server, "region": "us-east-1"},
        {"name": "dedup", "type": "restic", "repository": str(repository),
         "password": "env:ST_RESTIC_PASSWORD", "medium": "disk"},
    ]))  # fmt: skip


def _status(space: Workspace) -> tuple[int, dict[str, Any]]:
    done = space.run("status", "app", "--json")
    (document,) = json.loads(done.stdout)
    return done.returncode, document


def _targets(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {target["name"]: target for target in document["targets"]}


def test_status_and_replicate_trust_the_targets_not_the_catalog(
    workspace: Workspace, tmp_path: Path, s3_server: str, s3_client: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_bytes(os.urandom(64 << 10))
    bucket = new_bucket_name()
    s3_client.create_bucket(Bucket=bucket)
    repository = tmp_path / "restic"
    workspace.env["ST_RESTIC_PASSWORD"] = RESTIC_PASSWORD
    _policy(workspace, data, bucket, s3_server, repository)
    workspace.run("target", "setup", "app", "dedup", check=True)
    workspace.run("target", "setup", "app", "offsite", check=True)
    snapshot = workspace.run_json("backup", "app")["snapshot_id"]

    _, document = _status(workspace)
    assert all(target["holds_latest"] for target in document["targets"]), document
    assert document["rules"]["copies"]["ok"], document

    # One object deleted from the bucket: status names it, replicate puts it back.
    objects = s3_client.list_objects_v2(Bucket=bucket)["Contents"]
    key = next(item["Key"] for item in objects if ".zst.age" in item["Key"])
    s3_client.delete_object(Bucket=bucket, Key=key)
    code, document = _status(workspace)
    offsite = _targets(document)["offsite"]
    assert code == 1 and not offsite["holds_latest"], document
    assert any(key in problem and "missing" in problem for problem in offsite["problems"]), offsite
    assert "missing on offsite" in document["rules"]["copies"]["detail"]
    refilled = workspace.run_json("replicate", "app")
    assert f"{snapshot} → offsite" in refilled["copied"], refilled
    _, document = _status(workspace)
    assert _targets(document)["offsite"]["holds_latest"], document
    assert key in [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]

    # The bucket swapped for an empty one: both snapshots are refilled by replicate.
    second = workspace.run_json("backup", "app")["snapshot_id"]
    swapped = new_bucket_name()
    s3_client.create_bucket(Bucket=swapped)
    _policy(workspace, data, swapped, s3_server, repository)
    workspace.run("target", "setup", "app", "offsite", check=True)
    code, document = _status(workspace)
    offsite = _targets(document)["offsite"]
    assert code == 1 and not offsite["holds_latest"]
    assert any("no manifest on offsite" in problem for problem in offsite["problems"]), offsite
    refilled = workspace.run_json("replicate", "app")
    assert {f"{snapshot} → offsite", f"{second} → offsite"} <= set(refilled["copied"]), refilled
    _, document = _status(workspace)
    assert _targets(document)["offsite"]["holds_latest"] and document["rules"]["copies"]["ok"], document

    # A restic snapshot of the newest backupctl snapshot forgotten behind backupctl's back.
    env = {**os.environ, "RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_REPOSITORY": str(repository)}
    listed = json.loads(
        subprocess.run(["restic", "snapshots", "--json", "--tag", f"snapshot={second},source=files"],
                       env=env, check=True, capture_output=True, text=True).stdout
    )  # fmt: skip
    subprocess.run(["restic", "forget", listed[0]["id"]], env=env, check=True, capture_output=True)
    code, document = _status(workspace)
    dedup = _targets(document)["dedup"]
    assert code == 1 and not dedup["holds_latest"], document
    assert any("restic snapshot of files" in problem for problem in dedup["problems"]), dedup
    # The catalog records what was observed: the copy is missing there now.
    listed_snapshots = workspace.run("snapshots", "app", "--json", check=True).stdout
    newest = next(item for item in json.loads(listed_snapshots) if item["id"] == second)
    assert newest["targets"]["dedup"] == "missing", newest
