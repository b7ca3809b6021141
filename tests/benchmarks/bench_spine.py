#!/usr/bin/env python3
"""Spine benchmark: backupctl backup/restore against pg_dump/pg_restore, same run, same database.

For each database size (default 256MiB and 1GiB, override with BENCH_SIZES=64MiB,1GiB):
  backup:  `pg_dump -Fc -Z0 > /dev/null` (the source's own speed: the limit),
           `pg_dump -Fc -f FILE` (what most people run), `backupctl backup` to a local target
  restore: `pg_restore -d DB FILE` of the pg_dump -Fc file, `pg_restore --jobs N` of it by hand
           (N = one per CPU), the same from backupctl's artifact by hand (`age -d | zstd -d > FILE`
           first, as an operator must), `backupctl restore --to-db DB` (default: parallel, N jobs) and
           `backupctl restore --jobs 1` (the serial stream)
Prints wall time, output bytes and peak RSS (the process and the children it waited for, from
wait4) and the ratios the issue targets. Numbers are measured, never asserted.

The two pairs the issue's ratios rest on (raw dump vs backup; `pg_restore --jobs N` by hand vs
`backupctl restore`) run BENCH_ROUNDS times (default 3), alternating which goes first, and the
tables show each pair's median: on a shared VM one run of a 1 GiB restore varied from 14.8 to 24.7 s
within an hour (docs/benchmarks.md, session 12). Every measured step starts after a CHECKPOINT
and a sync, so none pays for the dirty pages of the one before.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backupctl.core.crypto import GeneratedKeys, generate_keys  # noqa: E402
from backupctl.core.spool import default_jobs  # noqa: E402
from backupctl.local_cluster.postgres import LocalPostgres  # noqa: E402
from tests.benchmarks.common import BENCH, Measure, measure  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def parse_size(text: str) -> int:
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    upper = text.upper()
    for unit, factor in units.items():
        if upper.endswith(unit):
            return int(float(upper[: -len(unit)]) * factor)
    return int(text)


def settle(cluster: LocalPostgres) -> None:
    """Start a measurement with no dirty buffers or pages left by the previous one."""
    cluster.psql("CHECKPOINT")
    os.sync()


def median_of(runs: list[Measure]) -> Measure:
    """The run with the median wall time (the upper one of an even count), labelled with all."""
    ordered = sorted(runs, key=lambda run: run.seconds)
    middle = ordered[len(ordered) // 2]
    every = " / ".join(f"{run.seconds:.1f}" for run in runs)
    label = f"{middle.label} [median of {len(runs)}: {every} s]" if len(runs) > 1 else middle.label
    return Measure(label, middle.seconds, middle.output_bytes, max(run.peak_rss_kib for run in runs))


def alternate(first: Callable[[], Measure], second: Callable[[], Measure]) -> tuple[Measure, Measure]:
    """ROUNDS runs of each, the order alternating between rounds; the median of each."""
    runs: tuple[list[Measure], list[Measure]] = ([], [])
    for round_ in range(ROUNDS):
        order = ((0, first), (1, second)) if round_ % 2 == 0 else ((1, second), (0, first))
        for slot, run in order:
            runs[slot].append(run())
    return median_of(runs[0]), median_of(runs[1])


def bench_size(
    cluster: LocalPostgres, size: str, env: dict[str, str], keys: GeneratedKeys
) -> dict[str, Measure]:
    """Seed a shop database of `size` and run every step on it."""
    name = f"shop_{size.lower()}"
    print(f"\n== database {name}: seeding ~{size}", flush=True)
    cluster.create_database(name)
    url = cluster.url(name, "postgres")
    seeded = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docker/shop/seed.py"),
            "--dsn",
            url,
            "--size",
            size,
            "--no-check",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if seeded.returncode != 0:
        raise SystemExit(f"seeding failed: {seeded.stderr[-2000:]}")
    actual = cluster.psql(f"SELECT pg_database_size('{name}')", database=name).strip()
    print(f"  seeded: pg_database_size = {int(actual) / 2**20:.0f} MiB", flush=True)
    runs: dict[str, Measure] = {}
    subprocess.run(
        ["pg_dump", "-Fc", "-Z0", "--dbname", url], env=env, check=True, stdout=subprocess.DEVNULL
    )  # warm
    settle(cluster)
    dump_file = BENCH / f"{name}.dump"
    runs["pg_dump"] = measure(
        "pg_dump -Fc -f FILE",
        ["pg_dump", "-Fc", "-f", str(dump_file), "--dbname", url],
        env,
        output=dump_file,
    )
    policy = {
        "name": name.replace("_", "-"),
        "objectives": {"rpo": "24h", "rto": "1h"},
        "encryption": {"recipients": [keys.recipient], "identity": f"file:{keys.identity_file}"},
        "sources": [
            {"name": "db", "type": "postgres", "url": url, "password": "env:BENCH_DB_PASSWORD"}
        ],
        "targets": [{"name": "local", "type": "local", "path": str(BENCH / "backups")}],
    }
    (BENCH / "policies").mkdir(exist_ok=True)
    (BENCH / "policies" / f"{policy['name']}.yaml").write_text(yaml.safe_dump(policy))
    snapshots = BENCH / "backups" / str(policy["name"])

    def raw() -> Measure:
        settle(cluster)
        return measure("pg_dump -Fc -Z0 > /dev/null", ["pg_dump", "-Fc", "-Z0", "--dbname", url], env)

    def backup() -> Measure:
        settle(cluster)
        shutil.rmtree(snapshots, ignore_errors=True)  # the output size is this snapshot's
        return measure(
            "backupctl backup (local target)",
            [sys.executable, "-m", "backupctl", "-q", "backup", str(policy["name"])],
            env,
            output=snapshots,
        )

    runs["raw"], runs["backup"] = alternate(raw, backup)
    cluster.create_database(f"{name}_r1")
    settle(cluster)
    runs["pg_restore"] = measure(
        "pg_restore -d DB FILE",
        [
            "pg_restore",
            "--exit-on-error",
            "-d",
            cluster.url(f"{name}_r1", "postgres"),
            str(dump_file),
        ],
        env,
    )
    jobs = default_jobs()
    restore_argv = [
        sys.executable, "-m", "backupctl", "-q", "restore", str(policy["name"]), "latest",
        "--source", "db", "--db-password", "env:BENCH_DB_PASSWORD", "--to-db",
    ]  # fmt: skip

    def into_fresh(database: str, run: Callable[[str], Measure]) -> Measure:
        cluster.drop_database(database)
        cluster.create_database(database)
        settle(cluster)
        return run(cluster.url(database, "postgres"))

    def pg_restore_jobs() -> Measure:
        return into_fresh(f"{name}_r3", lambda into: measure(
            f"pg_restore --jobs {jobs} -d DB FILE (by hand)",
            ["pg_restore", "--exit-on-error", f"--jobs={jobs}", "-d", into, str(dump_file)],
            env,
        ))  # fmt: skip

    def restore() -> Measure:
        return into_fresh(f"{name}_r2", lambda into: measure(
            f"backupctl restore --to-db (default: --jobs auto = {jobs})", [*restore_argv, into], env
        ))  # fmt: skip

    runs["pg_restore_jobs"], runs["restore"] = alternate(pg_restore_jobs, restore)
    # What an operator restoring backupctl's artifact by hand runs: decrypt and decompress
    # it to a file first (pg_restore --jobs seeks), then restore it in parallel.
    artifact = max(snapshots.glob("*/db.pgdump.zst.age"))
    spooled = BENCH / f"{name}.by-hand.dump"
    runs["artifact_jobs"] = into_fresh(f"{name}_r5", lambda into: measure(
        f"age -d, zstd -d > FILE, pg_restore --jobs {jobs} FILE (by hand)",
        ["bash", "-o", "pipefail", "-c",
         f"age -d -i {keys.identity_file} {artifact} | zstd -d -q > {spooled} && "
         f"pg_restore --exit-on-error --jobs={jobs} -d {into} {spooled}"],
        env,
    ))  # fmt: skip
    spooled.unlink()
    runs["restore_serial"] = into_fresh(f"{name}_r4", lambda into: measure(
        "backupctl restore --to-db --jobs 1", [*restore_argv, into, "--jobs", "1"], env
    ))  # fmt: skip
    for suffix in ("_r1", "_r2", "_r3", "_r4", "_r5"):
        cluster.drop_database(name + suffix)
    dump_file.unlink()
    return runs


def main() -> None:
    sizes = os.environ.get("BENCH_SIZES", "256MiB,1GiB").split(",")
    BENCH.mkdir(exist_ok=True)
    shutil.rmtree(BENCH / "backups", ignore_errors=True)  # output sizes count this run's snapshots only
    cluster_dir = Path(f"/tmp/backupctl-bench-pg-{os.getpid()}")  # concurrent runs on one machine
    shutil.rmtree(cluster_dir, ignore_errors=True)
    cluster_dir.mkdir(mode=0o755)
    keys = generate_keys(BENCH / "state" / "keys")
    print(
        f"machine: {os.cpu_count()} CPUs; {shutil.which('pg_dump')}; "
        f"{subprocess.run(['pg_dump', '--version'], capture_output=True, text=True).stdout.strip()}"
    )
    results: dict[str, dict[str, Measure]] = {}
    with LocalPostgres(cluster_dir) as cluster:
        env = {
            **os.environ,
            "PGPASSWORD": cluster.password,
            "BENCH_DB_PASSWORD": cluster.password,
            "NO_COLOR": "1",
            "BACKUPCTL_STATE_DIR": str(BENCH / "state"),
            "BACKUPCTL_POLICIES": str(BENCH / "policies"),
        }
        for size in sizes:
            results[size] = bench_size(cluster, size, env, keys)
    report(results)
    shutil.rmtree(cluster_dir, ignore_errors=True)


def report(results: dict[str, dict[str, Measure]]) -> None:
    print("\n| size | step | wall s | output MiB | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for size, runs in results.items():
        for measure_ in runs.values():
            print(
                f"| {size} | {measure_.label} | {measure_.seconds:.1f} | "
                f"{measure_.output_bytes / 2**20:.1f} | {measure_.peak_rss_kib / 1024:.1f} |"
            )
    print("\nRatios (target in brackets):")
    for size, runs in results.items():
        backup, dump, raw = runs["backup"].seconds, runs["pg_dump"].seconds, runs["raw"].seconds
        restore, pg_restore = runs["restore"].seconds, runs["pg_restore"].seconds
        by_hand_jobs, serial = runs["pg_restore_jobs"].seconds, runs["restore_serial"].seconds
        from_artifact = runs["artifact_jobs"].seconds
        print(
            f"  {size}: backup / pg_dump -Fc = {backup / dump:.2f} [<= 1.0]; "
            f"backup / raw dump = {backup / raw:.2f} [<= 1.1]; "
            f"restore / pg_restore = {restore / pg_restore:.2f} [<= 0.85]; "
            f"restore / pg_restore --jobs by hand = {restore / by_hand_jobs:.2f} [<= 1.0]; "
            f"restore / (age -d, zstd -d > FILE, pg_restore --jobs) by hand = {restore / from_artifact:.2f} "
            "[<= 1.0]; "
            f"restore --jobs 1 / pg_restore = {serial / pg_restore:.2f} [<= 1.2]; "
            f"backup peak RSS = {runs['backup'].peak_rss_kib / 1024:.0f} MiB [<= 100, flat]"
        )
    print(f"(benchmark driver max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
