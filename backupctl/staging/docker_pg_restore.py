"""pg_restore inside a staging container, for the overlapped parallel restore (sources/pg_overlap.py).

Each pg_restore is a `docker exec` of the docker CLI, as the MariaDB loader's clients are
(staging/mariadb_load.py): several run at once, each fed on its own stdin pipe. The password
reaches pg_restore through the CLI's environment (`-e PGPASSWORD` names the variable only), never
argv. The TOC and list files live in a private directory of the container's writable layer
(mode 0700; nothing of it outlives the drill), removed by `cleanup`.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import subprocess
from collections.abc import Callable

from backupctl.core import runner
from backupctl.sources.pg_overlap import Phase

log = logging.getLogger("backupctl.staging.docker")

WORK_PARENT = "/var/tmp"


class DockerPgRestoreSite:
    """`pg_restore ARGV...` in `container`; `run` executes a command there (stdin given) and
    raises when it fails."""

    def __init__(
        self,
        container: str,
        argv: list[str],
        env: dict[str, str],
        run: Callable[[list[str], bytes | None, str], None],
    ) -> None:
        self._container = container
        self._argv = argv
        self._env = env
        self._run = run
        self._dir = f"{WORK_PARENT}/backupctl-restore-{secrets.token_hex(4)}"
        self._made = False
        self._lists = 0
        self._post_data: subprocess.Popen[bytes] | None = None

    def put_toc(self, head: bytes) -> str:
        path = f"{self._dir}/toc"
        self._made = True
        script = f"umask 077 && mkdir {shlex.quote(self._dir)} && exec cat > {shlex.quote(path)}"
        self._run(["sh", "-c", script], head, "writing the dump's table of contents")
        return path

    def start(
        self, phase: Phase, args: list[str], listing: list[int] | None, feed: bool
    ) -> subprocess.Popen[bytes]:
        command = [*self._argv, *args]
        if listing is not None or phase == "post-data":
            run, prepare = shlex.join(command), ""
            if listing is not None:
                self._lists += 1
                path = shlex.quote(f"{self._dir}/list-{self._lists}")
                ids = " ".join(str(dump_id) for dump_id in listing)
                prepare, run = f"umask 077 && printf '%s\\n' {ids} > {path} && ", f"{run} --use-list={path}"
            if phase == "post-data":  # the last one: it removes the files itself (one exec less)
                script = f"{prepare}{run}; status=$?; rm -rf {shlex.quote(self._dir)}; exit $status"
            else:
                script = f"{prepare}exec {run}"
            command = ["sh", "-c", script]
        argv = ["docker", "exec", *(["-i"] if feed else []), "-e", "PGPASSWORD", self._container, *command]
        process = runner.start(argv, env=self._env, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL)  # fmt: skip
        if phase == "post-data":
            self._post_data = process
        return process

    def cleanup(self) -> None:
        if self._post_data is not None and self._post_data.poll() == 0:
            self._made = False  # its exec removed them
        if self._made:
            self._made = False
            try:
                self._run(["rm", "-rf", self._dir], None, "removing the restore's files")
            except Exception as error:  # the container goes with the drill: never hide the real outcome
                log.warning("could not remove %s in %s: %s", self._dir, self._container, error)
