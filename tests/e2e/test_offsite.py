"""Off-site copies end to end: local + S3 (moto's real S3 server), posture, Glacier, outage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pgcheck import fingerprints
from tests.e2e.test_backup_restore import make_tree
from tests.fixtures.core import Workspace
from tests.fixtures.postgres import PgDatabase
from tests.fixtures.s3 import MotoServer, new_bucket_name


def s3_policy(
    space: Workspace, database: PgDatabase, uploads: Path, endpoint: str, bucket: str, **s3: Any
) -> None:
    space.env["SHOP_TEST_DB_PASSWORD"] = database.password
    space.write_policy(
        "shop",
        space.base_policy(
            "shop",
            [
                {
                    "name": "shop-db",
                    "type": "postgres",
                    "url": database.url,
                    "password": "env:SHOP_TEST_DB_PASSWORD",
                },
                {"name": "uploads", "type": "files", "path": str(uploads), "exclude": ["cache/*"]},
            ],
            [
                {"name": "local", "type": "local", "path": str(space.backups), "medium": "disk"},
                {
                    "name": "offsite",
                    "type": "s3",
                    "bucket": bucket,
                    "endpoint_url": endpoint,
                    "region": "us-east-1",
                    "prefix": "backups",
                    **s3,
                },
            ],
        ),
    )


@pytest.fixture
def glacier_env(workspace: Workspace) -> Workspace:
    workspace.env["BACKUPCTL_S3_RESTORE_POLL"] = "0.2"
    return workspace


def test_s3_setup_backup_status_and_glacier_restore(
    glacier_env: Workspace, pg_database: PgDatabase, pg_empty_database: PgDatabase, s3_server: str
) -> None:
    space = glacier_env
    uploads = space.root / "uploads"
    make_tree(uploads)
    bucket = new_bucket_name()
    s3_policy(
        space,
        pg_database,
        uploads,
        s3_server,
        bucket,
        storage_class="GLACIER",
        object_lock={"mode": "COMPLIANCE", "days": 1},
        lifecycle={"transition_days": 30, "transition_class": "DEEP_ARCHIVE", "noncurrent_expire_days": 90},
    )

    # Before setup the bucket does not exist: the S3 copy fails, the local copy is complete (exit 3).
    first = space.run("backup", "shop")
    assert first.returncode == 3, first.stderr
    assert "target setup shop offsite" in first.stderr

    plan = space.run_json("target", "setup", "shop", "offsite", "--dry-run")
    assert plan["changes"] and plan["dry_run"]
    applied = space.run("target", "setup", "shop", "offsite")
    assert applied.returncode == 0, applied.stderr
    assert "versioning" in applied.stdout and "object lock" in applied.stdout.lower()
    assert space.run_json("target", "setup", "shop", "offsite")["changes"] == []

    # The next backup also fills the gap the failed run left on S3.
    result = space.run_json("backup", "shop")
    assert result["status"] == "complete"
    listed = space.run_json("snapshots", "shop")
    assert all(item["targets"] == {"local": "complete", "offsite": "complete"} for item in listed), listed

    # Restore from the Glacier copy: RestoreObject, poll, then stream.
    done = space.run(
        "-v",
        "restore",
        "shop",
        "latest",
        "--source",
        "shop-db",
        "--from",
        "offsite",
        "--to-db",
        pg_empty_database.url,
        "--db-password",
        "env:RESTORE_PW",
        env={"RESTORE_PW": pg_empty_database.password},
    )
    assert done.returncode == 0, done.stderr
    assert "archive warm-up (Glacier restore) took" in done.stdout, done.stdout
    with pg_database.connect() as original, pg_empty_database.connect() as restored:
        assert fingerprints(restored) == fingerprints(original)

    # Status reads the real posture: compliant only after a verification.
    status = space.run("status", "shop", "--json")
    assert status.returncode == 1
    verified = space.run_json("verify", "shop", "latest", "--target", "offsite")
    assert verified[0]["ok"], verified
    status = space.run("status", "shop", "--json")
    assert status.returncode == 0, status.stdout
    import json

    rules = json.loads(status.stdout)[0]["rules"]
    assert rules["immutable"]["ok"] and "offsite" in rules["immutable"]["detail"]
    assert rules["media"]["detail"].startswith("2 media")


def test_local_only_policy_fails_3_2_1_with_reasons(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    workspace.write_policy(
        "small", workspace.base_policy("small", [{"name": "files", "type": "files", "path": str(data)}])
    )
    workspace.run_json("backup", "small")
    workspace.run_json("verify", "small", "latest")
    status = workspace.run("status", "small", "--json")
    assert status.returncode == 1
    import json

    rules = json.loads(status.stdout)[0]["rules"]
    assert not rules["copies"]["ok"] and "need 3" in rules["copies"]["detail"]
    assert not rules["media"]["ok"] and not rules["offsite"]["ok"] and not rules["immutable"]["ok"]
    assert rules["rpo"]["ok"] and rules["errors"]["ok"]


def test_s3_outage_mid_run_then_replicate(
    workspace: Workspace, pg_database: PgDatabase, moto_server_factory: Callable[..., MotoServer]
) -> None:
    server = moto_server_factory()
    uploads = workspace.root / "uploads"
    make_tree(uploads)
    with open(uploads / "big.bin", "wb") as handle:
        handle.write(os.urandom(96 << 20))
    bucket = new_bucket_name()
    s3_policy(workspace, pg_database, uploads, server.url, bucket)
    assert workspace.run("target", "setup", "shop", "offsite").returncode == 0

    process = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "shop"],
        env={**os.environ, **workspace.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    while time.monotonic() - started < 120:
        if list(workspace.backups.rglob("uploads.tar.zst.age")):
            break  # complete on the local target: the S3 copy is being uploaded now
        time.sleep(0.02)
    server.stop()  # the S3 endpoint goes away in the middle of the run
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 3, stderr
    assert "offsite" in stderr

    listed = workspace.run_json("snapshots", "shop")
    assert listed[0]["status"] == "partial"
    assert listed[0]["targets"] == {"local": "complete", "offsite": "failed"}
    assert workspace.run("verify", "shop", "latest", "--target", "local").returncode == 0
    degraded = workspace.run("status", "shop", "--json")
    import json

    assert degraded.returncode == 1 and json.loads(degraded.stdout)[0]["degraded"] is True

    # The endpoint comes back (moto keeps buckets in memory: the bucket is set up again).
    server.start()
    assert workspace.run("target", "setup", "shop", "offsite").returncode == 0
    replicated = workspace.run_json("replicate", "shop")
    assert len(replicated["copied"]) == 1 and not replicated["failed"]
    listed = workspace.run_json("snapshots", "shop")
    assert listed[0]["status"] == "complete"
    assert listed[0]["targets"] == {"local": "complete", "offsite": "complete"}
    verified = workspace.run_json("verify", "shop", "latest", "--target", "offsite")
    assert verified[0]["ok"], verified  # the copy's sha256 equals the manifest's
