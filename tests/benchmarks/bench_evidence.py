#!/usr/bin/env python3
"""Evidence at scale (issue #14): `evidence export` and `evidence verify` over a year-long catalog.

The catalog is the catalog benchmark's (tests/benchmarks/bench_catalog.py: 100k snapshots over
50 policies, with copies, artifacts, failed/partial attempts and verifications; override the size
with BENCH_EVIDENCE_SNAPSHOTS) spread over one year instead of three, plus one passed drill per
policy per month; its run ledger is then built the way migration 0004 builds it for an existing
catalog (`backfill`: one hash-chained record per snapshot, copy, verification and drill).
Populating is not measured.

Measured, for the real CLI as a subprocess: the wall time, the CPU time (with its forked
children), the peak RSS (ru_maxrss of the child, from wait4: the largest single process) and the
peak PSS of all its processes together (sampled) of `evidence export --quarter Q --out Q.tar`
(all 50 policies, the last full quarter), of `evidence verify Q.tar` (signature, every file, the
ledger segment, the catalog audit) and of `report --month`. Target (issue #14): export < 10 s
and < 200 MB, the memory of all its processes together (the peak PSS: a cgroup's `MemoryMax`
counts the tree). Measured, never asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from backupctl.catalog.ledger import backfill  # noqa: E402
from backupctl.catalog.models import DrillRow  # noqa: E402
from backupctl.catalog.store import Catalog  # noqa: E402
from backupctl.core.crypto import generate_keys  # noqa: E402
from tests.benchmarks import bench_catalog  # noqa: E402

TARGET_SECONDS, TARGET_MB = 10.0, 200.0


def last_full_quarter(now: datetime) -> str:
    quarter = (now.month - 1) // 3  # the current quarter's index 0..3; the last full one before it
    return f"{now.year - 1}Q4" if quarter == 0 else f"{now.year}Q{quarter}"


def populate(url: str, total: int, now: datetime) -> tuple[float, int]:
    """The catalog benchmark's rows over one year, drills, then the ledger. (seconds, records)."""
    started = time.perf_counter()
    bench_catalog.YEARS = 1
    bench_catalog.populate(url, total, now)
    catalog = Catalog.open(url)
    drills = []
    for index in range(bench_catalog.POLICIES):
        for month in range(12):
            finished = now - timedelta(days=30 * month + index % 28, hours=3)
            drills.append(
                dict(
                    id=f"drill-{index:02d}-{month:02d}",
                    policy=f"app-{index:02d}",
                    drill="default",
                    snapshot_id=None,
                    target="nas",
                    runtime="docker",
                    started_at=finished - timedelta(minutes=4),
                    finished_at=finished,
                    ok=True,
                    reason=None,
                    rto_seconds=240.0,
                    rto_objective_seconds=3600.0,
                    rpo_seconds=None,
                    rpo_objective_seconds=None,
                    stages=[],
                    checks=[{"name": "row-counts", "ok": True}],
                    report_paths={},
                )
            )
    with catalog.engine.begin() as connection:
        connection.execute(insert(DrillRow), drills)
        records = backfill(connection)
    catalog.engine.dispose()
    return time.perf_counter() - started, records


def populate_elsewhere(url: str, total: int, now: datetime) -> tuple[float, int]:
    """`populate` in a child process. Populating in this process grew it to ~580 MB, and a child
    forked from it reported that as its own peak RSS (Linux carries the high-water mark across
    fork): every command measured ~580 MB whatever it used."""
    argv = [sys.executable, __file__, "--populate", url, str(total), now.isoformat()]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    seconds, records = done.stdout.split()
    return float(seconds), int(records)


def tree_pss_mb(pid: int) -> float:
    """The proportional set size (PSS: shared pages split between their sharers) of `pid` and
    its descendants, in MB: what a forking command costs the machine at one moment (ru_maxrss
    is the largest single process only)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                total += sum(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending += [int(child) for child in children.read().split()]
        except (OSError, ValueError):
            continue  # ended meanwhile
    return total / 1024


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MB, peak PSS of the process tree in MB, stdout) of
    one CLI run. CPU is user + system of the command and its children (evidence export forks
    two); peak RSS is ru_maxrss from wait4 (the largest one process reached); the tree's PSS is
    sampled every 20 ms."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        peak, stop = [0.0], threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], tree_pss_mb(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed ({code}): {err.read().decode()[-2000:]}")
        cpu = usage.ru_utime + usage.ru_stime
        return wall, cpu, usage.ru_maxrss / 1024, peak[0], out.read().decode()


def _line(label: str, wall: float, cpu: float, rss: float, pss: float) -> str:
    return (
        f"{label}: {wall:.2f}s wall, {cpu:.2f}s CPU, {rss:.0f} MB peak RSS "
        f"(all its processes together: {pss:.0f} MB peak PSS)"
    )


def main() -> None:
    total = int(os.environ.get("BENCH_EVIDENCE_SNAPSHOTS", "100000"))  # smaller to iterate
    work = Path(tempfile.mkdtemp(prefix="backupctl-bench-evidence-"))
    try:
        keys = generate_keys(work / "keys")
        bench_catalog.write_policies(work / "policies", work / "backups", keys.recipient)
        url = f"sqlite:///{work}/catalog.sqlite"
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "BACKUPCTL_STATE_DIR": str(work / "state"),
            "BACKUPCTL_KEYS_DIR": str(work / "keys"),
            "BACKUPCTL_CATALOG": url,
            "BACKUPCTL_POLICIES": str(work / "policies"),
        }
        # The bytecode an install leaves (pip compiles site-packages, `make install` backupctl):
        # a PYTHONPYCACHEPREFIX here made every module the export imports beyond `--help`
        # compile from source inside the measured run (~2 s of 9-10 s on this VM).
        env.pop("PYTHONPYCACHEPREFIX", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        now = datetime.now(UTC)
        seconds, records = populate_elsewhere(url, total, now)
        print(
            f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}"
        )
        print(
            f"catalog: {total:,} snapshots, 50 policies, one year, {records:,} ledger records "
            f"(populated in {seconds:.1f}s)"
        )
        argv = bench_catalog.backupctl_argv()
        bench_catalog.run_cli([*argv, "--help"], env)  # warm the bytecode cache
        # and WeasyPrint's (imported by the export only): compiling it is not the export's cost
        subprocess.run([sys.executable, "-c", "import weasyprint"], env=env, check=True)
        quarter = last_full_quarter(now)
        out = work / f"{quarter}.tar"
        wall, cpu, rss, pss, _ = run_measured(
            [*argv, "evidence", "export", "--quarter", quarter, "--out", str(out)], env
        )
        print(
            _line(f"evidence export --quarter {quarter}", wall, cpu, rss, pss)
            + f", bundle {out.stat().st_size / 2**20:.1f} MiB "
            f"(target < {TARGET_SECONDS:.0f}s, < {TARGET_MB:.0f} MB for all its processes, which a "
            f"cgroup limit counts: {'met' if wall < TARGET_SECONDS and pss < TARGET_MB else 'NOT met'})"
        )
        wall, cpu, rss, pss, _ = run_measured([*argv, "evidence", "verify", str(out)], env)
        print(_line("evidence verify", wall, cpu, rss, pss))
        month = f"{now:%Y-%m}"
        wall, cpu, rss, pss, _ = run_measured([*argv, "report", "--month", month, "--json"], env)
        print(_line(f"report --month {month} --json", wall, cpu, rss, pss))
        print(f"load after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--populate"]:
        seconds, records = populate(sys.argv[2], int(sys.argv[3]), datetime.fromisoformat(sys.argv[4]))
        print(f"{seconds} {records}")
    else:
        main()
