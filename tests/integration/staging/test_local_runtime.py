"""The local staging runtime against real PostgreSQL/MariaDB clusters and real app processes.

Each test makes its own runtime (its own throwaway clusters), as a drill does. The shop test
runs the real docker/shop/app.py on a seeded, pg_dump'ed and restored shop database.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from backupctl.core import runner
from backupctl.drills.schema import Service
from backupctl.errors import ConfigError, JobFailed, SourceError
from backupctl.local_cluster.mariadb import find_mariadb_programs
from backupctl.local_cluster.postgres import LocalPostgres, find_postgres_bindir
from backupctl.staging.local import MARKER, LocalRuntime, cleanup
from tests.fixtures.mariadb import MariaDatabase
from tests.fixtures.postgres import EXPECTED_TABLES, PgDatabase, new_database
from tests.integration.sources.test_mysql import add_filler, dump_to_file, make_source

REPO = Path(__file__).resolve().parents[3]
SHOP = REPO / "docker" / "shop"


def service(**fields: Any) -> Service:
    return Service.model_validate(fields)


def requires(kind: str) -> None:
    """Skip (a failure under BACKUPCTL_TEST_STRICT=1) when the server programs are missing."""
    try:
        find_postgres_bindir() if kind == "postgres" else find_mariadb_programs()
    except ConfigError as error:
        pytest.skip(str(error))


def gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan's zombie waits for init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def pid_in(path: Path) -> int:
    return int(path.read_text().split()[0])


def get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as answer:
        return int(answer.status), answer.read()


def pg_dump(database: PgDatabase, *options: str) -> tuple[subprocess.Popen[bytes], BinaryIO]:
    """A running `pg_dump -Fc` of the database and its output stream."""
    argv = [str(database.cluster.bindir / "pg_dump"), "-Fc", *options, f"--dbname={database.url}"]
    process = runner.start(argv, env={"PGPASSWORD": database.password})
    return process, cast(BinaryIO, process.stdout)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    staging = LocalRuntime(f"test-{uuid.uuid4().hex[:8]}", base_dir=tmp_path)
    yield staging
    staging.down()


def test_postgres_restore_of_a_pg_dump_stream(
    runtime: LocalRuntime, pg_database: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = service(name="db", kind="postgres", image="postgres:15")
    runtime.start_databases([db])
    dump, stream = pg_dump(pg_database)
    runtime.restore_database(db, "shop", stream)
    assert dump.wait() == 0

    with pg_database.connect() as connection:
        for table in EXPECTED_TABLES:
            schema, _, name = table.partition(".")
            query = f'SELECT count(*) FROM "{schema}"."{name}"'
            expected = connection.execute(query).fetchone()[0]  # type: ignore[index]
            assert runtime.sql(db, "shop", query).scalar == str(expected), table
    rows = runtime.sql(db, "shop", "SELECT id, name FROM customers ORDER BY id LIMIT 2").rows
    assert rows == [["1", "customer 1"], ["2", "customer 2"]]

    with pytest.raises(JobFailed, match=r"db/shop.*no_such_table"):
        runtime.sql(db, "shop", "SELECT * FROM no_such_table")
    garbage = io.BytesIO(b"not a dump" * 300_000)
    with pytest.raises(SourceError, match=r"pg_restore exited with status 1.*valid archive"):
        runtime.restore_database(db, "other", garbage)
    assert garbage.tell() == len(garbage.getvalue())  # read to its end all the same

    # In parallel: spooled to a private file under $BACKUPCTL_SPOOL_DIR, removed afterwards.
    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(spools))
    # An uncompressed dump from a pipe, as backupctl's: its TOC gets the data positions.
    dump, stream = pg_dump(pg_database, "-Z0")
    with caplog.at_level(logging.DEBUG, logger="backupctl.spool"):
        restored = runtime.restore_database(db, "parallel", stream, jobs=2, size_hint=1 << 20)
    assert dump.wait() == 0 and (restored.jobs, restored.note) == (2, "")
    assert "spool head rewritten" in caplog.text
    assert runtime.sql(db, "parallel", "SELECT count(*) FROM customers").scalar == runtime.sql(
        db, "shop", "SELECT count(*) FROM customers"
    ).scalar
    assert list(spools.iterdir()) == []

    host, port = runtime.endpoint(db)
    assert host == "127.0.0.1" and port > 0
    described = runtime.info()
    text = json.dumps(described.services) + described.remove
    assert "image postgres:15 is not used" in described.services["db"] and f"-p {port}" in text
    assert LocalPostgres(runtime.work_dir / "db").password not in text
    assert f"--run {runtime.run_id}" in described.remove


def test_mariadb_restore_of_a_sql_dump(runtime: LocalRuntime) -> None:
    requires("mariadb")
    db = service(name="maria", kind="mariadb", image="mariadb:10.11")
    runtime.start_databases([db])
    # Raw NUL and CR bytes in a string literal, as mariadb-dump writes BLOBs with --skip-hex-blob:
    # the client accepts them only in --binary-mode.
    dump = (
        "SET NAMES utf8mb4;\n"
        "CREATE TABLE `odd``name` (id INT PRIMARY KEY, label VARCHAR(20), content LONGBLOB);\n"
        "INSERT INTO `odd``name` VALUES (1, 'caf\u00e9 \U0001f600', 'a\0b\r\nc'), (2, 'two', '');\n"
    ).encode()
    runtime.restore_database(db, "shop", io.BytesIO(dump))
    assert runtime.sql(db, "shop", "SELECT count(*) FROM `odd``name`").scalar == "2"
    assert runtime.sql(db, "shop", "SELECT label, HEX(content) FROM `odd``name` WHERE id = 1").rows == [
        ["caf\u00e9 \U0001f600", "6100620D0A63"]
    ]
    with pytest.raises(SourceError, match=r"mariadb exited with status 1.*syntax"):
        runtime.restore_database(db, "broken", io.BytesIO(b"CREATE TABLE (;\n"))
    assert runtime.exec(db, ["sh", "-c", 'mariadb -uroot -N -e "SELECT 40 + 2"']).output.strip() == "42"


def test_mariadb_parallel_load_of_a_real_dump(
    runtime: LocalRuntime, mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A drill's MariaDB restore on the local runtime loads the data over `jobs` clients of the
    staging cluster (staging/mariadb_load.py): every row once, the trigger fired for none."""
    from backupctl.sources import mysql_parallel

    add_filler(mariadb_database)
    dump = tmp_path / "shop.sql"
    facts = dump_to_file(make_source(mariadb_database, monkeypatch), dump)
    monkeypatch.setattr(mysql_parallel, "CHUNK_TARGET", 256 << 10)
    db = service(name="maria", kind="mariadb", image="mariadb:10.11")
    runtime.start_databases([db])
    with dump.open("rb") as stream:
        restored = runtime.restore_database(db, "app", stream, jobs=2, size_hint=dump.stat().st_size)
        assert stream.read() == b""
    assert (restored.jobs, restored.note) == (2, "")
    for table, count in {**facts["row_counts"], "aaa_filler": 4000, "audit_log": 200}.items():
        quoted = "`" + table.replace("`", "``") + "`"
        assert runtime.sql(db, "app", f"SELECT COUNT(*) FROM {quoted}").scalar == str(count), table
    with pytest.raises(SourceError, match="mariadb into maria/broken"):
        runtime.restore_database(db, "broken", io.BytesIO(b"CREATE TABLE t (;\n"), jobs=2, size_hint=20)


def test_shop_app_on_a_restored_database(
    postgres_cluster: LocalPostgres,
    pg_role: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not (SHOP / "app.py").is_file():
        pytest.skip("docker/shop/app.py is not in this checkout")
    source = new_database(postgres_cluster, pg_role, prefix="shop")
    seed = [sys.executable, str(SHOP / "seed.py"), "--dsn", source.url, "--scale", "1"]
    runner.run(seed, env={"PGPASSWORD": source.password}, timeout=120)
    tree = tmp_path / "scratch" / "tree"
    (tree / "products").mkdir(parents=True)
    (tree / "README.txt").write_text("restored uploads\n")
    monkeypatch.setenv("TEST_SHOP_SECRET", "session-secret-" + uuid.uuid4().hex)
    monkeypatch.setenv("PGHOST", "203.0.113.9")  # the backup host's production server: not inherited

    with socket.socket() as busy:  # the app's configured port is taken: it must move
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        db = service(name="db", kind="postgres", databases=[{"source": "shop-db", "database": "shop"}])
        app = service(
            name="app",
            kind="app",
            command=[sys.executable, "app.py"],  # relative: resolved against the drill file's directory
            port=busy.getsockname()[1],
            env={
                "SHOP_DB_URL": "postgresql://postgres@${db.host}:${db.port}/shop",
                "SHOP_DB_PASSWORD": "${db.password}",
                "SHOP_UPLOADS_DIR": "/srv/uploads",
                "SHOP_PORT": "${app.port}",
                "SHOP_BIND": "${app.bind}",
                "SHOP_SESSION_SECRET": "env:TEST_SHOP_SECRET",
            },
            files=[{"source": "uploads", "path": "/srv/uploads"}],
            ready={"http": "/health", "timeout": "60s"},
        )
        staging = LocalRuntime(f"shop-{uuid.uuid4().hex[:8]}", base_dir=SHOP)
        try:
            staging.start_databases([db])
            dump, stream = pg_dump(source)
            staging.restore_database(db, "shop", stream)
            assert dump.wait() == 0
            staging.install_files(app, "/srv/uploads", tree)
            assert tree.is_dir() and not any(tree.iterdir())  # moved; an empty dir for the caller
            staging.start_apps([app])

            host, port = staging.endpoint(app)
            assert (host, port != busy.getsockname()[1]) == ("127.0.0.1", True)
            status, body = get(f"http://{host}:{port}/health")
            assert status == 200 and json.loads(body)["status"] == "ok"
            assert get(f"http://{host}:{port}/uploads/README.txt") == (200, b"restored uploads\n")
            products = staging.sql(db, "shop", "SELECT count(*) FROM products").scalar
            assert staging.exec(
                db, ["psql", "-d", "shop", "-tAc", "SELECT count(*) FROM products"]
            ).output.strip() == (products)
            seen = staging.exec(
                app, ["sh", "-c", 'echo "$SHOP_UPLOADS_DIR|${PGHOST-unset}|$SHOP_SESSION_SECRET|$PWD"']
            )
            uploads, pghost, secret, cwd = seen.output.strip().split("|")
            assert (Path(uploads) / "README.txt").is_file() and uploads.startswith(str(staging.work_dir))
            assert (pghost, secret, cwd) == ("unset", "********", str(staging.work_dir / "app"))

            app_pid = json.loads((staging.work_dir / MARKER).read_text())["apps"][0]["pid"]
            postmaster = pid_in(staging.work_dir / "db" / "data" / "postmaster.pid")
        finally:
            staging.down()
    assert not staging.work_dir.exists() and gone(app_pid) and gone(postmaster)
    staging.down()  # idempotent
    postgres_cluster.drop_database(source.name)


def test_app_failures_quote_the_app_log(runtime: LocalRuntime) -> None:
    crash = service(
        name="crash", kind="app", command=[sys.executable, "-c", "import sys; sys.exit('bad config')"]
    )
    with pytest.raises(JobFailed, match=r"crash exited with status 1 .*bad config"):
        runtime.start_apps([crash])
    hang = service(
        name="hang",
        kind="app",
        command=[sys.executable, "-c", "import time; print('booting forever', flush=True); time.sleep(600)"],
        ready={"http": "/health", "timeout": "2s"},
    )
    reason = r"hang was not ready \(timeout 2s; last probe: GET /health: .*\).*booting forever"
    with pytest.raises(JobFailed, match=reason):
        runtime.start_apps([hang])
    pid = json.loads((runtime.work_dir / MARKER).read_text())["apps"][1]["pid"]
    assert not gone(pid)
    runtime.down()
    assert gone(pid) and not runtime.work_dir.exists()


def test_app_configuration_errors(runtime: LocalRuntime) -> None:
    with pytest.raises(ConfigError, match="needs its `command`"):
        runtime.start_apps([service(name="app", kind="app", image="shop:latest")])
    with pytest.raises(ConfigError, match=r"a password in `command` would be visible"):
        runtime.start_apps([service(name="app", kind="app", command=["app", "--password=${db.password}"])])
    with pytest.raises(ConfigError, match=r"\$\{db.port\} in env URL of service app: no such value"):
        runtime.start_apps([service(name="app", kind="app", command=["true"], env={"URL": "${db.port}"})])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fixed = service(name="app", kind="app", command=["true"], port=busy.getsockname()[1])
        with pytest.raises(
            ConfigError, match=r"is taken on 127.0.0.1: let the app read its port from \$\{app.port\}"
        ):
            runtime.start_apps([fixed])


def test_static_site_with_a_tcp_readiness_probe(runtime: LocalRuntime, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "index.html").write_text("<p>restored</p>")
    web = service(
        name="web",
        kind="app",
        command=[
            sys.executable,
            "-m",
            "http.server",
            "${web.port}",
            "--bind",
            "${web.bind}",
            "--directory",
            "/srv/site",
        ],
    )
    runtime.install_files(web, "/srv/site/", tree)
    runtime.start_apps([web])
    host, port = runtime.endpoint(web)
    assert get(f"http://{host}:{port}/index.html") == (200, b"<p>restored</p>")
    assert runtime.info().services["web"].startswith(f"http://127.0.0.1:{port}/")


KILLED_DRILL = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from backupctl.drills.schema import Service
    from backupctl.staging.local import LocalRuntime

    runtime = LocalRuntime(sys.argv[1], base_dir=Path.cwd())
    runtime.start_databases([Service(name="db", kind="postgres"), Service(name="maria", kind="mariadb")])
    command = [sys.executable, "-m", "http.server", "${web.port}", "--bind", "${web.bind}"]
    runtime.start_apps([Service(name="web", kind="app", command=command)])
    print(json.dumps(str(runtime.work_dir)), flush=True)
    time.sleep(600)
    """
)


def test_cleanup_removes_what_a_killed_drill_left(tmp_path: Path) -> None:
    requires("postgres")
    requires("mariadb")
    run_id = f"killed-{uuid.uuid4().hex[:8]}"
    drill = subprocess.Popen(
        [sys.executable, "-c", KILLED_DRILL, run_id], cwd=tmp_path, stdout=subprocess.PIPE
    )
    assert drill.stdout is not None
    line = drill.stdout.readline()
    work_dir = Path(json.loads(line)) if line else None
    try:
        assert work_dir is not None, "the drill subprocess did not start its services"
        pids = [
            pid_in(work_dir / "db" / "data" / "postmaster.pid"),
            pid_in(work_dir / "maria" / "mariadb.pid"),
            json.loads((work_dir / MARKER).read_text())["apps"][0]["pid"],
        ]
    finally:
        os.kill(drill.pid, signal.SIGKILL)
        drill.wait()
    assert not any(gone(pid) for pid in pids)  # SIGKILL left them all running

    assert str(work_dir) not in cleanup("another-run")
    assert cleanup(run_id) == [str(work_dir)]
    assert not work_dir.exists() and all(gone(pid) for pid in pids)

    live = LocalRuntime(f"live-{uuid.uuid4().hex[:8]}", base_dir=tmp_path)
    try:
        assert str(live.work_dir) not in cleanup()  # its drill (this process) still runs
        assert live.work_dir.exists()
    finally:
        live.down()
