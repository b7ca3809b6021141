#!/usr/bin/env python3
"""Catalog at scale (issue #5): `snapshots --json` and `prune --dry-run` on a big SQLite catalog.

For each catalog size (default 1k, 10k and 100k snapshots; override with
BENCH_CATALOG_SIZES=1000,100000) spread over 50 policies:

- a fresh SQLite catalog is created through the store's own migration path (`Catalog.open`)
  and filled with SQLAlchemy Core executemany (populating is not what is measured): every
  snapshot as a real backup records it, with its copies on the policy's 2-3 targets, its two
  artifacts (a postgres dump with per-table row counts, a files archive with the tree facts),
  a few failed/partial/pruned attempts and an occasional verification; times spread over three
  years so that the GFS rules have work;
- 50 valid policy files (local targets in temp dirs, GFS rules, per-target overrides) are
  written to a temp policies directory;
- for one policy: the wall time of the real CLI as a subprocess (`snapshots POLICY --json`,
  `snapshots POLICY`, `prune POLICY --dry-run`, `prune POLICY --dry-run --json`; `--catalog URL
  --policies DIR` given explicitly) and the in-process time of the
  query/planning part alone (`Catalog.open(...).snapshots(...)`, `run_prune(dry_run=True)`).

Every time is the median of BENCH_CATALOG_RUNS (default 3) runs; the CLI's CPU time (user +
system, from wait4) is printed next to its wall time, as it moves less when the machine is busy.
The floor is `backupctl --help`: interpreter start and imports, paid by every command whatever
the catalog. Subprocesses run from a bytecode cache in the work directory, as an installed
package does (PYTHONDONTWRITEBYTECODE would make every run compile every module again).
Numbers are measured, never asserted (beyond checking the commands succeed and agree).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from backupctl.actions.events import LogEvents  # noqa: E402
from backupctl.actions.prune import run_prune  # noqa: E402
from backupctl.catalog.models import Base  # noqa: E402
from backupctl.catalog.store import Catalog  # noqa: E402
from backupctl.cli.contract import versioned  # noqa: E402
from backupctl.core.crypto import generate_keys  # noqa: E402
from backupctl.core.manifest import new_snapshot_id  # noqa: E402
from backupctl.policy.loader import find_policy  # noqa: E402
from backupctl.settings import Settings  # noqa: E402

POLICIES = 50
MEASURED_POLICY = "app-07"  # three targets, two of them with their own retention override
YEARS = 3
TARGET_SECONDS = 1.0
TABLES = [f"public.{name}" for name in (
    "customers", "addresses", "products", "product_images", "categories", "carts", "cart_items",
    "orders", "order_items", "payments", "refunds", "shipments", "coupons", "reviews", "stock",
    "warehouses", "suppliers", "invoices", "audit_log", "sessions",
)]  # fmt: skip
BATCH = 20_000


@dataclass
class Row:
    size: int
    policy_snapshots: int
    command: str
    cli_seconds: float
    cli_cpu_seconds: float
    inprocess_seconds: float | None


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def backupctl_argv() -> list[str]:
    script = Path(sys.executable).parent / "backupctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "backupctl"]


def run_cli(argv: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run the CLI; (stdout, wall seconds, CPU seconds of the process: user + system).

    The CPU time is what the command costs whatever else the machine is doing; the wall time
    is what an operator waits.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            message = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}): {message}")
        return out.read().decode(), wall, usage.ru_utime + usage.ru_stime


def median_cli(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of `runs` runs of the CLI."""
    measured = [run_cli(argv, env)[1:] for _ in range(runs)]
    return statistics.median(m[0] for m in measured), statistics.median(m[1] for m in measured)


# --------------------------------------------------------------------------- policies
def policy_targets(index: int) -> list[str]:
    return ["nas", "usb", "offsite"] if index % 2 else ["nas", "offsite"]


def write_policies(directory: Path, backups: Path, recipient: str) -> None:
    directory.mkdir(parents=True)
    for index in range(POLICIES):
        name = f"app-{index:02d}"
        targets: list[dict[str, Any]] = []
        for target in policy_targets(index):
            path = backups / target
            path.mkdir(parents=True, exist_ok=True)
            entry: dict[str, Any] = {"name": target, "type": "local", "path": str(path)}
            if target == "usb":
                entry["retention"] = {"keep_last": 3, "keep_daily": 3}
            if target == "offsite":
                entry.update(medium="nas", offsite=True)
                entry["retention"] = {"keep_weekly": 8, "keep_monthly": 24, "keep_yearly": 10}
            targets.append(entry)
        policy = {
            "name": name,
            "objectives": {"rpo": "24h", "rto": "1h"},
            "schedule": f"{index % 60} 2 * * *",
            "encryption": {"recipients": [recipient]},
            "sources": [
                {"name": "shop-db", "type": "postgres", "url": f"postgresql://backup@db{index}.internal/shop",
                 "password": "env:BENCH_UNUSED_PASSWORD"},
                {"name": "uploads", "type": "files", "path": f"/srv/{name}/uploads"},
            ],
            "targets": targets,
            "retention": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 5},
        }  # fmt: skip
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))


# --------------------------------------------------------------------------- catalog rows
@dataclass
class Batches:
    snapshots: list[dict[str, Any]]
    copies: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    verifications: list[dict[str, Any]]


def generate_rows(total: int, now: datetime, rng: random.Random) -> Iterator[Batches]:
    """Rows of `total` snapshots, round-robin over the policies, in batches of about BATCH."""
    per_policy = [total // POLICIES + (1 if index < total % POLICIES else 0) for index in range(POLICIES)]
    span = timedelta(days=365 * YEARS).total_seconds()
    batch = Batches([], [], [], [])
    for index, count in enumerate(per_policy):
        name = f"app-{index:02d}"
        targets = policy_targets(index)
        for number in range(count):
            # Evenly spread over the years, newest an hour ago, with a little jitter per run.
            offset = span * (count - 1 - number) / count + rng.uniform(0, min(3600.0, span / count / 4))
            started = now - timedelta(hours=1) - timedelta(seconds=offset)
            add_snapshot(batch, name, targets, started, rng)
            if len(batch.snapshots) >= BATCH:
                yield batch
                batch = Batches([], [], [], [])
    if batch.snapshots:
        yield batch


def _between(rng: random.Random, low: int, high: int) -> int:
    """A random integer in [low, high]; `randint` is slow enough to dominate populating."""
    return low + int(rng.random() * (high - low + 1))


def add_snapshot(
    batch: Batches, policy: str, targets: list[str], started: datetime, rng: random.Random
) -> None:
    snapshot_id = new_snapshot_id(started)
    finished = started + timedelta(seconds=rng.uniform(30, 900))
    roll = rng.random()
    status = (
        "complete" if roll < 0.94 else "partial" if roll < 0.96 else "failed" if roll < 0.98 else "pruned"
    )
    db_plain, files_plain = _between(rng, 2**28, 2**31), _between(rng, 2**26, 2**30)
    db_stored, files_stored = db_plain // 6, files_plain * 9 // 10
    stored = db_stored + files_stored if status != "failed" else 0
    batch.snapshots.append({
        "id": snapshot_id, "policy": policy, "status": status, "started_at": started,
        "finished_at": finished, "host": "backup-01.internal", "pid": _between(rng, 1000, 99999),
        "policy_sha256": f"{rng.getrandbits(256):064x}",
        "manifest_sha256": None if status == "failed" else f"{rng.getrandbits(256):064x}",
        "plain_bytes": 0 if status == "failed" else db_plain + files_plain, "stored_bytes": stored,
        "error": "pg_dump exited with status 1: connection refused" if status == "failed" else
        "offsite: connection reset by peer" if status == "partial" else None,
    })  # fmt: skip
    for position, target in enumerate(targets):
        copy_status = {"pruned": "deleted", "failed": "failed"}.get(status, "complete")
        if status == "partial":
            copy_status = "failed" if position == len(targets) - 1 else "complete"
        batch.copies.append({
            "snapshot_id": snapshot_id, "target": target, "status": copy_status,
            "stored_bytes": stored if copy_status != "failed" else 0,
            "error": "connection reset by peer" if copy_status == "failed" else None,
            "updated_at": finished,
        })  # fmt: skip
    if status == "failed":
        return
    batch.artifacts.append({
        "snapshot_id": snapshot_id, "source": "shop-db", "source_type": "postgres",
        "file": "shop-db.pgdump.zst.age", "format": "pgdump", "plain_bytes": db_plain,
        "stored_bytes": db_stored, "plain_digest": f"sha256:{rng.getrandbits(256):064x}",
        "stored_sha256": f"{rng.getrandbits(256):064x}",
        "facts": {"row_counts": {table: _between(rng, 0, 5_000_000) for table in TABLES}},
    })  # fmt: skip
    batch.artifacts.append({
        "snapshot_id": snapshot_id, "source": "uploads", "source_type": "files",
        "file": "uploads.tar.zst.age", "format": "tar", "plain_bytes": files_plain,
        "stored_bytes": files_stored, "plain_digest": f"sha256:{rng.getrandbits(256):064x}",
        "stored_sha256": f"{rng.getrandbits(256):064x}",
        "facts": {"file_count": _between(rng, 1000, 90000), "symlink_count": _between(rng, 0, 20),
                  "total_bytes": files_plain, "tree_sha256": f"{rng.getrandbits(256):064x}"},
    })  # fmt: skip
    if rng.random() < 0.05:  # the weekly `verify` of one snapshot
        batch.verifications.append({
            "snapshot_id": snapshot_id, "target": targets[0], "ok": True, "problems": [],
            "at": finished + timedelta(hours=rng.uniform(1, 48)),
        })  # fmt: skip


def populate(url: str, total: int, now: datetime) -> float:
    """Create the schema through the store's migrations, then bulk-insert. Returns seconds."""
    started = time.perf_counter()
    catalog = Catalog.open(url)
    tables = Base.metadata.tables
    rng = random.Random(f"catalog-{total}")
    with catalog.engine.begin() as connection:
        for batch in generate_rows(total, now, rng):
            connection.execute(insert(tables["snapshots"]), batch.snapshots)
            connection.execute(insert(tables["snapshot_copies"]), batch.copies)
            connection.execute(insert(tables["artifacts"]), batch.artifacts)
            if batch.verifications:
                connection.execute(insert(tables["verifications"]), batch.verifications)
    catalog.engine.dispose()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- measuring
def measure_size(total: int, work: Path, env: dict[str, str], runs: int, now: datetime) -> list[Row]:
    database = work / f"catalog-{total}.sqlite"
    url = f"sqlite:///{database}"
    seconds = populate(url, total, now)
    print(
        f"\n== {total:,} snapshots over {POLICIES} policies: populated in {seconds:.1f}s "
        f"({database.stat().st_size / 2**20:.0f} MiB)",
        flush=True,
    )
    settings = Settings.resolve(str(work / "policies"), str(work / "state"), url, str(work / "keys"))
    policy = find_policy(MEASURED_POLICY, settings.policies, check_secrets=False).policy
    base = [*backupctl_argv(), "--catalog", url, "--policies", str(work / "policies")]
    # Sanity: the CLI and the in-process calls succeed and agree.
    listing = json.loads(run_cli([*base, "snapshots", MEASURED_POLICY, "--json"], env)[0])
    everything = json.loads(run_cli([*base, "snapshots", MEASURED_POLICY, "--all", "--json"], env)[0])
    views = Catalog.open(url).snapshots(MEASURED_POLICY)
    in_process = versioned([view.as_dict() for view in views], ["snapshots"])
    if in_process != listing:  # compared as the CLI prints them (docs/json.md: RFC 3339, schema)
        raise SystemExit("snapshots --json disagrees with Catalog.snapshots")
    report = run_prune(settings, policy, dry_run=True, events=LogEvents())
    cli_report = json.loads(run_cli([*base, "prune", MEASURED_POLICY, "--dry-run", "--json"], env)[0])
    if cli_report["targets"] != versioned(report.as_dict(), ["prune"])["targets"]:
        raise SystemExit("prune --dry-run --json disagrees with run_prune(dry_run=True)")
    print(f"  {MEASURED_POLICY}: {len(everything)} snapshots, {len(listing)} complete or partial")
    for target in report.targets:
        print(f"  {target.target}: {len(target.kept)} kept, {len(target.removed)} would go")

    def query() -> None:
        catalog = Catalog.open(url)
        catalog.snapshots(MEASURED_POLICY)
        catalog.engine.dispose()

    def plan() -> None:
        run_prune(settings, policy, dry_run=True, events=LogEvents())

    commands: list[tuple[str, list[str], Callable[[], None] | None]] = [
        ("snapshots POLICY --json", ["snapshots", MEASURED_POLICY, "--json"], query),
        ("snapshots POLICY", ["snapshots", MEASURED_POLICY], None),
        ("prune POLICY --dry-run", ["prune", MEASURED_POLICY, "--dry-run"], plan),
        ("prune POLICY --dry-run --json", ["prune", MEASURED_POLICY, "--dry-run", "--json"], None),
    ]
    rows: list[Row] = []
    for label, argv, inprocess in commands:
        wall, cpu = median_cli([*base, *argv], env, runs)
        alone = median_seconds(inprocess, runs) if inprocess is not None else None
        rows.append(Row(total, len(everything), label, wall, cpu, alone))
        shown = f"{alone:6.3f} s in-process" if alone is not None else ""
        print(f"  {label:<32} {wall:6.3f} s CLI wall  {cpu:6.3f} s CLI CPU  {shown}", flush=True)
    database.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return rows


def report(rows: list[Row], floor: tuple[float, float]) -> None:
    smallest = min(row.size for row in rows)
    first = {row.command: row for row in rows if row.size == smallest}
    print(
        f"\nFloor: `backupctl --help` (interpreter start + imports): "
        f"{floor[0]:.3f} s wall, {floor[1]:.3f} s CPU"
    )
    print(
        f"\n| snapshots in catalog | of the policy | command | CLI wall s | CLI CPU s | in-process s "
        f"| growth vs {smallest:,}: CLI wall / in-process | < 1 s |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---|")
    for row in rows:
        base = first[row.command]
        inprocess = f"{row.inprocess_seconds:.3f}" if row.inprocess_seconds is not None else "-"
        growth = f"{row.cli_seconds / base.cli_seconds:.2f}x"
        if row.inprocess_seconds is not None and base.inprocess_seconds:
            growth += f" / {row.inprocess_seconds / base.inprocess_seconds:.1f}x"
        met = "[< 1 s]" if row.cli_seconds < TARGET_SECONDS else "MISSED"
        print(
            f"| {row.size:,} | {row.policy_snapshots:,} | `{row.command}` | {row.cli_seconds:.3f} | "
            f"{row.cli_cpu_seconds:.3f} | {inprocess} | {growth} | {met} |"
        )
    print(
        "\nCLI: the command as a subprocess (median wall and CPU of the runs); in-process: "
        "Catalog.open + Catalog.snapshots, or run_prune(dry_run=True) (catalog query + planning), "
        "in the already-imported benchmark process."
    )


def main() -> None:
    sizes = [int(size) for size in os.environ.get("BENCH_CATALOG_SIZES", "1000,10000,100000").split(",")]
    runs = int(os.environ.get("BENCH_CATALOG_RUNS", "3"))
    work = Path(tempfile.mkdtemp(prefix="backupctl-bench-catalog-"))
    try:
        keys = generate_keys(work / "keys")
        write_policies(work / "policies", work / "backups", keys.recipient)
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "BACKUPCTL_STATE_DIR": str(work / "state"),
            "BACKUPCTL_KEYS_DIR": str(work / "keys"),
        }
        env.pop("BACKUPCTL_CATALOG", None)
        env.pop("BACKUPCTL_POLICIES", None)
        # An installed backupctl runs from compiled bytecode; with PYTHONDONTWRITEBYTECODE every
        # run would compile every module again. Cache it in the work dir, not in the repository.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        run_cli([*backupctl_argv(), "--help"], env)  # warm the bytecode cache
        load = os.getloadavg()[0]
        print(
            f"machine: {os.cpu_count()} CPUs, load {load:.1f}; Python {sys.version.split()[0]}; runs: {runs}"
        )
        floor = median_cli([*backupctl_argv(), "--help"], env, runs)
        now = datetime.now(UTC)
        rows: list[Row] = []
        for total in sizes:
            rows += measure_size(total, work, env, runs, now)
        report(rows, floor)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
