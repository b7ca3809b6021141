"""Durability on POSIX file systems: what makes a rename survive a power cut.

Standard library only: the archive_command fast path (backupctl.cli.fastpath → pitr.spool)
imports it before anything else.
"""

from __future__ import annotations

import os


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory, so that the entries created, renamed or removed in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
