"""The staging images built by docker/build-images.sh, against the real Docker engine.

`staging_images` (tests/fixtures/docker.py, session) runs the build script once per session: it
builds what is missing or stale, otherwise it only confirms the images are current (under a second).
Each test checks one image against the official image's conventions, with the docker CLI, as a
drill or an operator would use it.

Each test creates its containers and networks under unique names with the label backupctl.test=1 and
removes exactly those (never "everything with the label": other sessions share this engine).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

SHOP_SCHEMA = Path(__file__).resolve().parents[3] / "docker" / "shop" / "schema.sql"
TEST_LABEL = "backupctl.test=1"
SECRET_ARG = re.compile(r"^(\w*(?:PASSWORD|PWD)\w*=).+")  # -e NAME=value arguments shown masked
INIT_SQL = "CREATE TABLE from_init (n int);\nINSERT INTO from_init VALUES ({});\n"  # an initdb.d file


def docker(*args: str, check: bool = True, input: bytes | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run the docker CLI; on failure the test fails with the command (passwords masked) and stderr."""
    result = subprocess.run(["docker", *args], input=input, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        shown = " ".join(SECRET_ARG.sub(r"\1***", arg) for arg in args)
        pytest.fail(f"docker {shown}: exit {result.returncode}: "
                    f"{result.stderr.decode(errors='replace').strip()}")
    return result


def docker_text(*args: str, **kwargs) -> str:
    return docker(*args, **kwargs).stdout.decode().strip()


class Resources:
    """Containers and networks made by one test, removed (with their volumes) when it ends."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.networks: list[str] = []

    def name(self, kind: str) -> str:
        return f"backupctl-test-{kind}-{uuid.uuid4().hex[:10]}"

    def create(self, image: str, *options: str, kind: str, files: dict[str, Path] | None = None) -> str:
        """`docker create` a labelled container, copy `files` ({container path: host file}) into it
        (as a drill's copy_in would: no bind mount, works with a remote engine too), start it."""
        name = self.name(kind)
        self.containers.append(name)
        docker("create", "--name", name, "--label", TEST_LABEL, *options, image)
        for target, source in (files or {}).items():
            docker("cp", str(source), f"{name}:{target}")
        docker("start", name)
        return name

    def network(self, *options: str) -> str:
        name = self.name("net")
        docker("network", "create", "--label", TEST_LABEL, *options, name)
        self.networks.append(name)
        return name

    def cleanup(self) -> None:
        if self.containers:
            docker("rm", "--force", "--volumes", *self.containers, check=False)
        for network in self.networks:
            docker("network", "rm", network, check=False)


@pytest.fixture
def resources() -> Iterator[Resources]:
    made = Resources()
    try:
        yield made
    finally:
        made.cleanup()


def wait_until(container: str, ready: Callable[[], bool], what: str, timeout: float = 90) -> float:
    """Poll `ready` until it is true; fail early (with the logs) if the container stopped."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready():
            return time.monotonic() - started
        if docker_text("inspect", "-f", "{{.State.Running}}", container) != "true":
            break
        time.sleep(0.25)
    logs = docker("logs", "--tail", "40", container, check=False)
    pytest.fail(f"{container}: not {what} after {time.monotonic() - started:.0f} s; last log lines:\n"
                f"{(logs.stdout + logs.stderr).decode(errors='replace')}")


def published_port(container: str, port: str) -> int:
    """The host port docker chose for `port` (published on 127.0.0.1 only)."""
    binding = docker_text("port", container, port).splitlines()[0]
    host, _, number = binding.rpartition(":")
    assert host == "127.0.0.1", binding
    return int(number)


def exit_status(container: str, timeout: float = 60) -> tuple[int, str]:
    """Wait for a container that must stop by itself; its exit code and log."""
    code = int(docker_text("wait", container, timeout=timeout))
    logs = docker("logs", container)
    return code, (logs.stdout + logs.stderr).decode(errors="replace")


# --- PostgreSQL -------------------------------------------------------------------------------------

def pg_ready(container: str) -> Callable[[], bool]:
    # over TCP: during the initdb.d phase only the Unix socket is up, so this means "really ready"
    return lambda: docker("exec", container, "pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres",
                          check=False).returncode == 0


def test_postgres_image_follows_official_conventions(staging_images, resources, tmp_path):
    image = staging_images["postgres"]
    config = json.loads(docker_text("image", "inspect", "-f", "{{json .Config}}", image))
    assert "5432/tcp" in config["ExposedPorts"]
    assert "PGDATA=/var/lib/postgresql/data" in config["Env"]
    assert "/var/lib/postgresql/data" in config["Volumes"]

    password = "pw '\" " + secrets.token_hex(8)  # quotes and spaces must survive initdb
    (tmp_path / "10-table.sql").write_text(INIT_SQL.format(42))
    # not executable: the entrypoint sources it, as the postgres user
    (tmp_path / "20-script.sh").write_text('psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
                                           '-c "INSERT INTO from_init VALUES (43)"')
    container = resources.create(
        image, "-e", f"POSTGRES_PASSWORD={password}", "-e", "POSTGRES_DB=shopdb",
        "-p", "127.0.0.1::5432", kind="pg",
        files={"/docker-entrypoint-initdb.d/10-table.sql": tmp_path / "10-table.sql",
               "/docker-entrypoint-initdb.d/20-script.sh": tmp_path / "20-script.sh"})
    wait_until(container, pg_ready(container), "ready (pg_isready -h 127.0.0.1)")

    port = published_port(container, "5432/tcp")
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                         dbname="shopdb", connect_timeout=10) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, "
                           "current_setting('server_encoding'), array_agg(n ORDER BY n) "
                           "FROM from_init").fetchone()
    assert row is not None
    version, encoding, values = row
    assert 150000 <= version < 160000
    assert encoding == "UTF8"
    assert values == [42, 43], "the initdb.d .sql and .sh files ran, in name order"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="wrong",
                        dbname="shopdb", connect_timeout=10).close()

    # what drills run inside: the server's own client tools, as the postgres user over the socket
    assert "pg_restore (PostgreSQL) 15." in docker_text("exec", container, "pg_restore", "--version")
    assert docker_text("exec", container, "ps", "-o", "user=", "-p", "1") == "postgres"
    pgdata = docker_text("exec", container, "stat", "-c", "%u:%g %a", "/var/lib/postgresql/data")
    assert pgdata == "999:999 700", "owned by postgres (uid/gid 999 as in the official image), 0700"
    dump = docker("exec", container, "pg_dump", "-U", "postgres", "-Fc", "shopdb").stdout
    docker("exec", container, "createdb", "-U", "postgres", "restored")
    docker("exec", "-i", container, "pg_restore", "-U", "postgres", "--exit-on-error", "-d", "restored",
           input=dump)
    assert docker_text("exec", container, "psql", "-U", "postgres", "-d", "restored", "-Atc",
                       "SELECT sum(n) FROM from_init") == "85"


def test_postgres_image_refuses_to_start_without_a_password(staging_images, resources):
    container = resources.create(staging_images["postgres"], kind="pg-nopw")
    code, log = exit_status(container)
    assert code != 0
    assert "POSTGRES_PASSWORD" in log


# --- MariaDB ----------------------------------------------------------------------------------------

def test_mariadb_image_follows_official_conventions(staging_images, resources, tmp_path):
    image = staging_images["mariadb"]
    config = json.loads(docker_text("image", "inspect", "-f", "{{json .Config}}", image))
    assert "3306/tcp" in config["ExposedPorts"]
    assert "/var/lib/mysql" in config["Volumes"]

    root_password = "r'o\"ot\\ " + secrets.token_hex(8)  # every character SQL escaping must handle
    user_password = secrets.token_hex(12)
    (tmp_path / "10-table.sql").write_text(INIT_SQL.format(7))
    container = resources.create(
        image, "-e", f"MARIADB_ROOT_PASSWORD={root_password}", "-e", "MARIADB_DATABASE=shop_db",
        "-e", "MARIADB_USER=app", "-e", f"MARIADB_PASSWORD={user_password}",
        "-p", "127.0.0.1::3306", kind="mariadb",
        files={"/docker-entrypoint-initdb.d/10-table.sql": tmp_path / "10-table.sql"})
    wait_until(container, lambda: docker("exec", container, "healthcheck.sh", "--connect",
                                         "--innodb_initialized", check=False).returncode == 0,
               "healthy (healthcheck.sh --connect --innodb_initialized)")

    # passwords reach the client through the environment of `docker exec`, never its argv
    def sql(query: str, user: str = "root", password: str = root_password, *extra: str) -> str:
        return docker_text("exec", "-e", f"MYSQL_PWD={password}", container, "mariadb", f"-u{user}",
                           "--batch", "--skip-column-names", *extra, "-e", query)

    assert sql("SELECT n FROM shop_db.from_init") == "7", "the initdb.d .sql file ran in MARIADB_DATABASE"
    assert sql("SELECT @@version").startswith("10.11.")
    assert sql("SELECT @@character_set_server") == "utf8mb4"
    assert sql("SELECT count(*) FROM from_init", "app", user_password,
               "--protocol=tcp", "-h127.0.0.1", "shop_db") == "1"
    wrong = docker("exec", "-e", "MYSQL_PWD=wrong", container, "mariadb", "-uroot", "-e", "SELECT 1",
                   check=False)
    assert wrong.returncode != 0 and b"Access denied" in wrong.stderr

    # the server listens on all addresses: the handshake arrives on the port published on the host
    with socket.create_connection(("127.0.0.1", published_port(container, "3306/tcp")), timeout=10) as conn:
        greeting = conn.recv(256)
    assert b"10.11." in greeting and b"MariaDB" in greeting
    assert docker_text("exec", container, "ps", "-o", "user=", "-p", "1") == "mysql"
    assert "10.11" in docker_text("exec", container, "mariadb-dump", "--version")


def test_mariadb_image_refuses_to_start_without_a_root_password_option(staging_images, resources):
    container = resources.create(staging_images["mariadb"], kind="mariadb-nopw")
    code, log = exit_status(container)
    assert code != 0
    assert "MARIADB_ROOT_PASSWORD" in log


# --- the shop ---------------------------------------------------------------------------------------

def test_shop_image_answers_health_on_an_isolated_network(staging_images, resources):
    config = json.loads(docker_text("image", "inspect", "-f", "{{json .Config}}", staging_images["shop"]))
    assert "8080/tcp" in config["ExposedPorts"] and config["Healthcheck"]["Test"]
    assert docker_text("run", "--rm", "--label", TEST_LABEL, staging_images["shop"], "python3", "-c",
                       "import psycopg; print(psycopg.__version__)").startswith("3.")

    # --internal, as a drill's staging network: nothing may need the outside (DNS, a registry, ...)
    network = resources.network("--internal")
    password = secrets.token_hex(12)
    database = resources.create(
        staging_images["postgres"], "--network", network, "--network-alias", "db",
        "-e", f"POSTGRES_PASSWORD={password}", "-e", "POSTGRES_DB=shop", kind="shop-db",
        files={"/docker-entrypoint-initdb.d/10-schema.sql": SHOP_SCHEMA})
    wait_until(database, pg_ready(database), "ready (pg_isready -h 127.0.0.1)")
    shop = resources.create(
        staging_images["shop"], "--network", network,
        "-e", "SHOP_DB_URL=postgresql://postgres@db:5432/shop", "-e", f"SHOP_DB_PASSWORD={password}",
        kind="shop")

    def health() -> dict[str, object] | None:
        result = docker("exec", shop, "python3", "-c",
                        "import urllib.request; print(urllib.request.urlopen("
                        "'http://127.0.0.1:8080/health', timeout=5).read().decode())", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    wait_until(shop, lambda: health() is not None, "answering /health")
    answer = health()
    assert answer is not None and answer["status"] == "ok" and answer["db"] == "ok", answer
    # the image's own HEALTHCHECK (what `docker ps` and drills see) agrees
    wait_until(shop, lambda: docker_text("inspect", "-f", "{{.State.Health.Status}}", shop) == "healthy",
               "healthy (HEALTHCHECK)", timeout=60)
    assert docker_text("exec", shop, "id", "-un") == "shop"
