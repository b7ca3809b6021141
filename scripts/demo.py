#!/usr/bin/env python3
"""`make demo`: back up the sample shop with policies/shop.yaml, verify it, restore it, summarise.

Everything lives in .demo/ (state, keys, backups, uploads) plus a throwaway PostgreSQL cluster
under /tmp that is stopped at the end. Run it twice: the second run adds a second snapshot.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
sys.path.insert(0, str(ROOT))

from backupctl.local_cluster.postgres import LocalPostgres  # noqa: E402
from tests.e2e.pgcheck import fingerprints  # noqa: E402


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def run(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a) for a in argv)
    print(f"$ {shown}", flush=True)
    done = subprocess.run(argv, env=env, text=True, capture_output=True, check=False)
    sys.stdout.write(done.stderr)  # log lines first: they happened before the result
    sys.stdout.write(done.stdout)
    if check and done.returncode != 0:
        raise SystemExit(f"demo failed: `{shown}` exited with {done.returncode}")
    return done


def docker_available() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0



def main() -> None:
    started = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    backupctl = [sys.executable, "-m", "backupctl"]
    cluster_dir = Path("/tmp/backupctl-demo-pg")
    subprocess.run(["rm", "-rf", str(cluster_dir)], check=False)
    cluster_dir.mkdir(mode=0o755)

    step("1. start a throwaway PostgreSQL (stands in for the production database)")
    with LocalPostgres(cluster_dir) as cluster:
        backup_password = secrets.token_urlsafe(18)
        cluster.create_role("backup", backup_password)
        cluster.psql("GRANT pg_read_all_data TO backup")
        cluster.psql("DROP DATABASE IF EXISTS shop")
        cluster.psql("DROP DATABASE IF EXISTS shop_scratch")
        cluster.create_database("shop")
        print(f"PostgreSQL {cluster.psql('SHOW server_version').strip()} on 127.0.0.1:{cluster.port}")

        env = {
            **os.environ,
            "NO_COLOR": "1",
            "BACKUPCTL_POLICIES": str(ROOT / "policies"),
            "BACKUPCTL_STATE_DIR": str(DEMO / "state"),
            "BACKUPCTL_KEYS_DIR": str(DEMO / "state" / "keys"),
            "SHOP_DB_URL": cluster.url("shop", "backup"),
            "SHOP_DB_PASSWORD": backup_password,
            "SHOP_UPLOADS_DIR": str(DEMO / "uploads"),
            "SHOP_BACKUP_DIR": str(DEMO / "backups"),
            "DEMO_SUPERUSER_PASSWORD": cluster.password,
            "SHOP_DRILL_PASSWORD": os.environ.get("SHOP_DRILL_PASSWORD") or secrets.token_urlsafe(12),
            "PGPASSWORD": cluster.password,
        }

        step("2. seed the sample shop: database and uploaded images")
        run(
            [
                sys.executable,
                str(ROOT / "docker/shop/seed.py"),
                "--dsn",
                cluster.url("shop", "postgres"),
                "--scale",
                "1",
            ],
            env,
        )
        run(
            [sys.executable, str(ROOT / "docker/shop/uploads.py"), str(DEMO / "uploads"), "--products", "50"],
            env,
        )

        step("3. keys: an age key pair (backups are encrypted to it) and this host's signing key")
        run([*backupctl, "keys", "generate"], env)

        step("4. validate every policy")
        run([*backupctl, "policy", "validate"], env)

        step("5. back up the shop (policies/shop.yaml)")
        run([*backupctl, "backup", "shop"], env)
        run([*backupctl, "snapshots", "shop"], env)

        step("6. verify: signature, sha256 of every artifact, full decrypt + decompress")
        run([*backupctl, "verify", "shop", "latest"], env)

        step("7. restore into a scratch database and a scratch directory, checked against the manifest")
        cluster.create_database("shop_scratch")
        run(
            [
                *backupctl,
                "restore",
                "shop",
                "latest",
                "--source",
                "shop-db",
                "--to-db",
                cluster.url("shop_scratch", "postgres"),
                "--db-password",
                "env:DEMO_SUPERUSER_PASSWORD",
            ],
            env,
        )
        restored_dir = DEMO / "restored-uploads"
        run(
            [
                *backupctl,
                "restore",
                "shop",
                "latest",
                "--source",
                "uploads",
                "--to-dir",
                str(restored_dir),
                "--force",
            ],
            env,
        )

        step("8. drill: restore into disposable staging, log in, fill a cart, pay, reconcile, tear down")
        runtime = "local"
        if docker_available():
            print("Docker engine found: building the staging images (skipped when current)")
            built = subprocess.run(["bash", str(ROOT / "docker" / "build-images.sh")], text=True, check=False)
            runtime = "docker" if built.returncode == 0 else "local"
        reports = DEMO / "reports"
        drilled = run([*backupctl, "drill", str(ROOT / "drills" / "shop.yaml"), "--runtime", runtime,
                       "--report", str(reports)], env, check=False)
        html = sorted(reports.glob("*.html"), key=lambda p: p.stat().st_mtime)

        step("summary")
        import psycopg

        with (
            psycopg.connect(cluster.url("shop", "postgres"), password=cluster.password) as original,
            psycopg.connect(cluster.url("shop_scratch", "postgres"), password=cluster.password) as scratch,
        ):
            before, after = fingerprints(original), fingerprints(scratch)
        equal = sum(1 for table in before if after.get(table) == before[table])
        print(f"tables restored with identical rows and content: {equal}/{len(before)}")
        for table, (rows, _) in sorted(before.items()):
            state = "equal" if after.get(table) == before[table] else "DIFFERENT"
            print(f"  {table:<24} {rows:>8} rows  {state}")
        print(f"backups:   {DEMO / 'backups' / 'shop'}")
        print(f"catalog:   {DEMO / 'state' / 'catalog.sqlite'}")
        print(f"keys:      {DEMO / 'state' / 'keys'} (the identity file is what you keep offline)")
        print(f"restored:  database shop_scratch, files in {restored_dir}")
        print("break-glass without backupctl: see docs/break-glass.md")
        if html:
            verdict = "PASSED" if drilled.returncode == 0 else "FAILED"
            print(f"drill report: {html[-1]}  ({verdict}, {runtime} runtime)")
        print(f"demo finished in {time.monotonic() - started:.1f}s; the throwaway PostgreSQL is stopped now")
        if equal != len(before):
            raise SystemExit("demo failed: the restored database differs")
        if drilled.returncode != 0:
            raise SystemExit("demo failed: the drill did not pass (see the report)")


if __name__ == "__main__":
    main()
