"""The default drill restores a dump into a staging server of the version it came from: a
PostgreSQL 13 and a MariaDB 10.5 dump (a container of the same image serving as the production
server) are drilled in backupctl/postgres:13 and backupctl/mariadb:10.5, which
docker/build-images.sh builds from Debian bullseye only when named (not by `make images`)."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from typing import Any

import pytest

from tests.fixtures.core import Workspace
from tests.fixtures.docker import BUILD_SCRIPT, BUILD_TIMEOUT

# build-images.sh name -> (image, port, environment, source config for the container's address)
CASES: dict[str, tuple[str, int, dict[str, str], dict[str, Any]]] = {
    "postgres-13": (
        "backupctl/postgres:13", 5432, {"POSTGRES_PASSWORD": "{password}"},
        {"type": "postgres", "url": "postgresql://postgres@127.0.0.1:{port}/postgres"},
    ),
    "mariadb-10.5": (
        "backupctl/mariadb:10.5", 3306, {"MARIADB_ROOT_PASSWORD": "{password}", "MARIADB_DATABASE": "app"},
        {"type": "mysql", "host": "127.0.0.1", "port": "{port}", "user": "root", "database": "app"},
    ),
}  # fmt: skip
SQL = {
    "postgres-13": (
        ["psql", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc"],
        "CREATE TABLE items (id int PRIMARY KEY, label text); "
        "INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 42) i; SHOW server_version;",
    ),
    "mariadb-10.5": (
        ["sh", "-c", 'mariadb -uroot -p"$MARIADB_ROOT_PASSWORD" app -N -e "$1"', "-"],
        "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items SELECT seq, "
        "CONCAT('item ', seq) FROM seq_1_to_42; SELECT VERSION();",
    ),
}


@pytest.fixture(scope="session")
def older_majors(docker_client: Any) -> None:
    """The bullseye base and both images, built by the script only when not current (~60 s cold)."""
    done = subprocess.run(
        [str(BUILD_SCRIPT), *CASES], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode == 2:
        pytest.skip(f"the bullseye images cannot be built here: {output[-500:]}")
    assert done.returncode == 0, output[-3000:]


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_drill_runs_on_the_dumps_major(
    workspace: Workspace, docker_client: Any, older_majors: None, name: str
) -> None:
    image, port, environment, source = CASES[name]
    password = secrets.token_urlsafe(16)
    container = docker_client.containers.run(
        image, name=f"backupctl-test-{name}-{secrets.token_hex(4)}", detach=True,
        environment={key: value.format(password=password) for key, value in environment.items()},
        ports={f"{port}/tcp": ("127.0.0.1", None)}, labels={"backupctl.test": "older-major"},
    )  # fmt: skip
    try:
        argv, sql = SQL[name]
        deadline = time.monotonic() + 90
        while (result := container.exec_run([*argv, sql])).exit_code != 0:  # the server is starting
            assert time.monotonic() < deadline, result.output.decode()[-1000:]
            time.sleep(1)
        version = result.output.decode().split()[-1]
        assert version.startswith(image.rpartition(":")[2] + "."), version
        container.reload()
        host_port = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"]
        config = {key: str(value).format(port=host_port) for key, value in source.items()}
        if "port" in config:
            config["port"] = int(config["port"])  # type: ignore[assignment]
        workspace.env["OLD_PASSWORD"] = password
        workspace.write_policy("old", workspace.base_policy("old", [
            {"name": "old-db", **config, "password": "env:OLD_PASSWORD"}]))  # fmt: skip
        backup = workspace.run("backup", "old")
        assert backup.returncode == 0, backup.stdout[-2000:] + backup.stderr[-2000:]

        done = workspace.run("drill", "old", "--json", timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert f"{image} (the dump's server version)" in done.stderr + done.stdout
        checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
        assert checks["row counts old-db"]["status"] == "passed", checks
    finally:
        container.remove(force=True, v=True)
