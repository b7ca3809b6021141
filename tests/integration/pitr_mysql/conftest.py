"""A MariaDB server with binary logging (ROW, server_id, GTIDs) for the binlog/PITR tests.

`binlog_server` (session): its own LocalMariaDB (the shared `mariadb_server` runs without a
binlog, for speed). `binlog_database` (function): a fresh database with one `orders` table and a
backup user holding exactly the privileges binlog archiving needs (docs/pitr-mysql.md).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.errors import ConfigError
from backupctl.local_cluster.mariadb import LocalMariaDB, find_mariadb_programs, free_port
from tests.fixtures.mariadb import AWKWARD, MariaDatabase, new_database

BINLOG_SETTINGS = {"log-bin": "pitr-bin", "binlog-format": "ROW", "server-id": "11", "log-basename": "pitr",
                   "default-time-zone": "+00:00"}  # fmt: skip
ORDERS_SQL = """CREATE TABLE orders (
    id INT AUTO_INCREMENT PRIMARY KEY,
    label VARCHAR(40) NOT NULL,
    placed DATETIME(6) NOT NULL DEFAULT NOW(6)
) ENGINE=InnoDB;
INSERT INTO orders (label) SELECT CONCAT('seed ', seq) FROM seq_1_to_20;"""
BINLOG_GRANTS = (
    "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON {db}.*",
    "SELECT ON mysql.proc",
    "REPLICATION SLAVE, BINLOG MONITOR, RELOAD ON *.*",
)


@pytest.fixture(scope="session")
def binlog_server() -> Iterator[LocalMariaDB]:
    """A running MariaDB with log_bin, binlog_format=ROW and server_id=11."""
    try:
        programs = find_mariadb_programs()
    except ConfigError as error:
        pytest.skip(f"MariaDB server binaries are not installed: {error}")
    directory = Path(tempfile.mkdtemp(prefix="backupctl-binlog-", dir="/tmp"))
    # A fixed port: a test restarts the server, and the policies written before must still reach it.
    server = LocalMariaDB(directory, programs=programs, port=free_port(), settings=BINLOG_SETTINGS)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def binlog_database(binlog_server: LocalMariaDB) -> Iterator[MariaDatabase]:
    """A fresh database with `orders` (20 rows) and a backup user allowed to archive binlogs."""
    name = new_database(binlog_server, prefix="pitr")
    user, password = f"bl_{uuid.uuid4().hex[:8]}", f"pw{AWKWARD}{secrets.token_urlsafe(12)}"
    binlog_server.sql(ORDERS_SQL, name)
    binlog_server.create_user(user, password, [grant.format(db=f"`{name}`") for grant in BINLOG_GRANTS])
    yield MariaDatabase(binlog_server, name, user, password)
    binlog_server.drop_user(user)
    binlog_server.drop_database(name)
