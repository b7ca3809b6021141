"""The backup-time sweep's cost when nothing is pending (the usual case), run by hand:
`.venv/bin/python -m tests.benchmarks.bench_sweep`. A catalog with 2,000 complete snapshots and
200 failed runs already swept, two targets: the sweep is one catalog query and opens no target
(docs/benchmarks.md, "Nothing orphaned")."""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from backupctl.actions.sweep import sweep_failed_runs
from backupctl.catalog.models import CopyRow, SnapshotRow
from backupctl.catalog.store import Catalog


def main() -> None:
    catalog = Catalog.open(f"sqlite:///{Path(tempfile.mkdtemp())}/catalog.db")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with catalog.session() as session:
        for index in range(2200):
            status = "failed" if index % 11 == 0 else "complete"
            at = start + timedelta(hours=index)
            snapshot_id = f"{at.strftime('%Y%m%dT%H%M%SZ')}-{index:06x}"
            session.add(SnapshotRow(id=snapshot_id, policy="app", status=status, started_at=at, host="h",
                                    plain_bytes=0, stored_bytes=0))  # fmt: skip
            for target in ("local", "offsite"):
                copy = "deleted" if status == "failed" else "complete"
                session.add(CopyRow(snapshot_id=snapshot_id, target=target, status=copy, stored_bytes=0,
                                    updated_at=start))  # fmt: skip
    targets = [SimpleNamespace(name="local", type="local"), SimpleNamespace(name="offsite", type="s3")]
    policy = SimpleNamespace(name="app", targets=targets)
    times = []
    for _ in range(20):
        began = time.perf_counter()
        assert sweep_failed_runs(None, policy, pending_only=True, catalog=catalog) == []
        times.append(time.perf_counter() - began)
    print(f"{len(catalog.unfinished_runs('app'))} failed runs, all swept: sweep median "
          f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms (20 runs)")  # fmt: skip


if __name__ == "__main__":
    main()
