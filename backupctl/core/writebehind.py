"""Write-behind: start the kernel's writeback of a file while it grows, so the fsync that makes
it durable finds little left to write.

Kept apart from core.durable, which the archive_command fast path imports and which must load
nothing beyond the standard library's core (tests/unit/cli/test_fastpath.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


# Writeback is started each time this many more bytes of a file reached the kernel.
WRITE_BEHIND_BYTES = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait


class WriteBehind:
    """Starts the kernel's writeback of a file while it is being written, every
    `WRITE_BEHIND_BYTES` (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, as PostgreSQL's
    `*_flush_after` settings do), so that the fsync which makes the file durable finds little
    left to write: the fsync before the rename of a 1 GiB backup's artifact took 0.20-0.23 s
    without it, 0.016-0.026 s with it on this project's VM (docs/benchmarks.md, session 11).
    Durability still comes from that fsync alone; where the call is missing or refused (not
    Linux, a file system that does not support it) this does nothing from then on.

    `wrote(total)` after each write, `total` being the bytes written so far (some of them
    perhaps still in a Python buffer: only what the kernel holds, up to the descriptor's
    offset, is handed to it).
    """

    def __init__(
        self,
        fd: int,
        step: int = WRITE_BEHIND_BYTES,
        start: Callable[[int, int, int], bool] | None = None,
    ) -> None:
        self._fd = fd
        self._step = step
        self._start = start or _start_writeback
        self._checked = 0  # `total` when the kernel's offset was last looked at
        self._handed = 0  # bytes from the file's start already handed to the kernel's writeback
        self._enabled = True

    def wrote(self, total: int) -> None:
        if not self._enabled or total - self._checked < self._step:
            return
        self._checked = total
        try:
            offset = os.lseek(self._fd, 0, os.SEEK_CUR)
        except OSError:
            self._enabled = False
            return
        if offset > self._handed:
            self._enabled = self._start(self._fd, self._handed, offset - self._handed)
            self._handed = offset


_sync_file_range: Callable[[int, int, int, int], int] | None = None


def _start_writeback(fd: int, offset: int, size: int) -> bool:
    """sync_file_range(fd, offset, size, SYNC_FILE_RANGE_WRITE); False when unavailable or
    refused (the caller stops asking). ctypes is loaded on the first call only, by the writers
    that need it."""
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes
        import sys

        if not sys.platform.startswith("linux"):
            return False
        try:
            function = ctypes.CDLL(None, use_errno=True).sync_file_range
        except (OSError, AttributeError):
            return False
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
        _sync_file_range = function
    return _sync_file_range(fd, offset, size, _SYNC_FILE_RANGE_WRITE) == 0
