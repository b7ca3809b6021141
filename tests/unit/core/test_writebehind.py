"""core.writebehind.WriteBehind against a real file: what it hands to the kernel's writeback."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

from backupctl.core import writebehind
from backupctl.core.writebehind import WriteBehind

MIB = 1 << 20


def write_through(path: Path, size: int, step: int = writebehind.WRITE_BEHIND_BYTES) -> list[tuple[int, int]]:
    """Write `size` bytes in 1 MiB chunks through a 1 MiB Python buffer (as the local target
    does), telling a WriteBehind after each write; the ranges it handed to the real call."""
    handed: list[tuple[int, int]] = []

    def start(fd: int, offset: int, length: int) -> bool:
        handed.append((offset, length))
        return writebehind._start_writeback(fd, offset, length)

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb", buffering=MIB) as file:
        behind = WriteBehind(fd, step=step, start=start)
        written = 0
        for index in range(size // MIB):
            file.write(bytes([index % 251]) * MIB)
            written += MIB
            behind.wrote(written)
        file.flush()
        os.fsync(fd)
    return handed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_writeback_is_started_in_steps_behind_what_the_kernel_holds(tmp_path: Path) -> None:
    path = tmp_path / "artifact"
    handed = write_through(path, 40 * MIB, step=8 * MIB)
    # Contiguous from the start, each step at least 8 MiB, never past what had reached the kernel
    # (the last MiB may still be in the Python buffer when it is asked).
    assert handed and handed[0][0] == 0
    assert all(
        offset + length == following for (offset, length), (following, _) in itertools.pairwise(handed)
    )
    assert all(length >= 7 * MIB for _, length in handed)
    assert sum(length for _, length in handed) <= 40 * MIB
    assert len(handed) == 40 // 8
    # The file is what was written: the writeback changes nothing but when pages go to disk.
    data = path.read_bytes()
    assert len(data) == 40 * MIB
    assert all(
        data[index * MIB] == index % 251 and data[(index + 1) * MIB - 1] == index % 251 for index in range(40)
    )


def test_a_refused_call_is_not_made_again(tmp_path: Path) -> None:
    calls: list[int] = []

    def refusing(fd: int, offset: int, length: int) -> bool:
        calls.append(offset)
        return False

    fd = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        behind = WriteBehind(fd, step=MIB, start=refusing)
        for index in range(1, 6):
            os.write(fd, b"x" * MIB)
            behind.wrote(index * MIB)
    finally:
        os.close(fd)
    assert calls == [0]


def test_small_files_never_ask(tmp_path: Path) -> None:
    handed = write_through(tmp_path / "manifest", 2 * MIB)
    assert handed == []  # below the default step (8 MiB): no call
