"""Databases running in Docker containers (the locally built backupctl/postgres:15 and
backupctl/mariadb:10.11, same conventions as the official images), dumped with the container's
own tools through the engine (`container: NAME`), with the same integrity facts; then restored
into a new database on the same server (`--as`, through the published port, and through
the engine with `--to-container` for both) and compared with the manifest's row counts."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.core import Workspace

PASSWORD = "container-test-pw"


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def wait_for(container: str, probe: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probed = subprocess.run(["docker", "exec", container, *probe], capture_output=True, check=False)
        if probed.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"{container} not ready: {docker('logs', '--tail', '30', container, check=False)}")


@pytest.fixture
def container(staging_images: dict[str, str]) -> Iterator[Any]:
    started: list[str] = []

    def start(kind: str, env: dict[str, str], port: int) -> tuple[str, str]:
        name = f"bkctl-op-{kind}-{uuid.uuid4().hex[:8]}"
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        docker("run", "-d", "--name", name, "-p", f"127.0.0.1::{port}", *env_args, staging_images[kind])
        started.append(name)
        published = docker("port", name, str(port)).splitlines()[0]  # 127.0.0.1:49153
        return name, published

    yield start
    for name in started:
        docker("rm", "-f", "-v", name, check=False)


def test_postgres_in_a_container(workspace: Workspace, container: Any) -> None:
    name, published = container("postgres", {"POSTGRES_PASSWORD": PASSWORD}, 5432)
    wait_for(name, ["pg_isready", "-U", "postgres", "-h", "127.0.0.1"])
    docker("exec", name, "psql", "-U", "postgres", "-c", "CREATE DATABASE shop")
    docker("exec", name, "psql", "-U", "postgres", "-d", "shop", "-c",
           "CREATE TABLE items (id serial PRIMARY KEY, name text); "
           "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 321) g")  # fmt: skip
    workspace.env["CT_PG_PASSWORD"] = PASSWORD
    source = {"name": "db", "type": "postgres", "container": name,
              "url": "postgresql://postgres@localhost/shop", "password": "env:CT_PG_PASSWORD"}  # fmt: skip
    workspace.write_policy("app", workspace.base_policy("app", [source]))
    result = workspace.run_json("backup", "app")
    facts = result["sources"]["db"]["facts"]
    assert result["status"] == "complete"
    assert facts["row_counts"] == {"public.items": 321} and facts["dumped_on"] == f"container {name}"
    assert facts["server_version"].startswith("15") and facts["pg_dump_version"].startswith("15")
    assert workspace.run_json("verify", "app", "latest")[0]["ok"]

    done = workspace.run("restore", "app", "latest", "--source", "db", "--to-db",
                         f"postgresql://postgres@{published}/postgres", "--as", "shop_copy",
                         "--db-password", "env:PW", env={"PW": PASSWORD})  # fmt: skip
    assert done.returncode == 0, done.stderr
    copied = docker("exec", name, "psql", "-U", "postgres", "-d", "shop_copy", "-At", "-c",
                    "SELECT count(*), max(name) FROM items")  # fmt: skip
    assert copied == "321|item 99"

    # Through the engine: pg_restore and psql inside the container, the URL as seen inside it.
    done = workspace.run("restore", "app", "latest", "--source", "db", "--to-container", name,
                         "--to-db", "postgresql://postgres@localhost/postgres", "--as", "shop_engine",
                         "--db-password", "env:PW", env={"PW": PASSWORD})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "row counts equal the manifest" in done.stdout and f"container {name}" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    copied = docker("exec", name, "psql", "-U", "postgres", "-d", "shop_engine", "-At", "-c",
                    "SELECT count(*) FROM items")  # fmt: skip
    assert copied == "321"


def test_mariadb_in_a_container(workspace: Workspace, container: Any) -> None:
    name, published = container(
        "mariadb", {"MARIADB_ROOT_PASSWORD": PASSWORD, "MARIADB_DATABASE": "shop",
                    "MARIADB_INITDB_SKIP_TZINFO": "1"}, 3306)  # fmt: skip
    # Over TCP: the entrypoint's temporary init server listens on the socket only
    # (--skip-networking) and stops before the real one starts; a socket probe can pass in
    # that gap and the next command then finds no server.
    wait_for(name, ["mariadb", f"--password={PASSWORD}", "-uroot", "--protocol=tcp", "-h", "127.0.0.1",
                    "-e", "SELECT 1"])  # fmt: skip
    docker("exec", name, "mariadb", f"--password={PASSWORD}", "-uroot", "shop", "-e",
           "CREATE TABLE items (id INT PRIMARY KEY AUTO_INCREMENT, name TEXT); "
           "INSERT INTO items (name) SELECT CONCAT('item ', seq) FROM seq_1_to_123; "
           "CREATE VIEW named AS SELECT name FROM items")  # fmt: skip
    workspace.env["CT_MY_PASSWORD"] = PASSWORD
    source = {"name": "db", "type": "mysql", "container": name, "host": "localhost", "user": "root",
              "password": "env:CT_MY_PASSWORD", "database": "shop"}  # fmt: skip
    workspace.write_policy("app", workspace.base_policy("app", [source]))
    result = workspace.run_json("backup", "app")
    facts = result["sources"]["db"]["facts"]
    assert result["status"] == "complete"
    assert facts["row_counts"] == {"items": 123}, facts
    assert workspace.run_json("verify", "app", "latest")[0]["ok"]

    done = workspace.run("restore", "app", "latest", "--source", "db", "--to-db",
                         f"mysql://root@{published}/shop", "--as", "shop_copy",
                         "--db-password", "env:PW", env={"PW": PASSWORD})  # fmt: skip
    assert done.returncode == 0, done.stderr
    copied = docker("exec", name, "mariadb", f"--password={PASSWORD}", "-uroot", "shop_copy", "-N", "-e",
                    "SELECT COUNT(*) FROM named")  # fmt: skip
    assert copied == "123"

    # Through the engine: the container's own mariadb client, the URL as seen inside it.
    done = workspace.run("restore", "app", "latest", "--source", "db", "--to-container", name,
                         "--to-db", "mysql://root@localhost/shop", "--as", "shop_engine",
                         "--db-password", "env:PW", env={"PW": PASSWORD})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "row counts equal the manifest" in done.stdout and f"container {name}" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    copied = docker("exec", name, "mariadb", f"--password={PASSWORD}", "-uroot", "shop_engine", "-N", "-e",
                    "SELECT COUNT(*), MAX(name) FROM items; SELECT COUNT(*) FROM named")  # fmt: skip
    assert copied.split() == ["123", "item", "99", "123"], copied

    # --as refuses a database that exists, and changes nothing.
    done = workspace.run("restore", "app", "latest", "--source", "db", "--to-container", name,
                         "--to-db", "mysql://root@localhost/shop", "--as", "shop_engine",
                         "--db-password", "env:PW", env={"PW": PASSWORD})  # fmt: skip
    assert done.returncode != 0 and "already exists" in done.stderr, done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
