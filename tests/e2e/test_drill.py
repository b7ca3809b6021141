"""Restore drills end to end: the real CLI, real PostgreSQL, S3 (GLACIER), Docker and local runtimes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from backupctl.local_cluster.postgres import LocalPostgres
from tests.fixtures.core import Workspace
from tests.fixtures.s3 import new_bucket_name

ROOT = Path(__file__).resolve().parents[2]
DRILL_PASSWORD = "drill-secret-password-for-tests"


@dataclass
class Shop:
    space: Workspace
    cluster: LocalPostgres
    database: str


def seed_shop(workspace: Workspace, postgres_cluster: LocalPostgres) -> tuple[str, str, Path]:
    """The sample shop seeded in a fresh database, and its uploads: (database, url, uploads)."""
    name = f"shop_{os.urandom(4).hex()}"
    postgres_cluster.create_database(name)
    env = {**os.environ, "SHOP_DRILL_PASSWORD": DRILL_PASSWORD}
    url = postgres_cluster.url(name, "postgres")
    subprocess.run(
        [sys.executable, str(ROOT / "docker/shop/seed.py"), "--dsn", url, "--scale", "1"],
        env={**env, "PGPASSWORD": postgres_cluster.password},
        check=True,
        capture_output=True,
    )
    uploads = workspace.root / "uploads"
    subprocess.run(
        [sys.executable, str(ROOT / "docker/shop/uploads.py"), str(uploads), "--products", "50"],
        check=True,
        capture_output=True,
    )
    workspace.env.update(
        {
            "SHOP_TEST_DB_PASSWORD": postgres_cluster.password,
            "SHOP_DRILL_PASSWORD": DRILL_PASSWORD,
            "BACKUPCTL_S3_RESTORE_POLL": "0.2",
        }
    )
    return name, url, uploads


@pytest.fixture
def shop(workspace: Workspace, postgres_cluster: LocalPostgres, s3_server: str) -> Iterator[Shop]:
    """The sample shop seeded in a fresh database, backed up to local + S3 (GLACIER)."""
    name, url, uploads = seed_shop(workspace, postgres_cluster)
    workspace.write_policy(
        "shop",
        workspace.base_policy(
            "shop",
            [
                {"name": "shop-db", "type": "postgres", "url": url, "password": "env:SHOP_TEST_DB_PASSWORD"},
                {"name": "uploads", "type": "files", "path": str(uploads), "exclude": ["cache/*"]},
            ],
            [
                {"name": "local", "type": "local", "path": str(workspace.backups)},
                {
                    "name": "offsite",
                    "type": "s3",
                    "bucket": new_bucket_name(),
                    "endpoint_url": s3_server,
                    "region": "us-east-1",
                    "storage_class": "GLACIER",
                    "versioning": "optional",
                },
            ],
        ),
    )
    assert workspace.run("target", "setup", "shop", "offsite").returncode == 0
    result = workspace.run_json("backup", "shop")
    assert result["status"] == "complete", result
    yield Shop(workspace, postgres_cluster, name)
    postgres_cluster.drop_database(name)


def drill_file(space: Workspace, **changes: object) -> Path:
    """drills/shop.yaml, optionally changed, written next to a copy of the app it starts."""
    data = yaml.safe_load((ROOT / "drills" / "shop.yaml").read_text())
    data.update(changes)
    directory = space.root / "drills"
    directory.mkdir(exist_ok=True)
    (space.root / "docker" / "shop").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "docker" / "shop" / "app.py", space.root / "docker" / "shop" / "app.py")
    path = directory / "shop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def leftovers(label: str = "backupctl.managed=1") -> list[str]:
    found = []
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        done = subprocess.run(
            ["docker", *kind, "-q", "--filter", f"label={label}"], capture_output=True, text=True, check=False
        )
        found += done.stdout.split()
    return found


def test_docker_drill_from_glacier_passes_and_leaves_nothing(
    shop: Shop, staging_images: dict[str, str]
) -> None:
    space = shop.space
    reports = space.root / "reports"
    junit = space.root / "junit.xml"
    done = space.run(
        "drill",
        str(drill_file(space)),
        "--from",
        "offsite",
        "--runtime",
        "docker",
        "--report",
        str(reports),
        "--junit",
        str(junit),
        "--jobs",
        "2",
        "--json",
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["ok"] is True
    assert outcome["target"] == "offsite" and outcome["runtime"] == "docker"
    stages = [stage["name"] for stage in outcome["stages"]]
    assert stages[:2] == ["fetch shop-db", "fetch uploads"] and "apps ready" in stages and "checks" in stages
    details = {stage["name"]: stage["detail"] for stage in outcome["stages"]}
    assert details["restore shop-db"].endswith(", 2 parallel jobs"), details  # pg_restore --jobs 2 in staging
    assert outcome["warmup_seconds"] > 0, "the GLACIER copy must go through the warm-up path"
    names = {check["name"]: check["ok"] for check in outcome["checks"]}
    for expected in (
        "login",
        "cart",
        "payments",
        "reconciliation",
        "uploads",
        "row counts shop-db",
        "tree hash uploads",
        "manifest signature",
    ):
        assert names.get(expected) is True, (expected, outcome["checks"])
    assert leftovers() == []
    suite = ElementTree.parse(junit).getroot()
    assert int(suite.get("failures", "0")) == 0
    assert list(reports.glob("*.html")) and list(reports.glob("*.json"))
    history = space.run_json("drills")
    assert history[0]["ok"] is True and history[0]["rto_seconds"] > 0


def test_local_runtime_drill_passes(shop: Shop) -> None:
    space = shop.space
    done = space.run("drill", str(drill_file(space)), "--runtime", "local", "--json", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["ok"] and outcome["runtime"] == "local" and outcome["target"] == "offsite"


def test_wrong_drill_password_fails_the_login_check(shop: Shop, staging_images: dict[str, str]) -> None:
    space = shop.space
    done = space.run(
        "drill",
        str(drill_file(space)),
        "--from",
        "local",
        "--json",
        env={"SHOP_DRILL_PASSWORD": "not-the-password"},
        timeout=600,
    )
    assert done.returncode == 1
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["login"]["ok"] is False and "401" in checks["login"]["detail"]
    assert "not-the-password" not in done.stdout + done.stderr
    assert leftovers() == []


def containers(label: str = "backupctl.managed=1") -> list[str]:
    argv = ["docker", "ps", "-a", "-q", "--filter", f"label={label}"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()


def test_corrupted_artifact_is_named(shop: Shop, staging_images: dict[str, str]) -> None:
    space = shop.space
    artifact = next(space.backups.rglob("shop-db.pgdump.zst.age"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    done = space.run("drill", str(drill_file(space)), "--from", "local", "--json", timeout=600)
    assert done.returncode == 1
    outcome = json.loads(done.stdout)
    assert "shop-db.pgdump.zst.age" in outcome["reason"]
    # The report tells the truth: the stage that failed is a row, nothing later "passed".
    failed = [stage for stage in outcome["stages"] if stage["status"] == "failed"]
    assert [stage["name"] for stage in failed] == ["fetch shop-db"]
    app_checks = [check for check in outcome["checks"] if check["kind"] != "integrity"]
    assert app_checks and {check["status"] for check in app_checks} == {"not run"}
    assert outcome["summary"]["not_run"] == len(app_checks)
    assert outcome["objectives"]["rto"]["status"] == "not measured"
    assert outcome["objectives"]["rpo"]["status"] == "not measured"
    assert leftovers() == []


def test_app_that_never_becomes_ready_times_out(shop: Shop, staging_images: dict[str, str]) -> None:
    space = shop.space
    data = yaml.safe_load((ROOT / "drills" / "shop.yaml").read_text())
    data["services"][1]["ready"] = {"http": "/does-not-exist", "timeout": "15s"}
    path = drill_file(space, services=data["services"])
    done = space.run("drill", str(path), "--from", "local", "--json", timeout=600)
    assert done.returncode == 1
    assert "app" in json.loads(done.stdout)["reason"]
    assert leftovers() == []


def test_sigkill_leaves_leftovers_cleanup_removes_them_sigterm_cleans_itself(
    shop: Shop, staging_images: dict[str, str]
) -> None:
    space = shop.space
    path = drill_file(space)
    for sig in (signal.SIGKILL, signal.SIGTERM):
        process = subprocess.Popen(
            [sys.executable, "-m", "backupctl", "drill", str(path), "--from", "local"],
            env={**os.environ, **space.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 300
        # A container, not just any object: the network is created twice (subnet probe) at first.
        while time.monotonic() < deadline and not containers():
            time.sleep(0.2)
        assert containers(), "the drill never created its staging"
        time.sleep(2)
        process.send_signal(sig)
        process.wait(timeout=120)
        if sig == signal.SIGKILL:
            assert leftovers(), "SIGKILL runs no cleanup: leftovers stay"
            cleaned = space.run_json("drill", "cleanup")
            assert cleaned["removed"]
            assert leftovers() == []
        else:
            assert process.returncode != 0
            assert leftovers() == [], "SIGTERM must tear staging down"


@pytest.mark.parametrize(
    ("edit", "line", "text"),
    [
        (lambda t: t.replace("kind: postgres", "kind: postgress"), 14, "postgres"),
        (lambda t: t.replace("service: db\n", "service: dbx\n"), 77, "service 'dbx' is not defined"),
        (lambda t: t.replace("timeout: 30m", "timeout: 30 minutes"), 11, "not a duration"),
    ],
)
def test_bad_drill_files_exit_2_with_file_and_line(workspace: Workspace, edit, line: int, text: str) -> None:
    path = workspace.root / "bad-drill.yaml"
    path.write_text(edit((ROOT / "drills" / "shop.yaml").read_text()))
    done = workspace.run("drill", str(path))
    assert done.returncode == 2, done.stderr
    assert f"{path}:{line}:" in done.stderr and text in done.stderr, done.stderr


def test_row_count_mismatch_fails_the_drill(shop: Shop, staging_images: dict[str, str]) -> None:
    """A manifest (validly signed) whose counts disagree with what restores: integrity names it."""
    from backupctl.core.crypto import load_signing_key

    space = shop.space
    manifest_path = next(space.backups.rglob("manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    database = next(a for a in manifest["artifacts"] if a["source"] == "shop-db")
    database["facts"]["row_counts"]["public.orders"] += 1
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    manifest_path.write_bytes(data)
    manifest_path.with_name("manifest.json.sig").write_bytes(load_signing_key(space.keys).sign(data))
    done = space.run("drill", str(drill_file(space)), "--from", "local", "--json", timeout=600)
    assert done.returncode == 1
    outcome = json.loads(done.stdout)
    assert "row counts shop-db" in outcome["reason"] and "public.orders" in outcome["reason"]
    assert leftovers() == []


def test_default_drill_of_a_policy_restores_every_source(shop: Shop, staging_images: dict[str, str]) -> None:
    space = shop.space
    done = space.run("drill", "shop", "--from", "local", "--json", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {check["name"]: check["ok"] for check in json.loads(done.stdout)["checks"]}
    assert checks["row counts shop-db"] and checks["tree hash uploads"] and checks["manifest signature"]
    assert leftovers() == []


@pytest.mark.parametrize("runtime", ["docker", "local"])
def test_post_restore_steps_rewrite_the_url_as_timed_stages(
    shop: Shop, staging_images: dict[str, str], runtime: str
) -> None:
    """A post-restore SQL step points restored data at the staging URL checks use, a command
    step runs in the app service; both are timed stages between the restores and the checks."""
    space = shop.space
    data = yaml.safe_load((ROOT / "drills" / "shop.yaml").read_text())
    post_restore = [
        {"name": "point-at-staging", "service": "db", "database": "shop",
         "sql": "UPDATE products SET description = '${app.url}/' WHERE id = (SELECT min(id) FROM products)"},
        {"name": "app-env", "service": "app", "command": ["sh", "-c", 'test -n "$SHOP_DB_URL"']},
    ]  # fmt: skip
    check = {"name": "url-rewritten", "type": "sql", "service": "db", "database": "shop",
             "query": "SELECT count(*) FROM products WHERE description LIKE 'http://%:%/'",
             "expect": {"equals": 1}}  # fmt: skip
    path = drill_file(space, post_restore=post_restore, checks=[check, data["checks"][0]])
    done = space.run("drill", str(path), "--runtime", runtime, "--from", "local", "--json", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    names = [stage["name"] for stage in outcome["stages"]]
    assert names.index("restore shop-db") < names.index("post-restore point-at-staging")
    assert names.index("post-restore point-at-staging") < names.index("post-restore app-env")
    assert names.index("post-restore app-env") < names.index("apps ready") < names.index("checks")
    step = outcome["stages"][names.index("post-restore point-at-staging")]
    assert step["status"] == "ok" and step["seconds"] > 0
    assert {c["name"]: c["status"] for c in outcome["checks"]}["url-rewritten"] == "passed"
