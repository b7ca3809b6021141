"""MariaDB restore benchmark (issue #17 item 2), same run, same server, same dump:

- by hand: `mariadb DB < dump.sql` of a plain `mariadb-dump` file (the serial replay everyone runs);
- `backupctl restore --to-db --jobs 1` (one connection, streamed from the encrypted artifact);
- `backupctl restore --to-db` (default `--jobs auto`: structure, then the rows in 8 MiB chunks of
  whole INSERT statements over one connection per CPU, then triggers/views/routines —
  backupctl/sources/mysql_parallel.py).

The database is shop-shaped, not uniform: one large order-items table, orders, customers,
products and a small audit table with a trigger, so the parallel gain shown is what a skewed
schema gets, not the best case. BENCH_MYSQL_ROWS (default 4,000,000 order items, ~200 MiB of
SQL) sets its size. Prints wall time and peak RSS, and the ratios; measured, never asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from backupctl.core.crypto import generate_keys
from backupctl.core.spool import default_jobs
from backupctl.local_cluster.mariadb import LocalMariaDB
from tests.benchmarks.common import BENCH, Measure, measure

SCHEMA = """
CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100), created DATETIME,
    INDEX (email)) ENGINE=InnoDB;
CREATE TABLE products (id INT PRIMARY KEY, sku VARCHAR(40), title VARCHAR(200), price DECIMAL(10,2),
    description TEXT, INDEX (sku)) ENGINE=InnoDB;
CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, placed DATETIME, total DECIMAL(12,2),
    status VARCHAR(20), INDEX (customer_id), INDEX (placed)) ENGINE=InnoDB;
CREATE TABLE order_items (id INT PRIMARY KEY, order_id INT, product_id INT, quantity INT,
    price DECIMAL(10,2), INDEX (order_id), INDEX (product_id)) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT) ENGINE=InnoDB;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (order_id) VALUES (NEW.id);
"""


def seed(server: LocalMariaDB, database: str, items: int) -> None:
    orders, customers, products = items // 4, items // 20, 2000
    server.sql(SCHEMA, database)
    server.sql(
        f"""
        INSERT INTO customers SELECT seq, CONCAT('c', seq, '@example.com'), CONCAT('Customer ', seq),
            '2026-01-01' + INTERVAL seq MINUTE FROM seq_1_to_{customers};
        INSERT INTO products SELECT seq, CONCAT('SKU-', seq), CONCAT('Product ', seq), seq % 500 + 0.99,
            REPEAT(MD5(seq), 8) FROM seq_1_to_{products};
        INSERT INTO orders SELECT seq, 1 + seq % {customers}, '2026-01-01' + INTERVAL seq SECOND,
            seq % 1000 + 0.5, 'paid' FROM seq_1_to_{orders};
        INSERT INTO order_items SELECT seq, 1 + seq % {orders}, 1 + seq % {products}, 1 + seq % 3,
            seq % 200 + 0.99 FROM seq_1_to_{items};
        """,
        database,
    )


def main() -> None:
    items = int(os.environ.get("BENCH_MYSQL_ROWS", "4000000"))
    BENCH.mkdir(exist_ok=True)
    work = BENCH / "mysql"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    server_dir = Path("/tmp/backupctl-bench-mariadb")
    shutil.rmtree(server_dir, ignore_errors=True)
    server_dir.mkdir(mode=0o755)
    keys = generate_keys(work / "state" / "keys")
    jobs = default_jobs()
    print(f"machine: {os.cpu_count()} CPUs, restore jobs (auto) = {jobs}; {items} order items")
    with LocalMariaDB(server_dir) as server:
        server.create_database("shop")
        seed(server, "shop", items)
        env = {
            **os.environ,
            "BENCH_DB_PASSWORD": server.password,
            "NO_COLOR": "1",
            "BACKUPCTL_STATE_DIR": str(work / "state"),
            "BACKUPCTL_POLICIES": str(work / "policies"),
        }
        policy = {
            "name": "mshop",
            "objectives": {"rpo": "24h", "rto": "1h"},
            "encryption": {"recipients": [keys.recipient], "identity": f"file:{keys.identity_file}"},
            "sources": [{"name": "db", "type": "mysql", "host": server.host, "port": server.port,
                         "user": "root", "password": "env:BENCH_DB_PASSWORD", "database": "shop"}],
            "targets": [{"name": "local", "type": "local", "path": str(work / "backups")}],
        }  # fmt: skip
        (work / "policies").mkdir()
        (work / "policies" / "mshop.yaml").write_text(yaml.safe_dump(policy))
        backup = subprocess.run([sys.executable, "-m", "backupctl", "-q", "backup", "mshop"], env=env,
                                capture_output=True, text=True, check=False)  # fmt: skip
        if backup.returncode != 0:
            raise SystemExit(f"backup failed: {backup.stderr[-2000:]}")
        dump_file = work / "shop.sql"
        options = work / "client.cnf"
        options.write_text(f"[client]\npassword={server.password}\n")
        options.chmod(0o600)
        connect = [f"--defaults-extra-file={options}", "--user=root", f"--host={server.host}",
                   f"--port={server.port}"]  # fmt: skip
        with open(dump_file, "wb") as out:
            subprocess.run(["mariadb-dump", *connect, "--single-transaction", "--routines", "--triggers",
                            "shop"], stdout=out, check=True)  # fmt: skip
        print(f"  dump: {dump_file.stat().st_size / 2**20:.0f} MiB of SQL", flush=True)

        runs: dict[str, Measure] = {}
        server.create_database("by_hand")
        runs["by_hand"] = measure(
            "mariadb DB < dump.sql (by hand)",
            ["sh", "-c", f'exec mariadb "$@" by_hand < {dump_file}', "sh", *connect],
            env,
        )
        restore = [sys.executable, "-m", "backupctl", "-q", "restore", "mshop", "latest", "--source", "db",
                   "--db-password", "env:BENCH_DB_PASSWORD", "--to-db"]  # fmt: skip
        server.create_database("serial")
        runs["serial"] = measure(
            "backupctl restore --jobs 1", [*restore, server.url("serial"), "--jobs", "1"], env
        )
        server.create_database("parallel")
        runs["parallel"] = measure(
            f"backupctl restore (default: --jobs auto = {jobs})", [*restore, server.url("parallel")], env
        )
    shutil.rmtree(server_dir, ignore_errors=True)
    hand = runs["by_hand"].seconds
    print("\n| step | wall s | peak RSS MiB |\n|---|---:|---:|")
    for run in runs.values():
        print(f"| {run.label} | {run.seconds:.1f} | {run.peak_rss_kib / 1024:.1f} |")
    print(
        f"\nRatios: restore (parallel) / by hand = {runs['parallel'].seconds / hand:.2f} [< 1.0]; "
        f"restore --jobs 1 / by hand = {runs['serial'].seconds / hand:.2f} [<= 1.1]"
    )


if __name__ == "__main__":
    main()
