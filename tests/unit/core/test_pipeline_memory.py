"""The compressing pipeline's memory stays small and flat: zstd's workers compress 512 KiB jobs
(core/pipeline.py, ZSTD_JOB_BYTES), a backup's peak RSS target is 100 MiB (issue #17)."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from pyrage import x25519

from backupctl.core.pipeline import decrypt_stream, encrypt_stream

# Run in a fresh interpreter: the test process's allocator may already hold freed memory that
# zstd would reuse, hiding what the stream itself needs. The source is unthrottled (never the
# bottleneck), which is when zstd keeps the most jobs in flight.
_PROBE = r"""
import io, os, sys, threading, time
from pyrage import x25519
from backupctl.core.pipeline import encrypt_stream

class Source(io.RawIOBase):
    # 96 MiB: the sample file over and over, read as fast as asked (a file, not this heap)
    def __init__(self, path):
        self.file, self.left = open(path, "rb", buffering=0), 96 << 20
    def readable(self):
        return True
    def read(self, size=-1):
        size = min(size if size > 0 else 1 << 20, self.left)
        block = self.file.read(size)
        if not block:
            self.file.seek(0)
            block = self.file.read(size)
        self.left -= len(block)
        return block

def anon():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("RssAnon"))

peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
recipient = x25519.Identity.generate().to_public()
encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), [recipient], threads=2)  # imports, first buffers
base = anon()
threading.Thread(target=sample, daemon=True).start()
with open(os.devnull, "wb") as sink:
    encrypt_stream(Source(sys.argv[1]), sink, [recipient], threads=2)
done.set()
print((peak[0] - base) // 1024)
"""


def _sample(path: Path) -> Path:
    """8 MiB of dump-like rows (COPY text), compressing ~3:1 at level 1 like the shop's dump."""
    rows = random.Random(17)
    with path.open("wb") as out:
        while out.tell() < 8 << 20:
            out.write(b"".join(
                b"%d\t%d\t2026-%02d-%02d\t%d.%02d\t%s\n" % (
                    rows.randrange(10**7), rows.randrange(10**5), rows.randrange(1, 13),
                    rows.randrange(1, 29), rows.randrange(1000), rows.randrange(100),
                    rows.choice([b"shipped", b"paid", b"new"]),
                )
                for _ in range(10000)
            ))  # fmt: skip
    return path


def test_two_workers_keep_the_stream_within_a_few_mib(tmp_path: Path) -> None:
    sample = str(_sample(tmp_path / "rows.copy"))
    done = subprocess.run([sys.executable, "-c", _PROBE, sample], capture_output=True, text=True, check=True)
    growth_mib = int(done.stdout.strip())
    # 4 MiB measured with 512 KiB jobs; zstd's default jobs took 13-14 MiB here.
    assert growth_mib <= 8, f"the stream took {growth_mib} MiB beyond its start"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_round_trip_with_any_worker_count(threads: int) -> None:
    identity = x25519.Identity.generate()
    data = os.urandom(1 << 20) + b"abc" * (3 << 20)
    stored = io.BytesIO()
    encrypt_stream(io.BytesIO(data), stored, [identity.to_public()], threads=threads)
    plain = io.BytesIO()
    stats = decrypt_stream(io.BytesIO(stored.getvalue()), plain, [identity])
    assert plain.getvalue() == data and stats.plain_bytes == len(data)
