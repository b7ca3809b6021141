"""`backupctl prune`: GFS retention executed on a local directory, S3 (moto, object lock) and restic.

Real backups (the CLI as a subprocess) where the test needs only "newer and older"; snapshots
with chosen ids (their time is in the id) written through the real target API and catalog where
the test needs a history spread over weeks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupctl import __version__
from backupctl.actions.prune import PRUNED, run_prune
from backupctl.catalog.store import Catalog
from backupctl.core.crypto import load_signing_key
from backupctl.core.manifest import ArtifactRecord, Manifest, snapshot_time
from backupctl.policy.loader import find_policy
from backupctl.policy.schema import Policy, Retention
from backupctl.settings import Settings
from backupctl.targets.base import build_target
from backupctl.targets.snapshot_files import key_of, list_snapshot_ids, write_manifest
from tests.fixtures.core import Workspace
from tests.fixtures.restic import RESTIC_PASSWORD_ENV
from tests.fixtures.s3 import empty_and_delete_bucket, new_bucket_name


def prune_cli(space: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backupctl", "prune", "shop", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **space.env},
    )  # fmt: skip


def prune_json(space: Workspace, *args: str, code: int = 0) -> dict[str, Any]:
    done = prune_cli(space, *args, "--json")
    assert done.returncode == code, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def by_target(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["target"]: item for item in report["targets"]}


def settings_of(space: Workspace) -> Settings:
    return Settings.resolve(str(space.policies), str(space.state), None, str(space.keys))


def load(space: Workspace) -> Policy:
    return find_policy("shop", space.policies, check_secrets=False).policy


def catalog_of(space: Workspace) -> Catalog:
    return Catalog.open(settings_of(space).catalog_url)


def copies(space: Workspace) -> dict[str, tuple[str, dict[str, str]]]:
    """snapshot id -> (status, target -> copy status), every snapshot of the policy."""
    views = catalog_of(space).snapshots("shop", include_incomplete=True)
    return {view.id: (view.status, view.targets) for view in views}


def snapshot_dirs(space: Workspace) -> list[str]:
    root = space.backups / "shop"
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def files_policy(space: Workspace, targets: list[dict[str, Any]], retention: dict[str, Any]) -> None:
    uploads = space.root / "uploads"
    uploads.mkdir(exist_ok=True)
    (uploads / "a.txt").write_text("some shop file\n")
    local = {"name": "local", "type": "local", "path": str(space.backups)}
    policy = space.base_policy("shop", [{"name": "uploads", "type": "files", "path": str(uploads)}],
                               [local, *targets], retention=retention)  # fmt: skip
    space.write_policy("shop", policy)


class Planter:
    """Writes small signed snapshots with chosen times through the real target API and records
    them in the catalog like a backup would (copies on the other targets recorded failed)."""

    def __init__(self, space: Workspace, policy: Policy) -> None:
        self.policy = policy
        self.catalog = catalog_of(space)
        self.key = load_signing_key(space.keys)
        self.targets = {config.name: build_target(config) for config in policy.targets}

    def __call__(self, moment: datetime, on: list[str]) -> str:
        snapshot_id = f"{moment:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"
        self.catalog.begin_snapshot(snapshot_id, "shop", "0" * 64, snapshot_time(snapshot_id))
        data = os.urandom(300)
        digest = hashlib.sha256(data).hexdigest()
        record = ArtifactRecord(
            "uploads", "files", "uploads.tar.zst.age", "tar", len(data), f"sha256:{digest}", len(data), digest
        )
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        host = socket.gethostname()
        signer = self.key.public_b64
        manifest = Manifest(
            snapshot_id, "shop", "0" * 64, host, __version__, stamp, stamp, [], signer, [record]
        )
        sha = ""
        for name, target in self.targets.items():
            if name not in on:
                self.catalog.record_copy(snapshot_id, name, "failed", error="planted as failed")
                continue
            with target.writer(key_of("shop", snapshot_id, record.file)) as handle:
                handle.write(data)
            sha = write_manifest(target, manifest, self.key)
            self.catalog.record_copy(snapshot_id, name, "complete", len(data))
        status = "complete" if len(on) == len(self.targets) else "partial"
        self.catalog.finish_snapshot(manifest, sha, status)
        return snapshot_id

    def close(self) -> None:
        for target in self.targets.values():
            target.close()


@pytest.fixture
def bucket(s3_client: Any) -> Iterator[str]:
    name = new_bucket_name("prune")
    yield name
    empty_and_delete_bucket(s3_client, name)


# --------------------------------------------------------------------------- local, real backups
def test_real_backups_on_local_dry_run_then_prune_then_nothing_left_to_do(workspace: Workspace) -> None:
    space = workspace
    files_policy(space, [], {"keep_last": 2})
    made = [space.run_json("backup", "shop")["snapshot_id"] for _ in range(3)]
    before = (snapshot_dirs(space), copies(space))
    assert before[0] == sorted(made)

    planned = by_target(prune_json(space, "--dry-run"))["local"]
    assert planned["removed"] == [made[0]]
    assert planned["kept"] == [
        {"snapshot": made[2], "reasons": ["newest", "last 1"]},
        {"snapshot": made[1], "reasons": ["last 2"]},
    ]
    assert (snapshot_dirs(space), copies(space)) == before  # a dry run touches nothing

    done = prune_cli(space)
    assert done.returncode == 0, done.stderr
    assert f"{made[0]}  remove" in done.stdout and "newest, last 1" in done.stdout
    assert snapshot_dirs(space) == sorted(made[1:])
    state = copies(space)
    assert state[made[0]] == (PRUNED, {"local": "deleted"})
    assert [item["id"] for item in space.run_json("snapshots", "shop")] == [made[2], made[1]]

    again = by_target(prune_json(space))["local"]
    assert again["removed"] == [] and len(again["kept"]) == 2
    assert space.run_json("verify", "shop", "latest")[0]["ok"]


# --------------------------------------------------------------------------- GFS, local + S3
def test_gfs_per_target_rules_and_the_only_copy_across_local_and_s3(
    workspace: Workspace, s3_server: str, s3_client: Any, s3_bucket: str
) -> None:
    space = workspace
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    offsite = {"name": "offsite", "type": "s3", "bucket": s3_bucket, "endpoint_url": s3_server,
               "region": "us-east-1", "prefix": "backups"}  # fmt: skip
    files_policy(space, [offsite], {"keep_daily": 7, "keep_monthly": 3})
    policy = load(space)
    plant = Planter(space, policy)
    ids: dict[date, str] = {}
    for day in range(30):  # 2026-01-20 .. 2026-02-18, S3 missed the January month-end
        moment = datetime(2026, 1, 20, 2, tzinfo=UTC) + timedelta(days=day)
        on = ["local"] if moment.date() == date(2026, 1, 31) else ["local", "offsite"]
        ids[moment.date()] = plant(moment, on)
    plant.close()
    # The local disk keeps a short window: a per-target override of the policy's rules.
    local = policy.target("local").model_copy(update={"retention": Retention(keep_daily=3)})
    policy = policy.model_copy(update={"targets": [local, policy.target("offsite")]})
    settings, now = settings_of(space), datetime(2026, 2, 18, 12, tzinfo=UTC)
    s3 = build_target(policy.target("offsite"))

    def state() -> tuple[list[str], list[str], dict[str, Any]]:
        return snapshot_dirs(space), list_snapshot_ids(s3, "shop"), copies(space)

    before = state()
    dry = run_prune(settings, policy, dry_run=True, now=now)
    assert state() == before
    report = run_prune(settings, policy, now=now)
    assert report.as_dict()["targets"] == dry.as_dict()["targets"]  # the dry run told the truth
    assert not report.failed
    local_report, s3_report = report.targets
    feb = [ids[date(2026, 2, d)] for d in range(18, 11, -1)]
    assert local_report.rules == {"keep_daily": 3}
    assert [(k.snapshot, k.reasons) for k in local_report.kept] == [
        (feb[0], ["newest", "daily 2026-02-18"]),
        (feb[1], ["daily 2026-02-17"]),
        (feb[2], ["daily 2026-02-16"]),
        (ids[date(2026, 1, 31)], ["only copy (wanted by offsite: monthly 2026-01)"]),
    ]
    assert [(k.snapshot, k.reasons) for k in s3_report.kept] == [
        (feb[0], ["newest", "daily 2026-02-18", "monthly 2026-02"]),
        *[(snapshot, [f"daily 2026-02-{18 - n:02d}"]) for n, snapshot in enumerate(feb[1:], 1)],
        (ids[date(2026, 1, 30)], ["monthly 2026-01"]),  # the newest of January that S3 holds
    ]
    assert snapshot_dirs(space) == sorted([*feb[:3], ids[date(2026, 1, 31)]])
    assert list_snapshot_ids(s3, "shop") == sorted([ids[date(2026, 1, 30)], *feb])
    versions = s3_client.list_object_versions(
        Bucket=s3_bucket, Prefix=f"backups/shop/{ids[date(2026, 1, 25)]}/"
    )
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []
    after = copies(space)
    assert after[ids[date(2026, 1, 25)]] == (PRUNED, {"local": "deleted", "offsite": "deleted"})
    assert after[ids[date(2026, 1, 30)]] == ("complete", {"local": "deleted", "offsite": "complete"})
    assert after[ids[date(2026, 1, 31)]] == ("partial", {"local": "complete", "offsite": "failed"})
    again = run_prune(settings, policy, now=now)
    assert [t.removed for t in again.targets] == [[], []]
    s3.close()


# --------------------------------------------------------------------------- object lock
def test_object_locked_versions_are_retained_and_reported(
    workspace: Workspace, s3_server: str, s3_client: Any, bucket: str
) -> None:
    space = workspace
    offsite = {"name": "offsite", "type": "s3", "bucket": bucket, "endpoint_url": s3_server,
               "region": "us-east-1", "object_lock": {"mode": "COMPLIANCE", "days": 1}}  # fmt: skip
    files_policy(space, [offsite], {"keep_last": 1})
    space.run("target", "setup", "shop", "offsite", check=True)
    policy = load(space)
    start = datetime(2026, 3, 1, 2, tzinfo=UTC)
    plant = Planter(space, policy)
    made = [plant(start + timedelta(days=n), ["local", "offsite"]) for n in range(3)]
    plant.close()

    human = prune_cli(space, "--target", "offsite")  # exit 0: a lock doing its job is not a failure
    assert human.returncode == 0, human.stderr
    assert "offsite (s3): 1 kept, 0 removed, 2 retained by lock" in human.stdout
    assert f"{made[0]}  retained-by-lock  locked until 20" in human.stdout
    assert "local" not in human.stdout and snapshot_dirs(space) == made  # --target: only that one
    assert prune_cli(space, "--target", "nowhere").returncode == 2

    report = by_target(prune_json(space))
    assert report["local"]["removed"] == made[:2]
    locked = report["offsite"]["retained_by_lock"]
    assert [item["snapshot"] for item in locked] == made[:2]
    assert all(item["until"] and item["until"].startswith("20") for item in locked)
    assert "retained by object lock (COMPLIANCE)" in locked[0]["detail"]
    assert report["offsite"]["removed"] == [] and report["offsite"]["errors"] == []
    # Nothing of a locked snapshot was touched: it stays whole and complete in the catalog.
    keys = {item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {f"shop/{made[0]}/{name}" for name in ("manifest.json", "manifest.json.sig")} <= keys
    assert copies(space)[made[0]] == ("complete", {"local": "deleted", "offsite": "complete"})


# --------------------------------------------------------------------------- restic
def test_restic_forget_prune_and_a_failed_deletion_exits_1(
    workspace: Workspace, restic_binary: str, restic_password: str, tmp_path: Path
) -> None:
    from backupctl.policy.schema import ResticTarget
    from backupctl.targets.restic import ResticRepository

    space = workspace
    repository = tmp_path / "restic-repo"
    dedup = {"name": "dedup", "type": "restic", "repository": str(repository),
             "password": f"env:{RESTIC_PASSWORD_ENV}"}  # fmt: skip
    files_policy(space, [dedup], {"keep_last": 1})
    space.env["RESTIC_CACHE_DIR"] = str(tmp_path / "restic-cache")
    space.run("target", "setup", "shop", "dedup", check=True)
    made = [space.run_json("backup", "shop")["snapshot_id"] for _ in range(2)]
    restic = ResticRepository(ResticTarget.model_validate(dedup), cache_dir=tmp_path / "restic-cache")

    def tagged(kind: str = "source=uploads") -> list[str]:
        """snapshot= tags of the restic snapshots of one kind: the source's data or the manifest."""
        listed = [info for info in restic.snapshots() if kind in info.tags]
        return sorted(tag for info in listed for tag in info.tags if tag.startswith("snapshot="))

    assert tagged() == tagged("manifest") == [f"snapshot={snapshot}" for snapshot in made]

    repository.rename(tmp_path / "moved-away")  # the repository is unreachable: deletion fails
    failed = prune_cli(space)
    assert failed.returncode == 1, failed.stderr
    assert "FAILED" in failed.stdout and "1 deletion(s) failed" in failed.stderr
    assert snapshot_dirs(space) == [made[1]]  # the local target was pruned all the same
    assert copies(space)[made[0]] == ("complete", {"local": "deleted", "dedup": "complete"})

    (tmp_path / "moved-away").rename(repository)
    report = by_target(prune_json(space))
    assert report["dedup"]["removed"] == made[:1] and report["local"]["removed"] == []
    assert tagged() == tagged("manifest") == [f"snapshot={made[1]}"]  # the manifest went too
    assert copies(space)[made[0]] == (PRUNED, {"local": "deleted", "dedup": "deleted"})


def test_restic_data_of_failed_runs_is_forgotten(
    workspace: Workspace, restic_binary: str, restic_password: str, tmp_path: Path
) -> None:
    """A run that fails after restic committed a source's data leaves that data without a
    manifest; prune forgets it (and only it) while keeping every snapshot its rules keep, and
    without a prune the next successful backup sweeps it (actions/sweep.py)."""
    import sqlite3

    from backupctl.policy.schema import ResticTarget
    from backupctl.targets.restic import ResticRepository

    space = workspace
    uploads = space.root / "uploads"
    uploads.mkdir()
    (uploads / "a.txt").write_text("some shop file\n")
    orders = tmp_path / "orders.db"  # missing for the first run: that source fails
    dedup = {"name": "dedup", "type": "restic", "repository": str(tmp_path / "restic-repo"),
             "password": f"env:{RESTIC_PASSWORD_ENV}"}  # fmt: skip
    sources = [{"name": "uploads", "type": "files", "path": str(uploads)},
               {"name": "orders", "type": "sqlite", "path": str(orders)}]  # fmt: skip
    space.write_policy("shop", space.base_policy("shop", sources, [dedup], retention={"keep_last": 5}))
    space.env["RESTIC_CACHE_DIR"] = str(tmp_path / "restic-cache")
    space.run("target", "setup", "shop", "dedup", check=True)
    restic = ResticRepository(ResticTarget.model_validate(dedup), cache_dir=tmp_path / "restic-cache")

    def uploads_data() -> list[str]:
        listed = [info for info in restic.snapshots() if "source=uploads" in info.tags]
        tags = [tag for info in listed for tag in info.tags]
        return sorted(tag.removeprefix("snapshot=") for tag in tags if tag.startswith("snapshot="))

    with sqlite3.connect(orders) as database:
        database.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    good = space.run_json("backup", "shop")["snapshot_id"]
    orders.rename(tmp_path / "orders-away.db")  # the next run fails on it
    failed = space.run("backup", "shop")
    assert failed.returncode == 1 and "orders" in failed.stderr, failed.stderr
    [failed_run] = [s for s in uploads_data() if s != good]  # uploads went to restic before orders failed
    assert copies(space)[failed_run][0] == "failed"

    dry = by_target(prune_json(space, "--dry-run"))["dedup"]
    assert dry["leftovers"] == [] and dry["removed"] == []
    assert uploads_data() == sorted([failed_run, good])  # a dry run reads no repository

    report = by_target(prune_json(space))["dedup"]
    assert report["leftovers"] == [failed_run] and report["removed"] == []
    assert uploads_data() == [good]
    restored = space.run("restore", "shop", good, "--source", "uploads", "--to-dir", str(tmp_path / "back"))
    assert restored.returncode == 0, restored.stderr
    assert by_target(prune_json(space))["dedup"]["leftovers"] == []  # nothing left to forget

    # Without a prune, the next successful backup sweeps a failed run's restic data itself.
    failed = space.run("backup", "shop")
    assert failed.returncode == 1
    [second_failure] = [s for s in uploads_data() if s != good]
    (tmp_path / "orders-away.db").rename(orders)
    after = space.run_json("backup", "shop")
    (swept,) = after["swept"]
    assert swept["target"] == "dedup" and swept["snapshots"] == [second_failure], swept
    assert uploads_data() == sorted([good, after["snapshot_id"]])


# --------------------------------------------------------------------------- after a backup
class Recorded:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def progress(self, label: str, total: int | None) -> Any:
        raise AssertionError("prune reports no progress")


def test_prune_after_backup_prunes_and_never_raises(workspace: Workspace) -> None:
    from backupctl.actions.prune import prune_after_backup

    space = workspace
    files_policy(space, [], {"keep_last": 1})
    policy = load(space)
    plant = Planter(space, policy)
    made = [plant(datetime(2026, 4, 1, tzinfo=UTC) + timedelta(hours=n), ["local"]) for n in range(2)]
    plant.close()
    events = Recorded()
    report = prune_after_backup(settings_of(space), policy, events)
    assert report is not None and report.targets[0].removed == made[:1]
    assert ("info", f"prune shop: removed snapshot {made[0]} from local") in events.lines
    broken = Settings.resolve(str(space.policies), str(space.state), "nosuchdb://", str(space.keys))
    assert prune_after_backup(broken, policy, events) is None  # a bad catalog URL: a warning only
    assert events.lines[-1][0] == "warning"
