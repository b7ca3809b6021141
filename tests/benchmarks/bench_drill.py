"""Drill benchmark (issues #4, #17): a drill of the shop database from the local target (its
restore spooled in staging and run with `pg_restore --jobs 2`) vs the same steps by hand, same
run: start a fresh container of the same image, `age -d | zstd -d | docker exec -i pg_restore`,
serially and with the dump spooled in the container first and `pg_restore --jobs 2` (the fastest
hand-run path, the one the drill must match: ratio <= 1.0).
BENCH_DRILL_DB (default 1GiB) sets the database size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from backupctl.core.crypto import generate_keys
from backupctl.local_cluster.postgres import LocalPostgres
from tests.benchmarks.common import BENCH, ROOT

IMAGE = "backupctl/postgres:15"


def run(argv: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, text=True, capture_output=True, check=True, **kwargs)  # type: ignore[call-overload]


def by_hand(artifact: Path, identity: Path, jobs: int, env: dict[str, str]) -> float:
    """Fresh container, wait ready, createdb, decrypt | decompress | pg_restore. Wall seconds."""
    name = f"backupctl-bench-by-hand-{os.getpid()}-{jobs}"
    started = time.monotonic()
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "backupctl.managed=1",
            "-e",
            "POSTGRES_PASSWORD=bench",
            IMAGE,
        ],
        env,
    )
    try:
        while (
            subprocess.run(
                ["docker", "exec", name, "psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "select 1"],
                env={**env, "PGPASSWORD": "bench"},
                capture_output=True,
            ).returncode
            != 0
        ):
            time.sleep(0.2)
        run(
            [
                "docker",
                "exec",
                "-e",
                "PGPASSWORD=bench",
                name,
                "createdb",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "shop",
            ],
            env,
        )
        restore = (
            f"docker exec -i -e PGPASSWORD=bench {name} pg_restore -h 127.0.0.1 -U postgres --no-owner "
            f"--exit-on-error -d shop"
        )
        if jobs == 1:
            pipeline = f"age -d -i {identity} {artifact} | zstd -d | {restore}"
        else:  # --jobs needs a seekable file: decompress into the container first
            pipeline = (
                f"age -d -i {identity} {artifact} | zstd -d | docker exec -i {name} sh -c 'cat > /tmp/d' "
                f"&& docker exec -e PGPASSWORD=bench {name} pg_restore -h 127.0.0.1 -U postgres --no-owner "
                f"--exit-on-error --jobs {jobs} -d shop /tmp/d"
            )
        subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], env=env, check=True, capture_output=True)
        return time.monotonic() - started
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)


def main() -> None:
    size = os.environ.get("BENCH_DRILL_DB", "1GiB")
    BENCH.mkdir(exist_ok=True)
    subprocess.run(["bash", str(ROOT / "docker" / "build-images.sh")], check=True)
    cluster_dir = Path(f"/tmp/backupctl-bench-drill-pg-{os.getpid()}")  # concurrent runs on one machine
    shutil.rmtree(cluster_dir, ignore_errors=True)
    cluster_dir.mkdir(mode=0o755)
    keys = generate_keys(BENCH / "state" / "keys")
    policies = BENCH / "policies-drill"
    policies.mkdir(exist_ok=True)
    with LocalPostgres(cluster_dir) as cluster:
        cluster.create_database("shop")
        url = cluster.url("shop", "postgres")
        env = {
            **os.environ,
            "PGPASSWORD": cluster.password,
            "BENCH_DB_PASSWORD": cluster.password,
            "NO_COLOR": "1",
            "BACKUPCTL_STATE_DIR": str(BENCH / "state"),
            "BACKUPCTL_POLICIES": str(policies),
        }
        print(f"\n== drill benchmark: shop database ~{size}", flush=True)
        run(
            [sys.executable, str(ROOT / "docker/shop/seed.py"), "--dsn", url, "--size", size, "--no-check"],
            env,
        )
        (policies / "shop-bench.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "shop-bench",
                    "objectives": {"rpo": "24h", "rto": "1h"},
                    "encryption": {"recipients": [keys.recipient], "identity": f"file:{keys.identity_file}"},
                    "sources": [
                        {
                            "name": "shop-db",
                            "type": "postgres",
                            "url": url,
                            "password": "env:BENCH_DB_PASSWORD",
                        }
                    ],
                    "targets": [{"name": "local", "type": "local", "path": str(BENCH / "backups-drill")}],
                }
            )
        )
        backupctl = [sys.executable, "-m", "backupctl", "-q"]
        run([*backupctl, "backup", "shop-bench"], env)
    shutil.rmtree(cluster_dir, ignore_errors=True)
    artifact = sorted((BENCH / "backups-drill" / "shop-bench").glob("*/shop-db.pgdump.zst.age"))[-1]
    drill = BENCH / "drill-bench.yaml"
    drill.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "policy": "shop-bench",
                "runtime": "docker",
                "services": [
                    {
                        "name": "db",
                        "kind": "postgres",
                        "image": IMAGE,
                        "env": {"POSTGRES_PASSWORD": "${BACKUPCTL_DRILL_SECRET}"},
                        "databases": [{"source": "shop-db", "database": "shop"}],
                    }
                ],
            }
        )
    )
    started = time.monotonic()
    done = run(
        [*backupctl, "drill", str(drill), "--no-objectives", "--jobs", "2", "--json",
         "--report", str(BENCH / "reports")],
        env,
    )
    drill_wall = time.monotonic() - started
    outcome = json.loads(done.stdout)
    hand = by_hand(artifact, keys.identity_file, 1, env)
    hand_jobs = by_hand(artifact, keys.identity_file, 2, env)
    print("  drill stages:")
    for stage in outcome["stages"]:
        print(f"    {stage['name']:<28} {stage['seconds']:8.1f} s  {stage.get('detail', '')}")
    rto = outcome["objectives"]["rto"]["measured_seconds"]
    print(
        f"  backupctl drill: measured RTO {rto:.1f} s (wall incl. start-up and teardown {drill_wall:.1f} s)"
    )
    print(f"  by hand (fresh container + age | zstd | pg_restore): {hand:.1f} s")
    print(f"  by hand with pg_restore --jobs 2 (spooled to a file first): {hand_jobs:.1f} s")
    print(
        f"  ratio drill RTO / by hand with --jobs 2 = {rto / hand_jobs:.2f} [<= 1.0]; "
        f"drill RTO / serial by hand = {rto / hand:.2f}; --jobs 2 by hand saves {hand - hand_jobs:.1f} s "
        f"({100 * (hand - hand_jobs) / hand:.0f}%) on {os.cpu_count()} CPUs"
    )
