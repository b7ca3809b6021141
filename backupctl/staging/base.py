"""The staging runtime interface.

A drill drives a runtime in this order: `start_databases` (database services up and ready) →
`restore_database` / `install_files` per source → `start_apps` (app services up and ready) →
checks (`sql`, `exec`, `endpoint`) → `down` (always: success, failure, Ctrl-C, SIGTERM).
Everything a runtime creates carries the labels of `labels()` so `drill cleanup` can find
leftovers of killed drills. Runtimes never use the production network: Docker staging lives on
an internal network with no route outside; the local runtime binds to 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from backupctl.drills.schema import Service

LABEL_MANAGED = "backupctl.managed"  # "1" on everything a drill creates
LABEL_DRILL = "backupctl.drill"  # the drill run id


def labels(run_id: str) -> dict[str, str]:
    return {LABEL_MANAGED: "1", LABEL_DRILL: run_id}


@dataclass
class SqlResult:
    rows: list[list[str]]  # text values, as psql -A / mariadb -B print them

    @property
    def scalar(self) -> str | None:
        return self.rows[0][0] if self.rows and self.rows[0] else None


@dataclass
class ExecResult:
    exit_code: int
    output: str


@dataclass
class DatabaseRestored:
    """How `restore_database` restored: the parallel jobs it used and, when it had to use fewer
    than asked (no room to spool the dump), why."""

    jobs: int = 1
    note: str = ""


@dataclass
class StagingInfo:
    """What `--keep` prints: how to reach the services and how to remove everything."""

    runtime: str
    run_id: str
    services: dict[str, str] = field(default_factory=dict)  # name -> how to connect
    remove: str = ""


class StagingRuntime(Protocol):
    name: str  # "docker" or "local"
    run_id: str

    def start_databases(self, services: list[Service]) -> None:
        """Start the postgres/mariadb services and wait until each accepts connections.
        Raises JobFailed naming the service and its last log lines on timeout."""
        ...

    def restore_database(
        self,
        service: Service,
        database: str,
        stream: BinaryIO,
        keep_privileges: bool = False,
        *,
        jobs: int = 1,
        size_hint: int | None = None,
    ) -> DatabaseRestored:
        """Create `database` in the service and restore a plain dump stream (pg_dump custom
        format for postgres, SQL for mariadb) with the service's own tools, so versions match.
        `keep_privileges` (postgres): the dump's roles exist, restore owners and GRANTs too.
        `jobs` > 1: postgres spools the dump where the service's tools can seek in it and runs
        `pg_restore --jobs`, as the fastest hand-run restore does; mariadb loads the table data
        over `jobs` clients (staging/mariadb_load.py); `size_hint` (the dump's plain
        size) is checked against the spool's free space first, and without room the restore
        streams with one job and says why. Reads `stream` to its end. Raises SourceError with
        the tool's stderr on failure."""
        ...

    def install_files(self, service: Service, path: str, tree: Path) -> None:
        """Make the directory `tree` (already restored and checked on this host) appear at
        `path` inside the service (a volume in Docker)."""
        ...

    def start_apps(self, services: list[Service], before_ready: Callable[[], None] | None = None) -> None:
        """Start app services (after restores), call `before_ready` once they run (the drill's
        post-restore steps: endpoints are known then), and wait for their readiness probe."""
        ...

    def sql(self, service: Service, database: str, query: str) -> SqlResult:
        """Run one query in a database service; raises JobFailed with the error text."""
        ...

    def exec(self, service: Service, argv: list[str]) -> ExecResult:
        """Run a command in (Docker) or for (local) a service."""
        ...

    def endpoint(self, service: Service) -> tuple[str, int]:
        """(host, port) at which backupctl reaches the service's port (for http checks)."""
        ...

    def info(self) -> StagingInfo: ...

    def down(self) -> None:
        """Remove everything this run created. Idempotent; never raises for missing parts."""
        ...


def service_values(
    service: Service, host: str, port: int, password: str, bind: str = "0.0.0.0"
) -> dict[str, str]:
    """The `${name.host}`-style placeholders a runtime offers for one service.

    `bind` is the address an app should listen on: all addresses inside a Docker container
    (the network is internal), loopback only in the local runtime.
    """
    return {
        f"{service.name}.host": host,
        f"{service.name}.port": str(port),
        f"{service.name}.password": password,
        f"{service.name}.bind": bind,
    }


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text
