"""What a local backup loads (issue #17: peak RSS <= 100 MiB): a host's first backup to a local
target, SQLite catalog created on the way, imports no library only other targets or commands
need (boto3, paramiko, rich, docker) and not Alembic (catalog/sqlite_schema.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from backupctl.core.crypto import generate_keys

UNWANTED = ("boto3", "botocore", "paramiko", "rich", "docker", "alembic")

_RUN = """
import atexit, json, runpy, sys
unwanted = set(sys.argv[1].split(','))
def report():
    loaded = sorted({m.split('.')[0] for m in sys.modules} & unwanted)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec (here: pytest's own peak)
    with open('/proc/self/status') as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith('VmHWM')) // 1024
    print(json.dumps({'loaded': loaded, 'peak_mib': peak}), file=sys.stderr)
atexit.register(report)
sys.argv = ['backupctl', '-q', 'backup', 'app']
runpy.run_module('backupctl', run_name='__main__')
"""


def test_first_local_backup_loads_nothing_it_does_not_use(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT)")
        connection.executemany("INSERT INTO events (payload) VALUES (?)", [("x" * 200,)] * 5000)
    keys = generate_keys(tmp_path / "state" / "keys")
    policies = tmp_path / "policies"
    policies.mkdir()
    policy = {
        "name": "app",
        "objectives": {"rpo": "24h", "rto": "1h"},
        "encryption": {"recipients": [keys.recipient], "identity": f"file:{keys.identity_file}"},
        "sources": [{"name": "db", "type": "sqlite", "path": str(database)}],
        "targets": [{"name": "local", "type": "local", "path": str(tmp_path / "backups")}],
    }
    (policies / "app.yaml").write_text(yaml.safe_dump(policy))
    env = {**os.environ, "BACKUPCTL_STATE_DIR": str(tmp_path / "state"), "BACKUPCTL_POLICIES": str(policies)}
    assert not (tmp_path / "state" / "catalog.sqlite").exists()
    done = subprocess.run([sys.executable, "-c", _RUN, ",".join(UNWANTED)], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["peak_mib"] <= 100  # (a SQLite source: no psycopg; PostgreSQL measured 95 MiB)
    assert list((tmp_path / "backups" / "app").glob("*/db.*.age"))
