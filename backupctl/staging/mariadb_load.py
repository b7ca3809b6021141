"""MariaDB restores in staging with the parallel chunk loader (backupctl.sources.mysql_parallel).

A drill restores a mariadb-dump stream the way `backupctl restore` does: structure first, then
the table data in 8 MiB chunks of whole INSERT statements over `jobs` connections, then
triggers, views and routines. The chunks are spooled on this host in a private 0700 directory
(backupctl.core.spool: free space checked first, removed afterwards, also on errors). Without
room for the dump plus the reserve, or with one job, the dump is streamed into one client and
the returned note says why. Each runtime says how to start its own client (`ClientStarter`):
the container's `mariadb` for Docker, the staging cluster's for the local runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from backupctl.core.spool import SpoolPlan, private_directory
from backupctl.sources.mysql_parallel import CLIENT_OPTIONS, ClientStarter, restore_parallel
from backupctl.staging.base import DatabaseRestored

__all__ = ["CLIENT_OPTIONS", "load_dump"]  # the runtimes start their clients with these options


def load_dump(
    stream: BinaryIO,
    jobs: int,
    size_hint: int | None,
    start: ClientStarter | None,
    serial: Callable[[BinaryIO], None],
    label: str,
    why_serial: str = "",
) -> DatabaseRestored:
    """Restore `stream` over `jobs` connections started by `start`, or with `serial(stream)`
    when `jobs` is 1, `start` is None (`why_serial` says why) or the spool has no room.

    `label` starts error messages ("mariadb into db/shop"). Reads `stream` to its end.
    Raises SourceError when a client fails."""
    if jobs <= 1 or start is None:
        serial(stream)
        note = f"restored with one connection: {why_serial}" if jobs > 1 and why_serial else ""
        return DatabaseRestored(1, note)
    plan = SpoolPlan.decide(size_hint)
    if not plan.possible:
        serial(stream)
        return DatabaseRestored(1, f"restored with one connection: {plan.reason}")
    with private_directory(plan.directory) as spool:
        try:
            note = restore_parallel(stream, spool, jobs, start, label)
        finally:
            while stream.read(1 << 20):  # whoever feeds us hashes the whole stream
                pass
    return DatabaseRestored(jobs, note)
