"""`restore --to-container NAME --to-db URL`: pg_restore with the container's own tools.

The counterpart of `container:` dumps (sources/container.py) for PostgreSQL: the URL is the one
inside the container, pg_restore and psql run there through `docker exec -i` (the password in
the docker CLI's environment, handed on with `-e PGPASSWORD`, never on an argv), the stream goes
in on stdin, and the row counts of the result are read with psql for the manifest comparison.
With `--as NAME` the database is created first (it must not exist).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import BinaryIO

from psycopg import sql
from psycopg.conninfo import make_conninfo

from backupctl.core import runner
from backupctl.core.secrets import mask, mask_url_password, register_secret
from backupctl.errors import ConfigError, SourceError
from backupctl.sources.base import RestoreOutcome, RestoreRequest
from backupctl.sources.postgres_sql import TABLES_QUERY, Table, count_query, split_password
from backupctl.sources.restore_as import as_note, check_name

CHUNK = 1 << 20
_TABLES_JSON = f"SELECT coalesce(jsonb_agg(t), '[]') FROM ({TABLES_QUERY}) t"


class _Exec:
    """`docker exec -i [-e PGPASSWORD] CONTAINER ...` with the password in the CLI's environment."""

    def __init__(self, container: str, password: str | None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", container):
            raise ConfigError(f"--to-container: '{container}' is not a container name or id")
        if shutil.which("docker") is None:
            raise ConfigError("--to-container needs the docker CLI on this host")
        self.container = container
        self.env = {**os.environ, "PGPASSWORD": password} if password else None
        self.prefix = ["docker", "exec", "-i", *(["-e", "PGPASSWORD"] if password else []), container]

    def psql(self, url: str, script: str, what: str) -> list[str]:
        argv = [*self.prefix, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", f"--dbname={url}"]
        done = subprocess.run(argv, input=script, env=self.env, capture_output=True, text=True, timeout=3600,
                              check=False)  # fmt: skip
        if done.returncode != 0:
            raise SourceError(f"{what} in container {self.container}: {mask(runner.last_lines(done.stderr))}")
        return done.stdout.splitlines()


def restore_in_container(source: str, stream: BinaryIO, request: RestoreRequest) -> RestoreOutcome:
    """Restore a PostgreSQL dump into `request.container`; SourceError/ConfigError as restore does."""
    assert request.container is not None and request.to_db is not None
    url, url_password = split_password(request.to_db)
    password = request.password or url_password
    if password:
        register_secret(password)
    docker = _Exec(request.container, password)
    if request.as_name:
        check_name(request.as_name)
        literal = sql.Literal(request.as_name).as_string(None)
        if docker.psql(url, f"SELECT 1 FROM pg_database WHERE datname = {literal};\n", "checking --as"):
            raise ConfigError(f"database {request.as_name} already exists in container {request.container}; "
                              "choose another --as name (nothing was changed)")  # fmt: skip
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(request.as_name)).as_string(None)
        docker.psql(url, create + ";\n", "creating the database")
        url = make_conninfo(url, dbname=request.as_name)
    elif json.loads(docker.psql(url, _TABLES_JSON + ";\n", "inspecting the destination")[0]) and not (
        request.clean or request.force
    ):
        raise ConfigError(
            "the destination database already has tables; restore under a new name (--as NEW_NAME)"
        )
    argv = [*docker.prefix, "pg_restore", f"--dbname={url}", "--exit-on-error"]
    argv += ["--clean", "--if-exists"] if request.clean else []
    argv += ["--no-owner", "--no-privileges"] if request.no_owner else []
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=docker.env)  # fmt: skip
    assert process.stdin is not None and process.stderr is not None
    tail = runner.StderrTail(process.stderr)
    try:
        try:
            while chunk := stream.read(CHUNK):
                process.stdin.write(chunk)
            process.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its status says why
        status = process.wait()
    finally:
        runner.stop(process)
    while stream.read(CHUNK):
        pass  # whoever feeds us may hash the whole stream
    if status != 0:
        raise SourceError(f"pg_restore of {source} in container {request.container} exited with {status}: "
                          f"{tail.text()}")  # fmt: skip
    rows = json.loads(docker.psql(url, _TABLES_JSON + ";\n", "listing the restored tables")[0])
    tables = [Table(r["nspname"], r["relname"], r["relkind"], r["relpersistence"], r["pg_table_is_visible"])
              for r in rows]  # fmt: skip
    script = "".join(f"{count_query(table).as_string(None)};\n" for table in tables)
    answers = docker.psql(url, script, "counting restored rows") if tables else []
    counts = {table.key: int(answer) for table, answer in zip(tables, answers, strict=True)}
    shown = (
        f"container {request.container}: {mask(mask_url_password(request.to_db))}{as_note(request.as_name)}"
    )
    return RestoreOutcome(destination=shown, facts={"row_counts": counts})
