"""Docker staging runtime: a drill's services as containers on a private, internal network.

Everything a run creates (network, containers, volumes) is named `backupctl-<run_id>[-...]` and
carries `labels(run_id)`, so `down()` and `cleanup()` find it again, also after a killed drill.
Images are never pulled: a missing image is a configuration error that says how to get it.

Isolation: the run's network is a user-defined bridge created with `internal=True`. Docker then
drops every packet that would leave the bridge for another interface, so staging reaches neither
the internet (payment gateways, mail relays) nor other Docker networks; services find each other
by service name (a network alias) and no port is published. The host keeps its address on the
bridge (Docker's default), which is how backupctl reaches an app for HTTP checks: `endpoint()` is
the container's address on that network. The flip side (measured on Engine 20.10): a container
can open connections to the host's own addresses, because that is INPUT, not FORWARD, traffic.
The bridge gets a predictable interface name (`bctl-<hash>`) so operators can close that gap with
one rule that still lets the host's own connections in:
`iptables -I INPUT -i bctl-+ -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP`.

Exec with stdin (restores): the engine API's hijacked exec connection, written in 1 MiB chunks,
half-closed for EOF, with a thread demultiplexing the output meanwhile (a tool that writes much
to stderr while we still write stdin would otherwise deadlock us).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import struct
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from docker.client import from_env
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from backupctl.core import runner
from backupctl.core.runner import last_lines
from backupctl.core.secrets import SecretRef, mask, register_secret
from backupctl.core.spool import lack_of_room
from backupctl.drills.schema import Service
from backupctl.errors import ConfigError, JobFailed, SourceError
from backupctl.sources.mysql_parallel import ClientStarter
from backupctl.sources.pg_toc import DataOffsets, observed
from backupctl.staging import isolation
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
from backupctl.staging.mariadb_sandbox import client_knows_sandbox, without_sandbox_line
from backupctl.staging.origin import http_ready

log = logging.getLogger("backupctl.staging.docker")

CHUNK = 1 << 20
_SPOOL_PARENT = "/var/tmp"  # where a parallel restore spools its dump inside a staging container
DEFAULT_IMAGES = {"postgres": "postgres:15", "mariadb": "mariadb:10.11"}
DEFAULT_PORTS = {"postgres": 5432, "mariadb": 3306}
# The images docker/build-images.sh builds, by the name it takes: the default set (`make images`)
# and the older majors from Debian bullseye, built only when named.
BUILDABLE_IMAGES = {
    "backupctl/postgres:15": "postgres",
    "backupctl/mariadb:10.11": "mariadb",
    "backupctl/shop:latest": "shop",
    "backupctl/postgres:13": "postgres-13",
    "backupctl/mariadb:10.5": "mariadb-10.5",
}


def missing_image_hint(image: str) -> str:
    """How to get a staging image the engine lacks (drills never pull)."""
    name = BUILDABLE_IMAGES.get(image)
    if name is not None:
        return f"build it: docker/build-images.sh {name}"
    if image.startswith("backupctl/"):
        return (
            "no bundled recipe builds it (Debian ships PostgreSQL 13/15, MariaDB 10.5/10.11): build your own "
            "(docker/apps/README.md), or `docker pull` the official image and name it in a drill file"
        )
    return "drills never pull: `docker pull` it, or build the local images with docker/build-images.sh"
# The variables the official images read the admin password from, preferred first.
PASSWORD_VARIABLES = {
    "postgres": ("POSTGRES_PASSWORD",),
    "mariadb": ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"),
}
DRILL_SECRET = "BACKUPCTL_DRILL_SECRET"
POLL_SECONDS = 0.5
TAIL_BYTES = 64 * 1024
LOCALHOST = "127.0.0.1"  # probes and tools use TCP: the images' init-time server listens on a socket only
_UNFILLED = re.compile(r"\$\{[a-z0-9][a-z0-9_-]*\.(?:host|port|password|bind)\}")
# An operator's HTTP_PROXY must not swallow requests to staging addresses.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_RUN_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def engine_available(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping within `timeout` seconds (for `runtime: auto`)."""
    try:
        client = from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (DockerException, OSError):  # requests' errors are OSErrors too
        return False


def bridge_name(run_id: str) -> str:
    """The host interface of a run's network: `bctl-` + 10 hex digits (Linux allows 15 characters)."""
    return "bctl-" + hashlib.sha256(run_id.encode()).hexdigest()[:10]


def cleanup(client: Any | None = None, run_id: str | None = None) -> list[str]:
    """Remove every container, volume and network a drill created (only `run_id`'s if given).

    Returns what was removed ("container NAME", ...). Parts that vanish meanwhile are fine; parts
    that cannot be removed raise JobFailed after everything else has been tried.
    """
    own = client is None
    engine: Any = client if client is not None else from_env()
    selector = [f"{LABEL_MANAGED}=1"] + ([f"{LABEL_DRILL}={run_id}"] if run_id else [])
    removed: list[str] = []
    failed: list[str] = []

    def attempt(what: str, action: Callable[[], object]) -> None:
        try:
            action()
            removed.append(what)
        except NotFound:
            pass
        except APIError as error:
            if "already in progress" in str(error.explanation or ""):
                return  # a concurrent cleanup (another `drill cleanup`) is removing it
            failed.append(f"{what}: {error.explanation or error}")

    try:
        removed += isolation.open_host(run_id)  # the host is reachable again only once staging is gone
        isolation.remove_resolv_conf(run_id)
        for container in engine.containers.list(all=True, filters={"label": selector}):
            # v=True: also the anonymous volumes images declare (postgres' data directory).
            attempt(f"container {container.name}", functools.partial(container.remove, force=True, v=True))
        for volume in engine.volumes.list(filters={"label": selector}):
            attempt(f"volume {volume.name}", volume.remove)
        for network in engine.networks.list(filters={"label": selector}):
            attempt(f"network {network.name}", functools.partial(_remove_network, network))
    finally:
        if own:
            engine.close()
    if failed:
        raise JobFailed("could not remove staging leftovers: " + "; ".join(failed))
    return removed


def _remove_network(network: Any) -> None:
    """Remove a network, first disconnecting containers someone attached by hand."""
    network.reload()
    for container_id in network.attrs.get("Containers") or {}:
        try:
            network.disconnect(container_id, force=True)
        except NotFound:
            pass
    network.remove()


class DockerRuntime:
    """StagingRuntime on a Docker engine (see the module docstring for isolation and exec)."""

    name = "docker"

    def __init__(self, run_id: str, *, client: Any | None = None, base_dir: Path | None = None) -> None:
        """`client`: a docker.DockerClient (default: from the environment). `base_dir` is accepted
        for a constructor shared with the local runtime; Docker keeps nothing on the host."""
        if not _RUN_ID.match(run_id):
            raise ConfigError(f"drill run id '{run_id}' cannot name Docker objects (letters, digits, _.-)")
        self.run_id = run_id
        self.client: Any = client if client is not None else from_env()
        self.base_dir = base_dir
        self.network_name = f"backupctl-{run_id}"
        # Fills ${BACKUPCTL_DRILL_SECRET} (the drill action's, if it set one) and is the admin
        # password of database services that set none.
        self.drill_secret = os.environ.get(DRILL_SECRET) or secrets.token_urlsafe(24)
        register_secret(self.drill_secret)
        self._services: dict[str, Service] = {}
        self._env: dict[str, dict[str, str]] = {}  # secret refs resolved, ${...} not yet filled
        self._mounts: dict[str, list[Mount]] = {}
        self._network: Any = None
        self._subnet: Any = None
        self._addresses: dict[str, str] = {}  # service -> static address on the run's network
        self.warnings: list[str] = []  # isolation the runtime could not put in place (shown loudly)

    # --- names and per-service facts ---------------------------------------------------------------

    def container_name(self, service: Service) -> str:
        return f"backupctl-{self.run_id}-{service.name}"

    def _port(self, service: Service) -> int:
        return service.port or DEFAULT_PORTS.get(service.kind, 0)

    def _password(self, service: Service) -> str:
        env = self._env.get(service.name, {})
        return next((env[key] for key in PASSWORD_VARIABLES.get(service.kind, ()) if env.get(key)), "")

    def _user(self, service: Service) -> str:
        if service.kind == "postgres":
            return self._env.get(service.name, {}).get("POSTGRES_USER") or "postgres"
        return "root"

    def _register(self, services: list[Service]) -> None:
        """Resolve secret refs in each service's env once; give database services a password."""
        for service in services:
            env = {key: _resolve(value) for key, value in service.env.items()}
            choices = PASSWORD_VARIABLES.get(service.kind, ())
            if choices and not any(key in env for key in choices):
                env[choices[0]] = "${" + DRILL_SECRET + "}"
            self._env[service.name] = {
                key: fill_placeholders(value, {DRILL_SECRET: self.drill_secret}) for key, value in env.items()
            }
            self._services[service.name] = service
            if service.name not in self._addresses and self._subnet is not None:
                address = self._subnet.network_address + isolation.FIRST_HOST + len(self._addresses)
                self._addresses[service.name] = str(address)
            if password := self._password(service):
                register_secret(password)  # a literal staging password is still a password

    def _environment(self, service: Service) -> dict[str, str]:
        """The service's env with `${svc.host}`-style placeholders of every known service filled."""
        values = {DRILL_SECRET: self.drill_secret}
        for known in self._services.values():
            values.update(service_values(known, known.name, self._port(known), self._password(known)))
            if known.kind == "app":
                del values[f"{known.name}.password"]  # an app has none: reported below, not emptied
        env = {key: fill_placeholders(value, values) for key, value in self._env[service.name].items()}
        for key, value in env.items():
            if unknown := _UNFILLED.search(value):
                raise ConfigError(
                    f"{unknown.group()} in env {key} of service {service.name}: no such value "
                    "(unknown service, not started yet, or an app's password)"
                )
        return env

    def _image(self, service: Service) -> str:
        image = service.image or DEFAULT_IMAGES.get(service.kind)
        if not image:
            raise ConfigError(f"staging service '{service.name}': an app service needs an image")
        return image

    def _container(self, service: Service) -> Any:
        try:
            return self.client.containers.get(self.container_name(service))
        except NotFound:
            raise JobFailed(f"staging service '{service.name}' is not running") from None

    # --- lifecycle ---------------------------------------------------------------------------------

    def _ensure_network(self) -> None:
        if self._network is not None:
            return
        bridge = bridge_name(self.run_id)
        self._network, self._subnet = isolation.create_network(
            self.client, self.network_name, labels(self.run_id), bridge
        )
        if warning := isolation.close_host(self.run_id, bridge):
            log.warning("%s", warning)
            self.warnings.append(warning)

    def _create(self, service: Service, mounts: list[Mount]) -> Any:
        image = self._image(service)
        endpoint = self.client.api.create_endpoint_config(
            aliases=[service.name], ipv4_address=self._addresses.get(service.name)
        )
        # Names resolve from /etc/hosts; any other lookup fails at once (staging/isolation.py).
        resolver = Mount(
            "/etc/resolv.conf", str(isolation.resolv_conf(self.run_id)), type="bind", read_only=True
        )
        log.debug("creating container %s from %s", self.container_name(service), image)  # never the env
        try:
            return self.client.containers.create(
                image,
                command=service.command,
                name=self.container_name(service),
                hostname=service.name,
                environment=self._environment(service),
                labels=labels(self.run_id),
                network=self.network_name,
                networking_config={self.network_name: endpoint},
                mounts=[*mounts, resolver],
                extra_hosts=dict(self._addresses),
            )
        except ImageNotFound:
            raise ConfigError(
                f"staging service '{service.name}': image '{image}' is not available to the Docker engine "
                f"({missing_image_hint(image)})"
            ) from None
        except APIError as error:
            raise JobFailed(f"cannot create staging service '{service.name}': {error.explanation}") from None

    def _start(self, services: list[Service], before_ready: Callable[[], None] | None = None) -> None:
        self._ensure_network()
        self._register(services)
        started = []
        for service in services:  # start them all first: they initialise in parallel
            container = self._create(service, self._mounts.get(service.name, []))
            try:
                container.start()
            except APIError as error:  # e.g. the command does not exist in the image
                raise JobFailed(
                    f"cannot start staging service '{service.name}': {error.explanation}"
                ) from None
            started.append((service, container))
        if before_ready is not None:
            before_ready()
        for service, container in started:
            self._wait_ready(service, container)

    def start_databases(self, services: list[Service]) -> None:
        """Create and start the database services; wait until each answers a real query."""
        self._start(services)

    def start_apps(self, services: list[Service], before_ready: Callable[[], None] | None = None) -> None:
        """Create and start app services with their file volumes; call `before_ready` (the
        drill's post-restore steps), then wait for their readiness probe."""
        self._start(services, before_ready)

    def _wait_ready(self, service: Service, container: Any) -> None:
        timeout = service.ready.timeout.total_seconds()
        deadline = time.monotonic() + timeout
        last = "no probe yet"
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise JobFailed(
                    f"staging service '{service.name}' exited with status {code} before it was "
                    f"ready; last log lines: {self._logs(container)}"
                )
            ready, last = self._probe(service, container)
            if ready:
                log.debug("staging service %s is ready", service.name)
                return
            if time.monotonic() >= deadline:
                raise JobFailed(
                    f"staging service '{service.name}' was not ready within {timeout:g}s "
                    f"({mask(last)}); last log lines: {self._logs(container)}"
                )
            time.sleep(POLL_SECONDS)

    def _probe(self, service: Service, container: Any) -> tuple[bool, str]:
        """One readiness attempt: (ready, what the probe said)."""
        if service.kind in ("postgres", "mariadb"):
            ping = ["pg_isready"] if service.kind == "postgres" else ["mariadb-admin", "ping"]
            for argv in ([*ping, *self._client_args(service)], self._sql_argv(service, None, "select 1")):
                result = self._exec(container, argv, env=self._tool_env(service))
                if result.exit_code != 0:
                    return False, last_lines(bytes(result.stderr or result.stdout), 2)
            return True, "ready"
        if container.status != "running":
            return False, f"container is {container.status}"
        port = self._port(service)
        if not port:
            return True, "running"
        if service.ready.command is not None:
            result = self._exec(container, list(service.ready.command), env=self._environment(service))
            said = last_lines(bytes(result.stderr or result.stdout), 2)
            return result.exit_code == 0, f"ready.command exited {result.exit_code}: {said}"
        host, _ = self.endpoint(service)
        if service.ready.http is None:
            try:
                socket.create_connection((host, port), timeout=2).close()
                return True, "port open"
            except OSError as error:
                return False, f"port {port}: {error}"
        return http_ready(host, port, service.ready.http)

    def _logs(self, container: Any, count: int = 10) -> str:
        try:
            text = container.logs(tail=count * 2).decode("utf-8", "replace")
        except DockerException:
            return "(logs unavailable)"
        return mask(last_lines(text, count))

    def down(self) -> None:
        """Remove this run's containers (with their anonymous volumes), volumes and network."""
        cleanup(self.client, self.run_id)
        self._network, self._mounts = None, {}

    # --- databases ---------------------------------------------------------------------------------

    def _client_args(self, service: Service) -> list[str]:
        """Where and as whom the service's own client tools connect (TCP, see LOCALHOST)."""
        if service.kind == "postgres":
            return ["-h", LOCALHOST, "-p", str(self._port(service)), "-U", self._user(service)]
        return ["--protocol=tcp", "-h", LOCALHOST, "-P", str(self._port(service)), "-u", "root"]

    def _tool_env(self, service: Service) -> dict[str, str]:
        """Passwords reach the tools through their environment, never argv."""
        variable = "PGPASSWORD" if service.kind == "postgres" else "MYSQL_PWD"
        return {variable: self._password(service)}

    def _sql_argv(self, service: Service, database: str | None, query: str) -> list[str]:
        connect = self._client_args(service)
        if service.kind == "postgres":
            psql = ["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
            return [*psql, *connect, "-d", database or "postgres", "-c", query]
        if service.kind == "mariadb":
            return ["mariadb", "-B", "-N", *connect, *([database] if database else []), "-e", query]
        raise ConfigError(f"staging service '{service.name}' is not a database service")

    def sql(self, service: Service, database: str, query: str) -> SqlResult:
        """Run one query with the service's own client; rows as the client prints them."""
        return self._query(service, database, query, JobFailed)

    def _query(self, service: Service, database: str | None, query: str, error: type[JobFailed]) -> SqlResult:
        # The query goes in on stdin, never on a command line: post-restore SQL and recreated
        # roles may carry the drill secret.
        argv = self._sql_argv(service, database, query)[:-2]  # without -c/-e QUERY
        if service.kind == "postgres":
            argv.insert(1, "-q")  # no command tags (UPDATE 2) among the rows
        result = self._exec(
            self._container(service), argv, env=self._tool_env(service), stdin=io.BytesIO(query.encode())
        )
        if result.exit_code != 0:
            raise error(
                f"query in {service.name}/{database or '-'} failed: "
                f"{mask(last_lines(bytes(result.stderr or result.stdout)))}"
            )
        lines = result.stdout.decode("utf-8", "replace").splitlines()
        return SqlResult([line.split("\t") for line in lines])

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
        """Create `database` if missing, then restore the dump with the service's own tools:
        with `jobs` > 1 a PostgreSQL dump is spooled inside the container and restored with
        `pg_restore --jobs` (`_restore_spooled`), a MariaDB dump is loaded over `jobs` clients
        of the container (staging/mariadb_load.py), else either is streamed into pg_restore /
        mariadb. `keep_privileges`: the dump's roles were recreated: keep owners and GRANTs."""
        if service.kind == "postgres":
            exists = "SELECT 1 FROM pg_database WHERE datname = '" + database.replace("'", "''") + "'"
            if not self._query(service, None, exists, SourceError).rows:
                create = 'CREATE DATABASE "' + database.replace('"', '""') + '"'
                self._query(service, None, create, SourceError)
            # Without the dump's roles (an older snapshot), owners and GRANTs would name missing roles.
            skip = [] if keep_privileges else ["--no-owner", "--no-acl"]
            argv = ["pg_restore", "--exit-on-error", *skip, *self._client_args(service)]
            argv += ["-d", database]
            if jobs > 1:
                return self._restore_spooled(service, database, argv, stream, jobs, size_hint)
        elif service.kind == "mariadb":
            create = "CREATE DATABASE IF NOT EXISTS `" + database.replace("`", "``") + "`"
            self._query(service, None, create, SourceError)
            argv = ["mariadb", "--binary-mode", *self._client_args(service), database]
            # The image's client comes with its server: the server's version says what it reads.
            version = self._query(service, None, "SELECT VERSION()", SourceError).scalar
            if version and not client_knows_sandbox(version):
                stream = without_sandbox_line(stream)  # e.g. 10.5.23 (staging/mariadb_sandbox.py)
            return load_dump(
                stream, jobs, size_hint, self._mariadb_starter(service, database),
                serial=lambda plain: self._run_tool(service, database, argv, plain),
                label=f"mariadb into {service.name}/{database}",
                why_serial="the docker CLI is not on this host (it feeds the container's clients)",
            )  # fmt: skip
        else:
            raise ConfigError(f"staging service '{service.name}' is not a database service")
        self._run_tool(service, database, argv, stream)
        return DatabaseRestored()

    def _mariadb_starter(self, service: Service, database: str) -> ClientStarter | None:
        """Starts one more `mariadb` client in the service's container reading SQL on stdin, for
        the parallel loader (staging/mariadb_load.py); None without the docker CLI. Through
        `docker exec -i` (the engine of this environment, as `from_env` finds it): the loader
        feeds and waits for processes. The password reaches the client through the CLI's
        environment (`-e MYSQL_PWD` names the variable only), never argv."""
        if shutil.which("docker") is None:
            return None
        container = self.container_name(service)
        argv = ["docker", "exec", "-i", "-e", "MYSQL_PWD", container, "mariadb", *CLIENT_OPTIONS,
                *self._client_args(service), "--", database]  # fmt: skip
        env = self._tool_env(service)

        def start() -> subprocess.Popen[bytes]:
            return runner.start(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

        return start

    def _restore_spooled(
        self,
        service: Service,
        database: str,
        argv: list[str],
        stream: BinaryIO,
        jobs: int,
        size_hint: int | None,
    ) -> DatabaseRestored:
        """Parallel pg_restore seeks in its archive: spool the dump into a private directory in
        the container (its writable layer: nothing of it outlives the drill, and the host's
        temporary directory is not involved), restore with `--jobs`, remove the spool. Without
        room for the dump plus a reserve, stream it with one job and say why."""
        container = self._container(service)
        free = self._exec(container, ["df", "-Pk", _SPOOL_PARENT], keep=TAIL_BYTES)
        fields = bytes(free.stdout).decode(errors="replace").splitlines()[-1:]
        numbers = fields[0].split() if fields else []
        if free.exit_code != 0 or len(numbers) < 4 or not numbers[1].isdigit() or not numbers[3].isdigit():
            note = f"restored with one job: cannot read the free space of {_SPOOL_PARENT} in {container.name}"
            self._run_tool(service, database, argv, stream)
            return DatabaseRestored(1, note)
        reason = lack_of_room(f"{container.name}:{_SPOOL_PARENT}", size_hint, int(numbers[3]) << 10,
                              int(numbers[1]) << 10)  # fmt: skip
        if reason:
            self._run_tool(service, database, argv, stream)
            return DatabaseRestored(1, f"restored with one job: {reason}")
        spool = f"{_SPOOL_PARENT}/backupctl-spool-{secrets.token_hex(4)}"
        offsets = DataOffsets()  # the tables' data positions for the spool's TOC (sources/pg_toc.py)
        try:
            write = ["sh", "-c", f'umask 077 && mkdir "{spool}" && exec cat > "{spool}/dump"']
            self._run_tool(service, database, write, observed(stream, offsets), what="spooling the dump")
            restore = [*argv, f"--jobs={jobs}", f"{spool}/dump"]
            head = offsets.patched_head()
            if head is None:
                self._run_tool(service, database, restore, None)
            else:
                # The patched TOC goes over the spool's start in the same exec as the restore:
                # one `docker exec` round trip, not two.
                patch = f'dd of="{spool}/dump" bs=1M conv=notrunc status=none'
                script = f"{patch} && exec {shlex.join(restore)}"
                log.debug("the spool's TOC gets its data positions (%d bytes of head)", len(head))
                self._run_tool(service, database, ["sh", "-c", script], io.BytesIO(head), what="pg_restore")
        finally:
            self._exec(container, ["rm", "-rf", spool], keep=TAIL_BYTES)
        return DatabaseRestored(jobs)

    def _run_tool(
        self, service: Service, database: str, argv: list[str], stream: BinaryIO | None, what: str = ""
    ) -> None:
        """Run a restore tool in the service's container, feeding it `stream`; SourceError with its
        stderr tail when it fails or stops reading its input early."""
        started = time.monotonic()
        result = self._exec(
            self._container(service), argv, env=self._tool_env(service), stdin=stream, keep=TAIL_BYTES
        )
        if result.exit_code != 0 or not result.input_consumed:
            raise SourceError(
                f"{what or argv[0]} into {service.name}/{database} exited with {result.exit_code}"
                f"{'' if result.input_consumed else ' before reading all its input'}: "
                f"{mask(last_lines(bytes(result.stderr)))}"
            )
        log.debug("%s %s/%s in %.1fs", what or argv[0], service.name, database, time.monotonic() - started)

    # --- files -------------------------------------------------------------------------------------

    def install_files(self, service: Service, path: str, tree: Path) -> None:
        """Copy `tree` into a new named volume that is mounted at `path` when the service starts."""
        if not tree.is_dir():
            raise JobFailed(f"files for {service.name}:{path} are missing: {tree} is not a directory")
        if self.client.containers.list(all=True, filters={"name": f"^{self.container_name(service)}$"}):
            raise JobFailed(f"install files into '{service.name}' before starting it")
        image = self._image(service)
        volume = f"{self.container_name(service)}-files-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
        self.client.volumes.create(name=volume, labels=labels(self.run_id))
        # no_copy: the volume shows the restored tree only, not what the image keeps at `path`.
        mount = Mount(target=path, source=volume, type="volume", no_copy=True)
        try:
            # Never started: the engine mounts a created container's volumes for archive uploads.
            helper = self.client.containers.create(
                image,
                name=f"{volume}-copy",
                labels=labels(self.run_id),
                mounts=[mount],
                network_disabled=True,
            )
        except ImageNotFound:
            raise ConfigError(
                f"staging service '{service.name}': image '{image}' is not available "
                f"({missing_image_hint(image)})"
            ) from None
        chunks = _tar_chunks(tree)
        try:
            if not helper.put_archive(path, chunks):
                raise JobFailed(f"copying {tree} into {service.name}:{path} failed")
        except APIError as error:
            raise JobFailed(f"copying {tree} to {service.name}:{path} failed: {error.explanation}") from None
        finally:
            chunks.close()
            helper.remove(force=True)
        self._mounts.setdefault(service.name, []).append(mount)

    # --- checks ------------------------------------------------------------------------------------

    def exec(self, service: Service, argv: list[str]) -> ExecResult:
        """Run `argv` inside the service's container: exit code and stdout+stderr interleaved."""
        result = self._exec(self._container(service), argv)
        return ExecResult(result.exit_code, result.combined.decode("utf-8", "replace"))

    def endpoint(self, service: Service) -> tuple[str, int]:
        """The container's address on the run's network and the service's port (reachable from
        the host through the bridge; nothing is published)."""
        container = self._container(service)
        networks = container.attrs.get("NetworkSettings", {}).get("Networks", {})
        address = (networks.get(self.network_name) or {}).get("IPAddress")
        if not address:
            raise JobFailed(f"staging service '{service.name}' has no address on {self.network_name}")
        return address, self._port(service)

    def info(self) -> StagingInfo:
        """How to reach each service while the environment is kept, and how to remove it."""
        services: dict[str, str] = {}
        for service in self._services.values():
            name = self.container_name(service)
            if service.kind == "postgres":
                services[service.name] = f"docker exec -it {name} psql -U {self._user(service)}"
            elif service.kind == "mariadb":
                services[service.name] = f"docker exec -it {name} mariadb -uroot -p"
            else:
                try:
                    host, port = self.endpoint(service)
                    services[service.name] = f"http://{host}:{port}/ (docker exec -it {name} sh)"
                except JobFailed:  # not running (any more)
                    services[service.name] = f"docker start -ai {name}"
        return StagingInfo(self.name, self.run_id, services, f"backupctl drill cleanup --run {self.run_id}")

    # --- exec plumbing -----------------------------------------------------------------------------

    def _exec(
        self,
        container: Any,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: BinaryIO | None = None,
        keep: int | None = None,
    ) -> _ExecOutput:
        """Run argv in the container through the engine API, optionally streaming `stdin` into it.
        `keep`: bytes of each output stream to keep (the tail); None keeps everything."""
        api = self.client.api
        try:
            exec_id = api.exec_create(
                container.id, argv, stdin=stdin is not None, stdout=True, stderr=True, environment=env
            )["Id"]
            connection = api.exec_start(exec_id, socket=True)
        except APIError as error:  # typically: the container is not running
            raise JobFailed(f"cannot run {argv[0]} in {container.name}: {error.explanation}") from None
        raw = getattr(connection, "_sock", connection)
        # The client's 60 s read timeout would break a restore that is silent while building indexes.
        raw.settimeout(None)
        output = _ExecOutput(keep)
        try:
            if stdin is None:
                _demultiplex(_reader(connection), output)
            else:
                reader = threading.Thread(
                    target=_demultiplex, args=(_reader(connection), output), daemon=True
                )
                reader.start()
                try:
                    output.input_consumed = _pump(stdin, raw)
                finally:
                    try:
                        raw.shutdown(socket.SHUT_WR)  # EOF for the tool; its output still flows back
                    except OSError:
                        pass
                    reader.join()
        finally:
            connection.close()  # an open hijacked connection stalls later API calls on this engine
        output.exit_code = _exit_code(api, exec_id)
        return output


@dataclass
class _ExecOutput:
    """What an exec printed (stdout, stderr, both interleaved; the last `keep` bytes of each)."""

    keep: int | None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    combined: bytearray = field(default_factory=bytearray)
    exit_code: int = -1
    input_consumed: bool = True

    def add(self, stream: int, data: bytes) -> None:
        for buffer in (self.stderr if stream == 2 else self.stdout, self.combined):
            buffer += data
            if self.keep is not None and len(buffer) > self.keep:
                del buffer[: len(buffer) - self.keep]


def _resolve(value: str) -> str:
    """A secret reference's value (registered for masking), or the literal text."""
    try:
        reference = SecretRef.parse(value)
    except ValueError:
        return value
    return reference.resolve()


def _reader(connection: Any) -> Callable[[int], bytes]:
    """A read function over the hijacked exec connection. http.client may already have buffered
    the first output bytes together with the 101 response headers: read through that buffer."""
    buffered = getattr(
        getattr(getattr(getattr(connection, "_response", None), "raw", None), "_fp", None), "fp", None
    )
    if buffered is not None and hasattr(buffered, "read1"):
        return buffered.read1  # type: ignore[no-any-return]
    raw = getattr(connection, "_sock", connection)
    return raw.recv  # type: ignore[no-any-return]


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _demultiplex(read: Callable[[int], bytes], output: _ExecOutput) -> None:
    """Split the engine's multiplexed stream (8-byte header: stream id, 3 zero bytes, big-endian
    length) into stdout and stderr until EOF. A broken connection counts as EOF: the exit code,
    read afterwards, tells how the command ended."""
    try:
        while len(header := _read_exactly(read, 8)) == 8:
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            while size and (chunk := read(min(size, CHUNK))):
                output.add(stream, chunk)
                size -= len(chunk)
    except OSError:
        pass


def _pump(stream: BinaryIO, raw: Any) -> bool:
    """Copy `stream` into the exec's stdin; False when the tool went away before reading it all."""
    while chunk := stream.read(CHUNK):
        try:
            raw.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return False
    return True


def _exit_code(api: Any, exec_id: str) -> int:
    # The stream ends when the process closes its output; the engine records the exit code just after.
    for _ in range(100):
        state = api.exec_inspect(exec_id)
        if not state.get("Running"):
            return int(state.get("ExitCode") if state.get("ExitCode") is not None else -1)
        time.sleep(0.05)
    raise JobFailed(f"exec {exec_id[:12]} closed its output but did not exit")


def _tar_chunks(tree: Path) -> Generator[bytes, None, None]:
    """A tar of `tree` (symlinks and hard links kept as links) in 1 MiB chunks, written by a thread
    into a pipe: memory stays flat whatever the tree's size. Closing the generator early stops the
    writer (EPIPE)."""
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with (
                os.fdopen(write_fd, "wb", buffering=CHUNK) as sink,
                tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                tar.add(str(tree), arcname=".")
        except BaseException as error:  # re-raised below, in the consumer's thread
            errors.append(error)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        try:
            while chunk := source.read(CHUNK):
                yield chunk
        finally:
            source.close()
            thread.join()
    if errors:
        raise JobFailed(f"reading the restored files failed: {errors[0]}")
