"""A small write load for the binlog tests and benchmark: one INSERT per tick, through one client.

Each row's `placed` is the server's NOW(6) at the INSERT, the same clock as the binlog event's
timestamp, so "rows before T" is a query on `placed`.
"""

from __future__ import annotations

import subprocess
import threading
import time

from backupctl.local_cluster.mariadb import LocalMariaDB
from backupctl.sources.mysql import password_options


class WriteLoad:
    """Insert into `database`.orders every `tick` seconds on a thread until `stop()`."""

    def __init__(
        self, server: LocalMariaDB, database: str, tick: float = 0.05, rows_per_insert: int = 1
    ) -> None:
        self.server, self.database, self.tick, self.rows = server, database, tick, rows_per_insert
        self.inserted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> WriteLoad:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.inserted

    def _run(self) -> None:
        with password_options(self.server.password, isolated=True) as (first, fds):
            argv = [self.server.programs.client, *first, f"--socket={self.server.socket_path}", "--user=root",
                    "--batch", "--unbuffered", self.database]  # fmt: skip
            client = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=fds, text=True
            )
        assert client.stdin is not None
        values = ",".join(["('load')"] * self.rows)
        while not self._stop.is_set():
            client.stdin.write(f"INSERT INTO orders (label) VALUES {values};\n")
            client.stdin.flush()
            self.inserted += self.rows
            time.sleep(self.tick)
        client.stdin.close()
        client.wait()
