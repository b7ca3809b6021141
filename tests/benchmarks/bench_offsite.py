"""Off-site benchmark (issue #3), same run, same machine:

- S3: upload of a 1 GiB artifact to a local S3 endpoint (moto's server): backupctl's S3 target
  (streaming multipart) vs boto3's own `upload_file` of the same file at the same part size and
  concurrency (the target's defaults), BENCH_S3_RUNS (default 3)
  rounds, each upload into a fresh server, the order alternating; throughput ratio and peak RSS.
  Set BENCH_S3_SIZE (MiB) to change the size.
- restic: backup of the shop database (BENCH_RESTIC_DB, default 1GiB) with backupctl to a
  restic target only (the issue's comparison: same work, plus the signed manifest) and to a
  local + restic target pair (one tee'd dump, two copies; informational) vs plain
  `pg_dump -Fc -Z0 | restic backup --stdin`, each into a fresh repository, BENCH_RESTIC_RUNS
  (default 9: the test VM's speed drifts by ±15 % within minutes) alternating runs; the ratio
  of the medians, and the median of each round's ratio (rounds run back to back, so this one
  is less exposed to a VM whose speed drifts).
  BENCH_OFFSITE=restic skips the S3 part.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from backupctl.core.crypto import generate_keys
from backupctl.local_cluster.postgres import LocalPostgres
from tests.benchmarks.common import BENCH, ROOT, Measure, measure
from tests.fixtures.s3 import TEST_ENV, MotoServer, new_bucket_name

# boto3 at the S3 target's default part size and concurrency (the terms: same settings).
S3_UPLOAD_BOTO3 = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from backupctl.policy.schema import S3Target
target = S3Target(name="bench", type="s3", bucket="b")
config = TransferConfig(multipart_chunksize=target.part_size_mb << 20, max_concurrency=target.max_concurrency)
client = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
client.upload_file(sys.argv[3], sys.argv[2], "boto3/artifact.bin", Config=config)
"""

S3_UPLOAD_BACKUPCTL = """
import shutil, sys
from backupctl.policy.schema import S3Target
from backupctl.targets.s3 import S3BlobTarget
target = S3BlobTarget(S3Target(name="bench", type="s3", bucket=sys.argv[2], endpoint_url=sys.argv[1],
                               region="us-east-1", versioning="optional"))
with open(sys.argv[3], "rb") as source, target.writer("bench/backupctl/artifact.bin") as sink:
    shutil.copyfileobj(source, sink, 1 << 20)
"""


def s3_benchmark() -> None:
    size_mib = int(os.environ.get("BENCH_S3_SIZE", "1024"))
    rounds = int(os.environ.get("BENCH_S3_RUNS", "3"))
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}
    os.environ.update(TEST_ENV)
    artifact = BENCH / "artifact.bin"
    with open(artifact, "wb") as handle:  # incompressible, like an encrypted artifact
        for _ in range(size_mib):
            handle.write(os.urandom(1 << 20))
    (BENCH / "moto").mkdir(exist_ok=True)
    uploads = {"boto3": ("boto3 upload_file", S3_UPLOAD_BOTO3),
               "ours": ("backupctl S3 target writer", S3_UPLOAD_BACKUPCTL)}  # fmt: skip
    results: dict[str, list[Measure]] = {"boto3": [], "ours": []}
    # A fresh server per upload: moto keeps what it stores in its own process, so an upload into
    # a server that already holds the other's GiB would not be measured on equal terms.
    print(f"\n== S3 upload of {size_mib} MiB, {rounds} rounds, each into a fresh moto server, "
          "the order alternating", flush=True)
    try:
        for round_number in range(rounds):
            order = ["boto3", "ours"] if round_number % 2 == 0 else ["ours", "boto3"]
            for name in order:
                server = MotoServer(BENCH / "moto")
                server.start()
                try:
                    bucket = new_bucket_name()
                    server.client().create_bucket(Bucket=bucket)
                    label, code = uploads[name]
                    argv = [sys.executable, "-c", code, server.url, bucket, str(artifact)]
                    results[name].append(measure(label, argv, env))
                finally:
                    server.stop()
    finally:
        artifact.unlink()
    boto3_time = statistics.median(m.seconds for m in results["boto3"])
    our_time = statistics.median(m.seconds for m in results["ours"])
    rounds_paired = zip(results["boto3"], results["ours"], strict=True)
    paired = statistics.median(boto3_run.seconds / ours.seconds for boto3_run, ours in rounds_paired)
    rss = max(m.peak_rss_kib for m in results["ours"]) / 1024
    boto3_rss = max(m.peak_rss_kib for m in results["boto3"]) / 1024
    print(f"  throughput (medians): boto3 {size_mib / boto3_time:.0f} MiB/s, "
          f"backupctl {size_mib / our_time:.0f} MiB/s; ratio {boto3_time / our_time:.2f} [>= 1.0] "
          f"(median of the rounds' ratios {paired:.2f}); peak RSS backupctl {rss:.0f} MiB, boto3 "
          f"{boto3_rss:.0f} MiB: +{rss - boto3_rss:.0f} MiB [<= +20]")


def restic_benchmark() -> None:
    size = os.environ.get("BENCH_RESTIC_DB", "1GiB")
    runs = int(os.environ.get("BENCH_RESTIC_RUNS", "9"))
    cluster_dir = Path("/tmp/backupctl-bench-restic-pg")
    shutil.rmtree(cluster_dir, ignore_errors=True)
    cluster_dir.mkdir(mode=0o755)
    keys = generate_keys(BENCH / "state" / "keys")
    with LocalPostgres(cluster_dir) as cluster:
        cluster.create_database("shop")
        url = cluster.url("shop", "postgres")
        env = {**os.environ, "PGPASSWORD": cluster.password, "BENCH_DB_PASSWORD": cluster.password,
               "RESTIC_PASSWORD": "bench-restic-password", "BENCH_RESTIC_PASSWORD": "bench-restic-password",
               "BACKUPCTL_STATE_DIR": str(BENCH / "state"), "NO_COLOR": "1",
               "BACKUPCTL_POLICIES": str(BENCH / "policies-restic")}
        print(f"\n== restic: shop database ~{size}, {runs} runs each (median), fresh repositories",
              flush=True)
        subprocess.run([sys.executable, str(ROOT / "docker/shop/seed.py"), "--dsn", url, "--size", size,
                        "--no-check"], env=env, check=True, capture_output=True)
        plain_repo, our_repo = BENCH / "restic-plain", BENCH / "restic-backupctl"
        policies = BENCH / "policies-restic"
        shutil.rmtree(policies, ignore_errors=True)
        policies.mkdir()
        source = {"name": "db", "type": "postgres", "url": url, "password": "env:BENCH_DB_PASSWORD"}
        restic = {"name": "dedup", "type": "restic", "repository": str(our_repo),
                  "password": "env:BENCH_RESTIC_PASSWORD"}
        local = {"name": "local", "type": "local", "path": str(BENCH / "backups-restic")}
        for name, targets in (("shop-restic", [restic]), ("shop-restic-local", [local, restic])):
            (policies / f"{name}.yaml").write_text(yaml.safe_dump({
                "name": name, "objectives": {"rpo": "24h", "rto": "1h"},
                "encryption": {"recipients": [keys.recipient]}, "sources": [source], "targets": targets}))
        backupctl = [sys.executable, "-m", "backupctl", "-q"]

        def fresh(repo: Path) -> None:
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(BENCH / "backups-restic", ignore_errors=True)
            subprocess.run(["restic", "init", "-q", "--repo", str(repo)], env=env, check=True,
                           capture_output=True)

        results: dict[str, list[Measure]] = {"plain": [], "ours": [], "ours+local": []}
        for _ in range(runs):
            fresh(plain_repo)
            dump = ["pg_dump", "-Fc", "-Z0", "--dbname", url]
            results["plain"].append(measure(
                "pg_dump -Fc -Z0 | restic backup --stdin",
                ["restic", "backup", "-q", "--repo", str(plain_repo), "--stdin", "--stdin-filename",
                 "shop.pgdump"], env, output=plain_repo, stdin_from=dump))
            fresh(our_repo)
            results["ours"].append(measure(
                "backupctl backup (restic only)", [*backupctl, "backup", "shop-restic"], env,
                output=our_repo))
            fresh(our_repo)
            results["ours+local"].append(measure(
                "backupctl backup (local + restic, one dump)", [*backupctl, "backup", "shop-restic-local"],
                env, output=our_repo))
    shutil.rmtree(cluster_dir, ignore_errors=True)
    median = {key: statistics.median(m.seconds for m in values) for key, values in results.items()}
    rss = max(m.peak_rss_kib for m in results["ours"]) / 1024
    print(f"  medians: plain {median['plain']:.1f} s, restic only {median['ours']:.1f} s, "
          f"local + restic {median['ours+local']:.1f} s")
    rounds = zip(results["ours"], results["plain"], strict=True)
    paired = statistics.median(ours.seconds / plain.seconds for ours, plain in rounds)
    print(f"  ratio backupctl (restic only) / (pg_dump | restic) = {median['ours'] / median['plain']:.2f} "
          f"[<= 1.1] (median of the rounds' ratios {paired:.2f}); peak RSS {rss:.0f} MiB")
    print(f"  ratio backupctl (local age copy + restic) / (pg_dump | restic) = "
          f"{median['ours+local'] / median['plain']:.2f} (two copies of one dump; informational)")


def main() -> None:
    BENCH.mkdir(exist_ok=True)
    parts = os.environ.get("BENCH_OFFSITE", "s3,restic").split(",")
    if "s3" in parts:
        s3_benchmark()
    if "restic" in parts:
        restic_benchmark()
