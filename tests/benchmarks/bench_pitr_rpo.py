"""RPO under load (issue #12): `BENCH_PITR_RPO=1 make bench BENCH=pitr`.

A PostgreSQL 15 cluster archives through `backupctl wal push` (archive_command, local target)
with `archive_timeout = 60s`, under a steady pgbench load for BENCH_PITR_RPO_SECONDS (default
300). Every second the benchmark samples the age of the newest archived segment, two ways:
- archive: now - the time the newest segment record was written to the archive (the local
  target's newest `records/*.rec`): what `wal status` reports as the achieved RPO;
- server: now - `pg_stat_archiver.last_archived_time` (archive_command returned 0).
Target: max ≤ 90 s. The load is rate-limited (BENCH_PITR_RPO_TPS, default 20 transactions/s,
4 clients) so that WAL fills segments slowly and archive_timeout, not the load, forces the
switches: the worst case for the RPO (a full-speed pgbench fills a segment in seconds). It is a
latency measure: other work on the machine matters little. Prints the table for
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tests.integration.pitr.conftest import POLICY, SOURCE, make_setup

SECONDS = int(os.environ.get("BENCH_PITR_RPO_SECONDS", "300"))
TPS = int(os.environ.get("BENCH_PITR_RPO_TPS", "20"))
SCALE = int(os.environ.get("BENCH_PITR_SCALE", "10"))
TARGET = 90.0


def _newest_record(records: Path) -> float | None:
    """mtime of the newest segment record (history and backup files excluded), or None."""
    newest = None
    try:
        entries = list(os.scandir(records))
    except FileNotFoundError:
        return None
    for entry in entries:
        if len(entry.name) == 24 + len(".rec") and entry.name.endswith(".rec"):
            mtime = entry.stat().st_mtime
            newest = mtime if newest is None or mtime > newest else newest
    return newest


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="backupctl-bench-rpo-", dir="/tmp"))
    os.chmod(root, 0o755)
    setup = make_setup(root / "setup", settings={"archive_timeout": "60s"})
    setup.cluster.start()
    setup.env["PITR_TEST_PG_PASSWORD"] = setup.cluster.password
    env = {**os.environ, "PGPASSWORD": setup.cluster.password}
    url = setup.cluster.url("postgres")
    pgbench = str(setup.cluster.bindir / "pgbench")
    records = setup.backups / POLICY / "pitr" / SOURCE / "records"
    load: subprocess.Popen[bytes] | None = None
    try:
        print(
            f"\nRPO under load: archive_timeout = 60s, pgbench -R {TPS} (4 clients, scale {SCALE}), "
            f"sampled every second for {SECONDS}s; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        subprocess.run([pgbench, "-i", "-s", str(SCALE), "-q", url], check=True, capture_output=True, env=env)
        setup.switch_and_wait(timeout=120)  # a first archived segment: the ages start from it
        load = subprocess.Popen(
            [pgbench, "-T", str(SECONDS + 30), "-R", str(TPS), "-c", "4", "-j", "2", "-n", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        archive_ages: list[float] = []
        server_ages: list[float] = []
        with psycopg.connect(url, password=setup.cluster.password, autocommit=True) as connection:
            first = connection.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
            assert first is not None
            began = time.monotonic()
            tick = began
            while time.monotonic() - began < SECONDS:
                tick += 1.0
                time.sleep(max(0.0, tick - time.monotonic()))
                now = time.time()
                newest = _newest_record(records)
                if newest is not None:
                    archive_ages.append(now - newest)
                row = connection.execute("SELECT last_archived_time FROM pg_stat_archiver").fetchone()
                if row is not None and row[0] is not None:
                    server_ages.append(now - row[0].timestamp())
            last = connection.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
            assert last is not None
        archived, failed = last[0] - first[0], last[1] - first[1]
        print(f"\n  {'age of the newest archived segment':<40} {'p50':>7} {'p99':>7} {'max':>7} {'mean':>7}")
        for name, ages in (("archive (newest signed record)", archive_ages),
                           ("server (pg_stat_archiver)", server_ages)):  # fmt: skip
            print(
                f"  {name:<40} {_percentile(ages, 0.5):6.1f}s {_percentile(ages, 0.99):6.1f}s "
                f"{max(ages):6.1f}s {statistics.mean(ages):6.1f}s",
                flush=True,
            )
        verdict = "met" if max(archive_ages) <= TARGET else "NOT met"
        print(
            f"  {len(archive_ages)} samples over {SECONDS}s; {archived} segments archived, {failed} failed "
            f"attempts; target max <= {TARGET:.0f}s: {verdict}"
        )
        print(f"  load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"  (measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", flush=True)
    finally:
        if load is not None and load.poll() is None:
            load.terminate()
            load.wait()
        setup.cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
