"""The local staging runtime: a drill's services as processes on this host, without Docker.

Database services become throwaway clusters (LocalPostgres, LocalMariaDB) on free ports of
127.0.0.1, restored file trees live in a work dir, app services run their `command`. Layout:

  <tmp>/backupctl-drill-<run id>-XXXX/   0755, so the postgres/mysql users can traverse it
    backupctl-drill.json                 marker: labels, owner pid, app pids (for `cleanup`)
    <service>/                           a cluster's directory (its log is quoted on failure),
                                         or an app's, 0700: app.log, files/<slug of the path>/

How it differs from Docker (what drill authors need to know):
- `image` is ignored: the host's PostgreSQL/MariaDB runs (`info()` says so). The superuser is
  `postgres` / `root` with a generated password, `${svc.password}`; `${svc.host}` and
  `${svc.bind}` are 127.0.0.1, `${svc.port}` a free port.
- In Docker a files tree appears at its `files[].path`; here it lives in the work dir, so an env
  value or a command argument equal to such a path is replaced by the local directory.
- `${python}` in an app's `command` is the Python interpreter running backupctl (with its
  packages); Docker images bring their own.
- An app gets its `port` when that is free on 127.0.0.1, else a free one: the app must take its
  port from `${app.port}` (env or command), or the start fails with a ConfigError.
- Apps run with cwd = the drill file's directory (relative paths in `command` resolve against it)
  and, like a container, only their own env plus PATH, HOME, locale and the like: they do not
  inherit backupctl's environment (PGHOST, PGPASSWORD, AWS_* of the backup host).
- `exec` for a database service adds PGHOST/PGPORT/PGUSER/PGPASSWORD (or MYSQL_HOST,
  MYSQL_TCP_PORT, MYSQL_PWD), so `psql -d shop -c ...` reaches staging, never a local server.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

from backupctl.core import runner
from backupctl.core.durations import format_duration
from backupctl.core.secrets import SecretRef, mask
from backupctl.core.spool import restore_with_spool
from backupctl.drills.schema import Service
from backupctl.errors import ConfigError, JobFailed, SourceError
from backupctl.local_cluster.mariadb import LocalMariaDB
from backupctl.local_cluster.postgres import LocalPostgres, free_port, quote_literal
from backupctl.sources.mysql import password_options, quote_identifier
from backupctl.sources.pg_toc import DataOffsets
from backupctl.staging.base import (
    LABEL_DRILL,
    LABEL_MANAGED,
    DatabaseRestored,
    ExecResult,
    SqlResult,
    StagingInfo,
    fill_placeholders,
    labels,
    service_values,
)
from backupctl.staging.mariadb_load import CLIENT_OPTIONS, load_dump
from backupctl.staging.origin import http_ready

log = logging.getLogger("backupctl.staging.local")

HOST = "127.0.0.1"
MARKER = "backupctl-drill.json"
PREFIX = "backupctl-drill-"
_KEPT_ENV = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM"}
_UNFILLED = re.compile(r"\$\{[a-z0-9][a-z0-9_-]*\.(?:host|port|password|bind)\}")
_CHUNK = 1 << 20
_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
_TIMEOUT = 3600.0  # one sql/exec call; the drill's own timeout normally ends things first

Cluster: TypeAlias = LocalPostgres | LocalMariaDB


class LocalRuntime:
    """Staging on this host (see the module docstring).

    `base_dir`: the drill file's directory. `work_dir`: a directory this runtime owns (created;
    removed by `down()`); default a new temp dir, the only kind `cleanup()` searches.
    """

    name = "local"

    def __init__(self, run_id: str, *, base_dir: Path, work_dir: Path | None = None) -> None:
        self.run_id = run_id
        self.base_dir = Path(base_dir).absolute()
        if work_dir is None:
            work_dir = Path(tempfile.mkdtemp(prefix=PREFIX + re.sub(r"[^\w.-]", "-", run_id)[:40] + "-"))
        self.work_dir = Path(work_dir).absolute()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o755)  # mkdtemp makes 0700: the postgres user must get through
        self._services: dict[str, Service] = {}
        self._clusters: dict[str, Cluster] = {}
        self._apps: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}
        self._files: dict[str, dict[str, Path]] = {}  # service -> {path in the service: local dir}
        self._last_probe = ""  # what the last readiness probe said (for the timeout message)
        self._resolved: dict[str, str] = {}  # secret ref -> value: a cmd: ref runs once
        self._write_marker()

    # ------------------------------------------------------------------ databases
    def start_databases(self, services: list[Service]) -> None:
        """Start a cluster per postgres/mariadb service; ready once it answers a query.

        Raises JobFailed naming the service, with its log tail; ConfigError when the server
        programs are not installed."""
        for service in (s for s in services if s.kind != "app"):
            directory = self.work_dir / service.name
            cluster = LocalPostgres(directory) if service.kind == "postgres" else LocalMariaDB(directory)
            self._services[service.name], self._clusters[service.name] = service, cluster
            deadline = time.monotonic() + service.ready.timeout.total_seconds()
            try:
                cluster.start()  # waits itself until the server accepts connections (up to 60 s)
            except JobFailed as error:
                raise JobFailed(f"database service {service.name} did not start: {error}") from None
            while True:
                try:
                    self.sql(service, "postgres" if service.kind == "postgres" else "mysql", "SELECT 1")
                    break
                except JobFailed as error:
                    if time.monotonic() >= deadline:
                        waited = format_duration(service.ready.timeout)
                        raise JobFailed(f"database service {service.name} did not answer within {waited}: "
                                        f"{error} | log: {_tail(cluster.log_file)}") from None  # fmt: skip
                    time.sleep(0.2)

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
        """Create `database` unless it exists and restore `stream` into it with the cluster's own
        pg_restore / mariadb client, reading the stream to its end in 1 MiB chunks.

        Unless the dump's roles were recreated (`keep_privileges`), pg_restore skips owners and
        privileges: they would name roles staging does not have. With `jobs` > 1, PostgreSQL
        dumps are spooled to a private file first and restored with `pg_restore --jobs`
        (backupctl.core.spool), MariaDB dumps loaded over `jobs` clients
        (staging/mariadb_load.py). Raises SourceError with the tool's stderr tail."""
        cluster = self._cluster(service)
        if isinstance(cluster, LocalPostgres):
            exists = cluster.psql(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(database)}")
            if not exists.strip():
                cluster.create_database(database)
            skip = [] if keep_privileges else ["--no-owner", "--no-privileges"]
            argv = [str(cluster.bindir / "pg_restore"), "--exit-on-error", *skip,
                    f"--dbname={cluster.url(database)}"]  # fmt: skip
            env = {"PGPASSWORD": cluster.password}
            notes: list[str] = []
            used = restore_with_spool(
                stream, jobs, size_hint,
                serial=lambda plain: self._feed(service, argv, env, plain, []),
                parallel=lambda path, count: self._feed(service, [*argv, f"--jobs={count}", str(path)], env,
                                                        io.BytesIO(), []),
                notes=notes,
                patch=DataOffsets(),  # the tables' data positions for the spool's TOC
            )  # fmt: skip
            return DatabaseRestored(used, "; ".join(notes))
        create = f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)} CHARACTER SET utf8mb4;"
        self._mariadb(cluster, None, create)
        mariadb = cluster

        def client_argv(first: list[str]) -> list[str]:
            return [mariadb.programs.client, *first, f"--socket={mariadb.socket_path}", "--user=root",
                    *CLIENT_OPTIONS, f"--database={database}"]  # fmt: skip

        def serial(plain: BinaryIO) -> None:
            with password_options(mariadb.password, isolated=True) as (first, fds):
                self._feed(service, client_argv(first), None, plain, fds)

        def start() -> subprocess.Popen[bytes]:  # one more client for the parallel loader
            with password_options(mariadb.password, isolated=True) as (first, fds):
                return runner.start(client_argv(first), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    pass_fds=fds)  # fmt: skip

        return load_dump(stream, jobs, size_hint, start, serial, f"mariadb into {service.name}/{database}")

    @staticmethod
    def _feed(service: Service, argv: list[str], env: dict[str, str] | None, stream: BinaryIO,
              fds: list[int]) -> None:  # fmt: skip
        # stderr goes to an unlinked temp file: no drain thread, and only its tail is read back.
        with tempfile.TemporaryFile() as errors:
            process = runner.start(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=errors, pass_fds=fds)  # fmt: skip
            assert process.stdin is not None
            writing = True
            try:
                while chunk := stream.read(_CHUNK):
                    if writing:
                        try:
                            process.stdin.write(chunk)
                        except BrokenPipeError:
                            writing = False  # the tool gave up (its status says why): read on anyway
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
                status = process.wait()
            except BaseException:
                runner.stop(process)
                raise
            if status != 0:
                errors.seek(max(0, errors.seek(0, os.SEEK_END) - 65536))
                raise SourceError(f"restore into service {service.name}: {Path(argv[0]).name} exited with "
                                  f"status {status}: {mask(runner.last_lines(errors.read()))}")  # fmt: skip

    def sql(self, service: Service, database: str, query: str) -> SqlResult:
        """Run `query` over TCP as the superuser; rows of text values. Raises JobFailed."""
        cluster = self._cluster(service)
        if isinstance(cluster, LocalPostgres):
            argv = [str(cluster.bindir / "psql"), "-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                    "-h", HOST, "-p", str(cluster.port), "-U", cluster.superuser, "-d", database]  # fmt: skip
            env = {"PGPASSWORD": cluster.password}
            done = runner.run(argv, env=env, input_text=query, check=False, timeout=_TIMEOUT)
        else:
            done = self._mariadb(cluster, database, query, check=False)
        if done.returncode != 0:
            raise JobFailed(f"SQL in {service.name}/{database}: {mask(runner.last_lines(done.stderr))}")
        return SqlResult([line.split("\t") for line in done.stdout.splitlines()])

    @staticmethod
    def _mariadb(
        cluster: LocalMariaDB, database: str | None, sql: str, check: bool = True
    ) -> runner.Completed:
        # The password travels in an option file on an inherited pipe, never on argv.
        with password_options(cluster.password, isolated=True) as (first, fds):
            options = ["--user=root", "--batch", "--skip-column-names", "--default-character-set=utf8mb4"]
            argv = [cluster.programs.client, *first, f"--host={HOST}", f"--port={cluster.port}", *options]
            argv += [f"--database={database}"] if database else []
            return runner.run(argv, input_text=sql, check=check, timeout=_TIMEOUT, pass_fds=fds)

    # ------------------------------------------------------------------ files and apps
    def install_files(self, service: Service, path: str, tree: Path) -> None:
        """Move `tree` to <work dir>/<service>/files/<slug of path> (a rename on one file system,
        leaving an empty directory at `tree` for the caller's cleanup), or copy it."""
        slug = re.sub(r"[^\w.-]+", "-", path.strip("/")) or "root"
        target = self._service_dir(service) / "files" / slug
        while target.exists():  # "/a-b" and "/a/b" share a slug
            target = target.with_name(target.name + "_")
        target.parent.mkdir(exist_ok=True)
        try:
            os.rename(tree, target)
            tree.mkdir()
        except OSError:
            shutil.copytree(tree, target, symlinks=True)
        self._files.setdefault(service.name, {})[path.rstrip("/") or "/"] = target

    def start_apps(self, services: list[Service], before_ready: Callable[[], None] | None = None) -> None:
        """Start each app's `command` in a process group of its own (output to its app.log) and
        wait until `ready.http` answers 2xx (without it: until its port accepts connections).

        Raises ConfigError before starting anything (no command; port taken and not read from
        `${app.port}`), JobFailed with the app log's tail when an app exits or is not ready."""
        apps = [service for service in services if service.kind == "app"]
        ports: dict[str, int] = {}
        for service in apps:
            if not service.command:
                raise ConfigError(f"app service {service.name}: the local runtime needs its `command` "
                                  "(only Docker can fall back to the image's CMD)")  # fmt: skip
            if any(re.search(r"\$\{[^}]*\.password\}", arg) for arg in service.command):
                raise ConfigError(f"app service {service.name}: a password in `command` would be visible "
                                  "to every local user (ps): pass it in `env`")  # fmt: skip
            wanted, token = service.port, "${" + service.name + ".port}"
            if wanted and wanted not in ports.values() and _port_free(wanted):
                ports[service.name] = wanted
                continue
            ports[service.name] = free_port(HOST)
            if wanted and not any(token in text for text in [*service.env.values(), *service.command]):
                raise ConfigError(f"port {wanted} of app service {service.name} is taken on {HOST}: "
                                  f"let the app read its port from {token} (env or command)")  # fmt: skip
        for service in apps:  # every port is known before any env is filled: apps may call each other
            self._services[service.name], self._ports[service.name] = service, ports[service.name]
        for service in apps:
            self._start_app(service)
        if before_ready is not None:  # the drill's post-restore steps
            before_ready()
        for service in apps:
            self._await_app(service)

    def _start_app(self, service: Service) -> None:
        env, values = self._env(service), self._values()
        command = [self._local_path(service, self._fill(service, "command", arg, values))
                   for arg in service.command or []]  # fmt: skip
        log_path = self._service_dir(service) / "app.log"
        setsid = runner.require_tool("setsid", "util-linux")
        log.debug("starting app service %s on port %d", service.name, self._ports[service.name])
        with open(log_path, "ab") as output:
            # setsid: a process group to signal as a whole (it execs in place: same pid); the env
            # wrapper sets the cwd and drops inherited variables (names on argv, values never).
            process = runner.start([setsid, *self._wrapper(self.base_dir, env), *command], env=env,
                                   stdout=output, stderr=output)  # fmt: skip
        self._apps[service.name] = process
        self._write_marker()

    def _await_app(self, service: Service) -> None:
        process = self._apps[service.name]
        log_path = self._service_dir(service) / "app.log"
        deadline = time.monotonic() + service.ready.timeout.total_seconds()
        while not self._ready(service):
            status = _exit_status(process.pid)
            if status is not None or time.monotonic() >= deadline:
                why = f"exited with status {status}" if status is not None else "was not ready"
                waited = format_duration(service.ready.timeout)
                probe = f"; last probe: {self._last_probe}" if self._last_probe else ""
                raise JobFailed(f"app service {service.name} {why} (timeout {waited}{probe}), "
                                f"log {log_path}: {_tail(log_path)}")  # fmt: skip
            time.sleep(0.2)

    def _ready(self, service: Service) -> bool:
        port = self._ports[service.name]
        if service.ready.command is not None:
            return self.exec(service, list(service.ready.command)).exit_code == 0
        if service.ready.http is None:
            with socket.socket() as probe:
                probe.settimeout(2)
                return probe.connect_ex((HOST, port)) == 0
        # Same-origin rule and no proxy: the probe never leaves staging (staging/origin.py).
        ready, self._last_probe = http_ready(HOST, port, service.ready.http, timeout=5)
        return ready

    # ------------------------------------------------------------------ checks
    def exec(self, service: Service, argv: list[str]) -> ExecResult:
        """Run `argv` here with the service's env (see the module docstring), cwd = its work dir.
        Output: stdout and stderr interleaved, masked. Raises JobFailed after an hour."""
        env = self._env(service)
        cluster = self._clusters.get(service.name)
        if isinstance(cluster, LocalPostgres):
            env = {"PGHOST": HOST, "PGPORT": str(cluster.port), "PGUSER": cluster.superuser,
                   "PGPASSWORD": cluster.password, **env}  # fmt: skip
        elif isinstance(cluster, LocalMariaDB):
            env = {"MYSQL_HOST": HOST, "MYSQL_TCP_PORT": str(cluster.port), "MYSQL_PWD": cluster.password,
                   **env}  # fmt: skip
        argv = [*self._wrapper(self._service_dir(service), env), *argv]
        process = runner.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output, _ = process.communicate(timeout=_TIMEOUT)
        except BaseException as error:
            runner.stop(process)
            if isinstance(error, subprocess.TimeoutExpired):
                raise JobFailed(f"command for {service.name} ran longer than {_TIMEOUT:.0f}s") from None
            raise
        return ExecResult(process.returncode, mask(output.decode("utf-8", "replace")))

    def endpoint(self, service: Service) -> tuple[str, int]:
        """(127.0.0.1, port) of a started service. Raises JobFailed for one not started."""
        if service.name in self._ports:
            return HOST, self._ports[service.name]
        return HOST, self._cluster(service).port

    def info(self) -> StagingInfo:
        """How to reach each service (passwords stay in their files) and how to remove it all."""
        services: dict[str, str] = {}
        for name, cluster in self._clusters.items():
            secret = shlex.quote(str(cluster.password_file))
            if isinstance(cluster, LocalPostgres):
                how = (f'PGPASSWORD="$(cat {secret})" {shlex.quote(str(cluster.bindir / "psql"))} '
                       f"-h {HOST} -p {cluster.port} -U {cluster.superuser} postgres")  # fmt: skip
            else:
                how = f'MYSQL_PWD="$(cat {secret})" mariadb -h {HOST} -P {cluster.port} -u root'
            image = self._services[name].image
            services[name] = how + (f"  (a local cluster; image {image} is not used)" if image else "")
        for name, port in self._ports.items():
            services[name] = f"http://{HOST}:{port}/  (log: {self.work_dir / name / 'app.log'})"
        remove = f"backupctl drill cleanup --run {shlex.quote(self.run_id)}  (work dir: {self.work_dir})"
        return StagingInfo(self.name, self.run_id, services, remove)

    # ------------------------------------------------------------------ teardown
    def down(self) -> None:
        """Stop apps (SIGTERM to the group, SIGKILL after a grace) and clusters, remove the work
        dir. Idempotent; logs instead of raising, so it can run in any `finally`."""
        for process in self._apps.values():
            _stop_group(process)
        self._apps.clear()
        for name, cluster in self._clusters.items():
            try:
                cluster.stop()
            except Exception as error:  # whatever it left running is killed just below
                log.warning("stopping database service %s: %s", name, error)
        self._clusters.clear()
        _kill_clusters(self.work_dir)
        _remove(self.work_dir)

    # ------------------------------------------------------------------ helpers
    def _cluster(self, service: Service) -> Cluster:
        if service.name not in self._clusters:
            raise JobFailed(f"service {service.name} is not a started database service of this drill")
        return self._clusters[service.name]

    def _service_dir(self, service: Service) -> Path:
        # 0700: restored production files and the app's log are for this user only. (A cluster's
        # directory exists already, given to the postgres/mysql user.)
        directory = self.work_dir / service.name
        directory.mkdir(mode=0o700, exist_ok=True)
        return directory

    def _values(self) -> dict[str, str]:
        # ${python}: the interpreter running backupctl (and its packages, e.g. psycopg), so a
        # Python app needs no interpreter of its own on the backup host.
        values: dict[str, str] = {"python": sys.executable}
        for name, cluster in self._clusters.items():
            values |= service_values(self._services[name], HOST, cluster.port, cluster.password, bind=HOST)
        for name, port in self._ports.items():
            values |= service_values(self._services[name], HOST, port, "", bind=HOST)
            del values[f"{name}.password"]  # an app has none: the placeholder is reported, not emptied
        return values

    def _env(self, service: Service) -> dict[str, str]:
        """The service's env: secret refs resolved, placeholders filled, files paths mapped."""
        values, env = self._values(), {}
        for key, raw in service.env.items():
            try:
                ref = SecretRef.parse(raw)
            except ValueError:  # not a reference: a literal
                env[key] = self._local_path(service, self._fill(service, f"env {key}", raw, values))
                continue
            if str(ref) not in self._resolved:
                self._resolved[str(ref)] = ref.resolve()  # registers the value for masking
            env[key] = self._resolved[str(ref)]
        return env

    @staticmethod
    def _fill(service: Service, where: str, text: str, values: dict[str, str]) -> str:
        filled = fill_placeholders(text, values)
        if unknown := _UNFILLED.search(filled):
            raise ConfigError(f"{unknown.group()} in {where} of service {service.name}: no such value "
                              "(unknown service, database not started, or an app's password)")  # fmt: skip
        return filled

    def _local_path(self, service: Service, value: str) -> str:
        local = self._files.get(service.name, {}).get(value.rstrip("/") or "/")
        return str(local) if local is not None else value

    @staticmethod
    def _wrapper(cwd: Path, env: dict[str, str]) -> list[str]:
        drop = [name for name in sorted(os.environ) if name not in env and name not in _KEPT_ENV
                and not name.startswith("LC_")]  # fmt: skip
        unset = [option for name in drop for option in ("-u", name)]
        return [runner.require_tool("env", "coreutils"), "-C", str(cwd), *unset, "--"]

    def _write_marker(self) -> None:
        apps = [{"service": name, "pid": process.pid, "start": _start_time(process.pid)}
                for name, process in self._apps.items()]  # fmt: skip
        owner = {"pid": os.getpid(), "start": _start_time(os.getpid())}
        temporary = self.work_dir / (MARKER + ".tmp")
        temporary.write_text(json.dumps({"labels": labels(self.run_id), "owner": owner, "apps": apps}) + "\n")
        temporary.replace(self.work_dir / MARKER)


def cleanup(run_id: str | None = None) -> list[str]:
    """Remove what local drills left in the temp dir (a killed drill, or one run with --keep):
    kill their apps' process groups and cluster servers, delete their work dirs.

    `run_id` None: every leftover whose drill process is gone (running drills are spared).
    Returns the removed directories."""
    removed = []
    for directory in sorted(Path(tempfile.gettempdir()).glob(PREFIX + "*")):
        try:
            record: dict[str, Any] = json.loads((directory / MARKER).read_text())
            marks, owner = dict(record["labels"]), (int(record["owner"]["pid"]), record["owner"]["start"])
            apps = [(int(app["pid"]), app["start"]) for app in record["apps"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a work dir of ours (or its marker is being written)
        if marks.get(LABEL_MANAGED) != "1" or (run_id is not None and marks.get(LABEL_DRILL) != run_id):
            continue
        if run_id is None and owner[1] is not None and _start_time(owner[0]) == owner[1]:
            continue
        for pid, start in apps:
            # A recycled pid is not ours; a dead leader's group id cannot be recycled while
            # members of that group live, so signalling the group then only reaches those.
            if _start_time(pid) in (start, None):
                _signal_and_wait(pid, lambda leader: _start_time(leader) is None)
        _kill_clusters(directory)
        _remove(directory)
        removed.append(str(directory))
    return removed


# ---------------------------------------------------------------------- processes
def _start_time(pid: int) -> int | None:
    """Start time of a live (not zombie) process in clock ticks since boot; None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _exit_status(pid: int) -> int | None:
    """Exit status of our child `pid`, None while it runs. WNOWAIT leaves it unreaped, so its
    pid (also its group's id) cannot be recycled before we are done signalling that group."""
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return -1
    return None if result is None else result.si_status


def _signal_and_wait(pgid: int, gone: Callable[[int], bool]) -> None:
    """SIGTERM a process group, wait up to the grace for `gone(pgid)`, then SIGKILL what is left."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + _GRACE
        while signum == signal.SIGTERM and not gone(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.returncode is None:
        _signal_and_wait(process.pid, lambda leader: _exit_status(leader) is not None)
    process.wait()


def _kill_clusters(work_dir: Path) -> None:
    """Stop every server still running on a data dir below `work_dir`: SIGQUIT to a postmaster
    (pg_ctl's immediate mode), SIGKILL to mariadbd; their data are thrown away anyway."""
    try:
        directories = [path for path in work_dir.iterdir() if path.is_dir()]
    except OSError:
        return
    for directory in directories:
        for pid_file, signum in ((directory / "data" / "postmaster.pid", signal.SIGQUIT),
                                 (directory / "mariadb.pid", signal.SIGKILL)):  # fmt: skip
            try:
                pid = int(pid_file.read_text().split()[0])
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            if str(directory / "data") not in command:
                continue  # a stale pid file whose pid now belongs to someone else
            try:
                os.kill(pid, signum)
                deadline = time.monotonic() + _GRACE
                while _start_time(pid) is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _start_time(pid) is not None:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # gone by itself meanwhile


def _remove(directory: Path) -> None:
    for _attempt in range(3):  # a server that just died may still have been writing a file
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            return
        time.sleep(0.2)
    log.warning("could not remove %s: run `backupctl drill cleanup` later", directory)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 65536))
            return mask(runner.last_lines(handle.read()))
    except OSError:
        return f"(no log at {path})"
