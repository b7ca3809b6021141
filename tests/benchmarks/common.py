"""Shared helpers for the benchmarks: measuring a command's wall time and peak RSS."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / ".bench"


@dataclass
class Measure:
    label: str
    seconds: float
    output_bytes: int
    peak_rss_kib: int


def measure(label: str, argv: list[str], env: dict[str, str], *, output: Path | None = None,
            stdin_from: list[str] | None = None) -> Measure:
    """Run `argv` under GNU time: wall seconds and peak RSS of the process tree it waited for.

    (wait4 from this Python process would not do: Linux keeps maxrss across fork+exec.)
    With `stdin_from`, that command's stdout is piped into `argv` (e.g. pg_dump | restic).
    """
    rss_file = BENCH / f"rss-{time.monotonic_ns()}.txt"
    started = time.monotonic()
    producer = None
    stdin = None
    if stdin_from is not None:
        producer = subprocess.Popen(stdin_from, env=env, stdout=subprocess.PIPE)
        stdin = producer.stdout
    done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv], env=env, stdin=stdin,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if producer is not None:
        assert producer.stdout is not None
        producer.stdout.close()
        producer.wait()
    seconds = time.monotonic() - started
    if done.returncode != 0 or (producer is not None and producer.returncode != 0):
        raise SystemExit(f"{label} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    peak_kib = int(rss_file.read_text().split()[-1])
    rss_file.unlink()
    size = 0
    if output is not None and output.exists():
        size = (sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) if output.is_dir()
                else output.stat().st_size)
    line = f"  {label:<48} {seconds:8.1f} s  {size / 2**20:9.1f} MiB  {peak_kib / 1024:7.1f} MiB RSS"
    print(line, flush=True)
    return Measure(label, seconds, size, peak_kib)
