#!/usr/bin/env python3
"""`make bench`: every benchmark, or those named in BENCH (e.g. BENCH=spine,offsite).

Benchmarks compare backupctl with the plain tools in the same run and print ratios; they are
measured, never asserted, and are not part of `make test`.
"""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import (
    bench_binlog,
    bench_catalog,
    bench_drill,
    bench_evidence,
    bench_mysql_restore,
    bench_offsite,
    bench_pitr,
    bench_spine,
)

BENCHMARKS = {
    "spine": bench_spine.main,
    "offsite": bench_offsite.main,
    "drill": bench_drill.main,
    "catalog": bench_catalog.main,
    "mysql": bench_mysql_restore.main,
    "evidence": bench_evidence.main,
    "pitr": bench_pitr.main,
    "binlog": bench_binlog.main,
}

if __name__ == "__main__":
    # Measure backupctl as installed: with bytecode (pip compiles it; an editable checkout with
    # PYTHONDONTWRITEBYTECODE set would recompile every module on every CLI start).
    compileall.compile_dir(str(Path(__file__).resolve().parents[2] / "backupctl"), quiet=1)
    for name in os.environ.get("BENCH", ",".join(BENCHMARKS)).split(","):
        print(f"\n######## benchmark: {name}", flush=True)
        BENCHMARKS[name.strip()]()
