"""DockerRuntime against the real engine and the locally built staging images.

Restores real dumps into containers (pg_dump custom format from the test cluster, a MariaDB SQL
dump), serves restored files from an app container through `endpoint()`, proves the network
isolation from inside a container, and checks that `down()` / `cleanup()` leave nothing behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backupctl.core import runner
from backupctl.drills.schema import Readiness, Service
from backupctl.errors import ConfigError, JobFailed, SourceError
from backupctl.staging.base import LABEL_DRILL, LABEL_MANAGED
from backupctl.staging.docker import DockerRuntime, cleanup, engine_available
from tests.fixtures.mariadb import MariaDatabase
from tests.fixtures.postgres import EXPECTED_TABLES, PgDatabase
from tests.integration.sources.test_mysql import add_filler, dump_to_file, make_source

Factory = Callable[[], DockerRuntime]

WEB_COMMAND = ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "/srv/files"]
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("connected")
except OSError as error:
    print("failed:", error)
"""
SHOP_DIR = Path(__file__).resolve().parents[3] / "docker" / "shop"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def leftovers(client: Any, run_id: str) -> list[str]:
    selector = {"label": [f"{LABEL_DRILL}={run_id}"]}
    return (
        [c.name for c in client.containers.list(all=True, filters=selector)]
        + [v.name for v in client.volumes.list(filters=selector)]
        + [n.name for n in client.networks.list(filters=selector)]
    )


def count_query(table: str) -> str:
    schema, name = table.split(".", 1)
    return f'SELECT count(*) FROM "{schema}"."{name}"'


def connect_from(runtime: DockerRuntime, service: Service, host: str, port: int) -> str:
    return runtime.exec(service, ["python3", "-c", PROBE, host, str(port)]).output.strip()


def test_engine_available(docker_client: Any) -> None:
    assert engine_available()


def test_postgres_restore_of_a_real_dump(
    docker_runtime: Factory,
    staging_images: dict[str, str],
    pg_database: PgDatabase,
    docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pg_database.connect() as connection:
        # Enough data for several 1 MiB chunks through the exec's stdin.
        connection.execute(
            "CREATE TABLE bulk AS SELECT i, md5(i::text) || md5((-i)::text) AS v "
            "FROM generate_series(1, 150000) i"
        )
        expected = {}
        for table in [*EXPECTED_TABLES, "public.bulk"]:
            row = connection.execute(count_query(table)).fetchone()  # type: ignore[arg-type]
            assert row is not None
            expected[table] = str(row[0])
    monkeypatch.setenv("BACKUPCTL_TEST_STAGING_PG", "staging-pg-secret")
    db = Service(
        name="db",
        kind="postgres",
        image=staging_images["postgres"],
        env={"POSTGRES_PASSWORD": "env:BACKUPCTL_TEST_STAGING_PG", "POSTGRES_DB": "shop"},
    )
    runtime = docker_runtime()
    runtime.start_databases([db])
    dump = runner.start(
        [str(pg_database.cluster.bindir / "pg_dump"), "-Fc", "-d", pg_database.url],
        env={"PGPASSWORD": pg_database.password},
    )
    assert dump.stdout is not None
    try:
        runtime.restore_database(db, "shop", dump.stdout)  # type: ignore[arg-type]  # POSTGRES_DB made it
    finally:
        assert dump.wait() == 0
    for table, count in expected.items():
        assert runtime.sql(db, "shop", count_query(table)).scalar == count, table
    rows = runtime.sql(
        db,
        "shop",
        "SELECT name, length(content) FROM archive.attachments "
        "WHERE name IN ('nul bytes', 'file 1') ORDER BY name",
    ).rows
    assert rows == [["file 1", "32"], ["nul bytes", "3"]]

    with pytest.raises(JobFailed, match="no_such_table"):
        runtime.sql(db, "shop", "SELECT * FROM no_such_table")
    with pytest.raises(SourceError, match="pg_restore"):
        runtime.restore_database(db, "other", io.BytesIO(b"not a dump"))

    # In parallel: spooled inside the container, pg_restore --jobs, the spool removed after.
    dump_file = tmp_path / "shop.pgdump"
    pg_dump = str(pg_database.cluster.bindir / "pg_dump")
    password = {"PGPASSWORD": pg_database.password}
    runner.run([pg_dump, "-Fc", "-d", pg_database.url, "-f", str(dump_file)], env=password)
    size = dump_file.stat().st_size
    with dump_file.open("rb") as stream:
        parallel = runtime.restore_database(db, "parallel", stream, jobs=2, size_hint=size)
    assert (parallel.jobs, parallel.note) == (2, "")
    for table, count in expected.items():
        assert runtime.sql(db, "parallel", count_query(table)).scalar == count, table
    # backupctl's own dumps (-Z0, through a pipe: no data positions in the TOC): the spool's TOC
    # is given them (sources/pg_toc.py) in the exec that runs pg_restore.
    piped = subprocess.run([pg_dump, "-Fc", "-Z0", "-d", pg_database.url], env={**os.environ, **password},
                           check=True, stdout=subprocess.PIPE).stdout  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="backupctl.staging.docker"):
        positioned = runtime.restore_database(db, "positioned", io.BytesIO(piped), jobs=2,
                                              size_hint=len(piped))  # fmt: skip
    assert (positioned.jobs, positioned.note) == (2, "")
    assert "the spool's TOC gets its data positions" in caplog.text
    for table, count in expected.items():
        assert runtime.sql(db, "positioned", count_query(table)).scalar == count, table
    with pytest.raises(SourceError, match="pg_restore"):
        runtime.restore_database(db, "broken", io.BytesIO(b"not a dump"), jobs=2, size_hint=10)
    assert runtime.exec(db, ["sh", "-c", "ls -A /var/tmp"]).output.strip() == ""  # no spool left
    # No room for the spool (a size hint beyond the container's free space): one job, and why.
    with dump_file.open("rb") as stream:
        streamed = runtime.restore_database(db, "streamed", stream, jobs=2, size_hint=1 << 50)
    assert streamed.jobs == 1 and "restored with one job" in streamed.note and "/var/tmp" in streamed.note
    table, count = next(iter(expected.items()))
    assert runtime.sql(db, "streamed", count_query(table)).scalar == count
    info = runtime.info()
    assert info.services["db"] == f"docker exec -it backupctl-{runtime.run_id}-db psql -U postgres"
    assert info.remove == f"backupctl drill cleanup --run {runtime.run_id}"

    container = docker_client.containers.get(f"backupctl-{runtime.run_id}-db")
    anonymous = {m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"}
    runtime.down()
    assert leftovers(docker_client, runtime.run_id) == []
    assert not anonymous & {v.name for v in docker_client.volumes.list()}, (
        "the data volume outlived the drill"
    )
    runtime.down()  # idempotent


MARIADB_DUMP = (
    b"CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), photo BLOB) ENGINE=InnoDB;\n"
    b"INSERT INTO customers VALUES (1, 'caf\xc3\xa9', _binary '\x00\xff\r\n;'),\n"
    b"    (2, 'b', NULL), (3, 'c', '');\n"
    b"DELIMITER ;;\nCREATE PROCEDURE n_customers() BEGIN SELECT COUNT(*) FROM customers; END;;\n"
    b"DELIMITER ;\n"
)


def test_mariadb_restore_of_a_sql_dump(docker_runtime: Factory, staging_images: dict[str, str]) -> None:
    db = Service(
        name="maria",
        kind="mariadb",
        image=staging_images["mariadb"],
        env={"MARIADB_ROOT_PASSWORD": "maria-root-pw"},
    )
    runtime = docker_runtime()
    runtime.start_databases([db])
    runtime.restore_database(db, "legacy", io.BytesIO(MARIADB_DUMP))
    assert runtime.sql(db, "legacy", "SELECT COUNT(*) FROM customers").scalar == "3"
    rows = runtime.sql(db, "legacy", "SELECT HEX(photo), name FROM customers WHERE id = 1").rows
    assert rows == [["00FF0D0A3B", "café"]]
    assert runtime.sql(db, "legacy", "CALL n_customers()").scalar == "3"
    with pytest.raises(SourceError, match="mariadb into maria/broken"):
        runtime.restore_database(db, "broken", io.BytesIO(b"CREATE TABLE t (;\n"))


def test_files_served_by_an_app_through_endpoint(
    docker_runtime: Factory, staging_images: dict[str, str], tmp_path: Path
) -> None:
    tree = tmp_path / "uploads"
    (tree / "products").mkdir(parents=True)
    (tree / "products" / "p1.txt").write_bytes(b"product one\n")
    (tree / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several tar chunks
    (tree / "latest.txt").symlink_to("products/p1.txt")
    web = Service(
        name="web",
        kind="app",
        image=staging_images["base"],
        command=WEB_COMMAND,
        port=8080,
        ready=Readiness.model_validate({"http": "/products/p1.txt", "timeout": "30s"}),
    )
    runtime = docker_runtime()
    runtime.install_files(web, "/srv/files", tree)
    runtime.start_apps([web])
    host, port = runtime.endpoint(web)
    assert port == 8080 and not host.startswith("127.")
    with NO_PROXY.open(f"http://{host}:{port}/latest.txt", timeout=5) as response:
        assert response.read() == b"product one\n"
    with NO_PROXY.open(f"http://{host}:{port}/big.bin", timeout=5) as response:
        assert response.read() == (tree / "big.bin").read_bytes()
    link = runtime.exec(web, ["readlink", "/srv/files/latest.txt"])
    assert (link.exit_code, link.output.strip()) == (0, "products/p1.txt")
    both = runtime.exec(web, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (both.exit_code, sorted(both.output.split())) == (3, ["err", "out"])
    assert runtime.info().services["web"].startswith(f"http://{host}:8080/")
    with pytest.raises(JobFailed, match="before starting it"):
        runtime.install_files(web, "/srv/more", tree)


def test_shop_image_on_a_staging_database(
    docker_runtime: Factory, staging_images: dict[str, str], tmp_path: Path
) -> None:
    """The real app image: placeholders wire it to the database service, uploads come from a volume."""
    image = b"\xff\xd8\xff\xe0 not really a jpeg"
    (tmp_path / "products").mkdir()
    (tmp_path / "products" / "p000001.jpg").write_bytes(image)
    db = Service(name="db", kind="postgres", image=staging_images["postgres"], env={"POSTGRES_DB": "shop"})
    shop = Service(
        name="shop",
        kind="app",
        image=staging_images["shop"],
        port=8080,
        env={
            "SHOP_DB_URL": "postgresql://postgres@${db.host}:${db.port}/shop",
            "SHOP_DB_PASSWORD": "${db.password}",
        },
        ready=Readiness.model_validate({"http": "/health", "timeout": "60s"}),
    )
    runtime = docker_runtime()
    runtime.start_databases([db])
    runtime.sql(db, "shop", (SHOP_DIR / "schema.sql").read_text())
    runtime.sql(db, "shop", "INSERT INTO products (sku, name, price_cents, image_path) "
                            "VALUES ('sku-1', 'one', 100, 'products/p000001.jpg')")  # fmt: skip
    runtime.install_files(shop, "/srv/uploads", tmp_path)
    runtime.start_apps([shop])
    host, port = runtime.endpoint(shop)
    with NO_PROXY.open(f"http://{host}:{port}/health", timeout=10) as response:
        assert json.load(response)["products"] == 1
    with NO_PROXY.open(f"http://{host}:{port}/uploads/products/p000001.jpg", timeout=10) as response:
        assert (response.headers["Content-Type"], response.read()) == ("image/jpeg", image)


def test_staging_network_is_isolated(
    docker_runtime: Factory, staging_images: dict[str, str], docker_client: Any
) -> None:
    db = Service(name="db", kind="postgres", image=staging_images["postgres"])  # password: the drill secret
    web = Service(
        name="web",
        kind="app",
        image=staging_images["base"],
        command=["sleep", "600"],
        env={
            "DB_URL": "postgresql://postgres@${db.host}:${db.port}/postgres",
            "DB_PASSWORD": "${db.password}",
        },
    )
    runtime = docker_runtime()
    runtime.start_databases([db])
    runtime.start_apps([web])
    # A listening peer outside the staging network, on the engine's default bridge.
    outsider = docker_client.containers.run(
        staging_images["base"],
        ["python3", "-m", "http.server", "8000"],
        detach=True,
        labels={LABEL_MANAGED: "1", LABEL_DRILL: runtime.run_id},  # removed with the run
    )
    outsider.reload()
    outsider_ip = outsider.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]

    assert docker_client.networks.get(f"backupctl-{runtime.run_id}").attrs["Internal"] is True
    for name in ("db", "web"):
        container = docker_client.containers.get(f"backupctl-{runtime.run_id}-{name}")
        assert not container.attrs["NetworkSettings"]["Ports"], "staging publishes no port"
    env = runtime.exec(web, ["sh", "-c", 'echo "$DB_URL $DB_PASSWORD"'])
    assert env.output.split() == ["postgresql://postgres@db:5432/postgres", runtime.drill_secret]

    assert connect_from(runtime, web, "db", 5432) == "connected"  # services reach each other by name
    assert connect_from(runtime, web, "1.1.1.1", 443).startswith("failed")  # no internet
    assert connect_from(runtime, web, outsider_ip, 8000).startswith("failed")  # no other network ...
    assert connect_from(runtime, db, outsider_ip, 8000).startswith("failed")
    with NO_PROXY.open(f"http://{outsider_ip}:8000/", timeout=10) as response:
        assert response.status == 200  # ... although that peer listens (the host reaches it)


def test_unknown_placeholder_is_a_config_error(
    docker_runtime: Factory, staging_images: dict[str, str]
) -> None:
    web = Service(name="web", kind="app", image=staging_images["base"], env={"DB": "${nodb.host}"})
    with pytest.raises(ConfigError, match=r"\$\{nodb.host\}"):
        docker_runtime().start_apps([web])


def test_cleanup_finds_leftovers_of_a_killed_run(
    docker_runtime: Factory, staging_images: dict[str, str], docker_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("x")
    idle = Service(name="idle", kind="app", image=staging_images["base"], command=["sleep", "600"])
    killed, other = docker_runtime(), docker_runtime()
    killed.install_files(idle, "/data", tmp_path)
    killed.start_apps([idle])
    other.start_apps([idle])
    # The drill process died here: a fresh process knows only the run id.
    removed = cleanup(None, killed.run_id)
    kinds = sorted(item.split(" ")[0] for item in removed)
    firewall = ["iptables"] if os.geteuid() == 0 else []  # the run's INPUT rule (staging/isolation.py)
    assert kinds == sorted(["container", "network", "volume", *firewall])
    assert leftovers(docker_client, killed.run_id) == []
    assert len(leftovers(docker_client, other.run_id)) == 2, "another run's staging was touched"
    killed.down()  # nothing left: no error
    other.down()
    assert leftovers(docker_client, other.run_id) == []


def test_readiness_timeout_reports_masked_logs(
    docker_runtime: Factory, staging_images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUPCTL_TEST_TOKEN", "token-that-must-not-leak")
    slow = Service(
        name="slow",
        kind="app",
        image=staging_images["base"],
        port=8080,
        command=["sh", "-c", 'echo "starting with $TOKEN"; exec sleep 600'],
        env={"TOKEN": "env:BACKUPCTL_TEST_TOKEN"},
        ready=Readiness.model_validate({"http": "/health", "timeout": "2s"}),
    )
    runtime = docker_runtime()
    with pytest.raises(JobFailed) as failure:
        runtime.start_apps([slow])
    message = str(failure.value)
    assert "'slow' was not ready within 2s" in message
    assert "starting with ********" in message
    assert "token-that-must-not-leak" not in message


def test_mariadb_parallel_load_of_a_real_dump_in_the_container(
    docker_runtime: Factory, staging_images: dict[str, str], mariadb_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    """A mariadb-dump of the awkward fixture database (trigger, view, routines, event, BLOBs),
    loaded over two of the container's clients in small chunks: every row once, the trigger
    fired for none, the spool removed; with no room for the spool, one connection and why."""
    from backupctl.sources import mysql_parallel

    add_filler(mariadb_database)
    dump = tmp_path / "shop.sql"
    facts = dump_to_file(make_source(mariadb_database, monkeypatch), dump)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(spool_dir))
    monkeypatch.setattr(mysql_parallel, "CHUNK_TARGET", 256 << 10)
    chunks: list[int] = []
    original = mysql_parallel.load_chunks

    def counting(chunk_paths: Any, *args: Any) -> None:
        chunks.append(len(chunk_paths))
        original(chunk_paths, *args)

    monkeypatch.setattr(mysql_parallel, "load_chunks", counting)
    db = Service(name="maria", kind="mariadb", image=staging_images["mariadb"],
                 env={"MARIADB_ROOT_PASSWORD": "maria-root-pw"})  # fmt: skip
    runtime = docker_runtime()
    runtime.start_databases([db])
    with dump.open("rb") as stream:
        restored = runtime.restore_database(db, "app", stream, jobs=2, size_hint=dump.stat().st_size)
        assert stream.read() == b""
    assert (restored.jobs, restored.note) == (2, "") and chunks and chunks[0] >= 3, chunks
    assert list(spool_dir.iterdir()) == []
    for table, count in {**facts["row_counts"], "aaa_filler": 4000, "audit_log": 200}.items():
        quoted = "`" + table.replace("`", "``") + "`"
        assert runtime.sql(db, "app", f"SELECT COUNT(*) FROM {quoted}").scalar == str(count), table
    assert runtime.sql(db, "app", "SELECT with_tax(10)").scalar == "12.00"
    assert runtime.sql(db, "app", "SELECT COUNT(*) FROM customer_totals").scalar != "0"
    with pytest.raises(SourceError, match="mariadb into maria/broken"):
        runtime.restore_database(db, "broken", io.BytesIO(b"CREATE TABLE t (;\n"), jobs=2, size_hint=20)
    with dump.open("rb") as stream:
        serial = runtime.restore_database(db, "serial", stream, jobs=2, size_hint=1 << 50)
    assert serial.jobs == 1 and serial.note.startswith("restored with one connection: "), serial.note
    assert runtime.sql(db, "serial", "SELECT COUNT(*) FROM audit_log").scalar == "200"
