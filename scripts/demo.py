#!/usr/bin/env python3
"""`make demo`: the product in two minutes — 3-2-1-1-0 on the sample shop.

What it does, all on this machine:
1. starts a throwaway PostgreSQL and seeds the sample shop (database + uploaded images);
2. starts an embedded S3 endpoint (moto's server) that stands in for an off-site provider;
3. writes a demo policy (.demo/policies/shop.yaml: policies/shop.yaml plus an S3 target with
   versioning and object lock, set up by `backupctl target setup`, and a restic repository);
4. backs up, verifies, restores into a scratch database and directory, prints `status`
   (3 copies, 2 media, 1 off-site, 1 immutable, 0 errors);
5. drills from the off-site copy (Docker staging when an engine answers, else local);
6. stops PostgreSQL and the S3 endpoint and prints commands to try next, which work as printed.

Everything lives in .demo/ (or BACKUPCTL_DEMO_DIR). BACKUPCTL_DEMO_RUNTIME=local|docker forces
the drill runtime. Run it twice: the second run adds a second snapshot.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backupctl.local_cluster.postgres import LocalPostgres  # noqa: E402
from tests.e2e.pgcheck import fingerprints  # noqa: E402
from tests.fixtures.s3 import TEST_ENV, MotoServer  # noqa: E402

POLICY = "shop"
BUCKET = "backupctl-demo-offsite"
# moto accepts any credentials; these dummy ones keep boto3 away from a real ~/.aws profile.
DEMO_AWS_ENV = {**TEST_ENV}


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def run(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command, echo it like a shell would, print its log lines then its output."""
    shown = " ".join(shlex.quote(a) for a in argv)
    if argv[:3] == [sys.executable, "-m", "backupctl"]:
        shown = " ".join(["backupctl", *(shlex.quote(a) for a in argv[3:])])
    print(f"$ {shown}", flush=True)
    done = subprocess.run(argv, env=env, text=True, capture_output=True, check=False)
    sys.stdout.write(done.stderr)  # log lines first: they happened before the result
    sys.stdout.write(done.stdout)
    sys.stdout.flush()
    if check and done.returncode != 0:
        raise SystemExit(f"demo failed: `{shown}` exited with {done.returncode}")
    return done


def docker_available() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def secret_file(path: Path, value: str) -> Path:
    """Write a secret to a 0600 file (policies refer to it as `file:PATH`); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(value + "\n")
    return path


def demo_policy(demo: Path, s3_url: str) -> dict[str, Any]:
    """policies/shop.yaml plus an off-site S3 copy (object lock) and a restic repository."""
    policy: dict[str, Any] = yaml.safe_load((ROOT / "policies" / "shop.yaml").read_text())
    policy["drill_file"] = str(ROOT / "drills" / "shop.yaml")
    state = demo / "state"
    policy["sources"][0]["password"] = f"file:{state / 'shop-db-password'}"
    policy["targets"] += [
        {
            "name": "offsite",
            "type": "s3",
            "bucket": BUCKET,
            "prefix": "backups",
            "endpoint_url": s3_url,
            "region": "us-east-1",
            # COMPLIANCE: nobody, not even the account's root, can delete a version for a day.
            "object_lock": {"mode": "COMPLIANCE", "days": 1},
        },
        {
            "name": "dedup",
            "type": "restic",
            "repository": str(demo / "restic"),
            "password": f"file:{state / 'restic-password'}",
            "medium": "disk",
        },
    ]
    return policy


def write_env_file(demo: Path, env: dict[str, str]) -> Path:
    """The shell lines that point `backupctl` at the demo (paths only, no secret values)."""
    names = ["BACKUPCTL_POLICIES", "BACKUPCTL_STATE_DIR", "BACKUPCTL_KEYS_DIR",
             "SHOP_UPLOADS_DIR", "SHOP_BACKUP_DIR", *DEMO_AWS_ENV]  # fmt: skip
    lines = [f"# `. {demo / 'env.sh'}` points backupctl at the demo made by `make demo`"]
    venv_bin = ROOT / ".venv" / "bin"
    if (venv_bin / "backupctl").exists():
        lines.append(f'export PATH={shlex.quote(str(venv_bin))}:"$PATH"')
    lines += [f"export {name}={shlex.quote(env[name])}" for name in names]
    path = demo / "env.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def s3_endpoint(demo: Path) -> Iterator[MotoServer]:
    """moto's S3 server on a free loopback port, stopped (and its buckets gone) on exit."""
    server = MotoServer(demo, env=DEMO_AWS_ENV)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def next_commands(demo: Path, env_file: Path) -> list[str]:
    """Commands that work after the demo, with PostgreSQL and S3 stopped (local + restic copies)."""
    return [
        f". {shlex.quote(str(env_file))}",
        f"backupctl snapshots {POLICY}",
        f"backupctl policy show {POLICY}",
        f"backupctl verify {POLICY} latest --target local",
        f"backupctl verify {POLICY} latest --target dedup",
        f"backupctl restore {POLICY} latest --source uploads --from dedup --to-dir "
        f"{shlex.quote(str(demo / 'from-restic'))} --force",
        "backupctl drills",
    ]


def main() -> None:
    started = time.monotonic()
    demo = Path(os.environ.get("BACKUPCTL_DEMO_DIR") or ROOT / ".demo").resolve()
    demo.mkdir(parents=True, exist_ok=True)
    backupctl = [sys.executable, "-m", "backupctl"]
    # The cluster lives under /tmp (the postgres user must reach it when run as root); one per demo dir.
    suffix = "" if demo == ROOT / ".demo" else "-" + hashlib.sha256(str(demo).encode()).hexdigest()[:8]
    cluster_dir = Path(f"/tmp/backupctl-demo-pg{suffix}")
    subprocess.run(["rm", "-rf", str(cluster_dir)], check=False)
    cluster_dir.mkdir(mode=0o755)
    state = demo / "state"

    step("1. start a throwaway PostgreSQL (stands in for the production database)")
    with LocalPostgres(cluster_dir) as cluster, s3_endpoint(demo) as s3:
        backup_password = secrets.token_urlsafe(18)
        cluster.create_role("backup", backup_password)
        cluster.psql("GRANT pg_read_all_data TO backup")
        cluster.psql("DROP DATABASE IF EXISTS shop")
        cluster.psql("DROP DATABASE IF EXISTS shop_scratch")
        cluster.create_database("shop")
        print(f"PostgreSQL {cluster.psql('SHOW server_version').strip()} on 127.0.0.1:{cluster.port}")
        print(f"S3 endpoint (moto's server, stands in for the off-site provider) on {s3.url}")
        secret_file(state / "shop-db-password", backup_password)
        if not (state / "restic-password").exists():
            secret_file(state / "restic-password", secrets.token_urlsafe(24))
        policies = demo / "policies"
        policies.mkdir(exist_ok=True)
        (policies / f"{POLICY}.yaml").write_text(
            "# Written by `make demo`: policies/shop.yaml plus an S3 copy off-site and a restic copy.\n"
            + yaml.safe_dump(demo_policy(demo, s3.url), sort_keys=False)
        )

        env = {
            **os.environ,
            **DEMO_AWS_ENV,
            "NO_COLOR": "1",
            "BACKUPCTL_POLICIES": str(policies),
            "BACKUPCTL_STATE_DIR": str(state),
            "BACKUPCTL_KEYS_DIR": str(state / "keys"),
            "SHOP_DB_URL": cluster.url("shop", "backup"),
            "SHOP_UPLOADS_DIR": str(demo / "uploads"),
            "SHOP_BACKUP_DIR": str(demo / "backups"),
            "DEMO_SUPERUSER_PASSWORD": cluster.password,
            "SHOP_DRILL_PASSWORD": os.environ.get("SHOP_DRILL_PASSWORD") or secrets.token_urlsafe(12),
            "PGPASSWORD": cluster.password,
        }
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.pop(name, None)

        step("2. seed the sample shop: database and uploaded images")
        scale = os.environ.get("BACKUPCTL_DEMO_SCALE", "1")
        run([sys.executable, str(ROOT / "docker/shop/seed.py"), "--dsn", cluster.url("shop", "postgres"),
             "--scale", scale], env)  # fmt: skip
        run([sys.executable, str(ROOT / "docker/shop/uploads.py"), str(demo / "uploads"), "--products", "50"],
            env)  # fmt: skip

        step("3. keys: an age key pair (backups are encrypted to it) and this host's signing key")
        if (state / "keys" / "age-identity.txt").exists():
            print(f"keys already in {state / 'keys'} (kept: older snapshots are encrypted to them)")
        else:
            run([*backupctl, "keys", "generate"], env)

        step("4. validate the policy and set up the targets: S3 versioning + object lock, restic init")
        run([*backupctl, "policy", "validate"], env)
        run([*backupctl, "target", "setup", POLICY, "offsite"], env)
        run([*backupctl, "target", "setup", POLICY, "dedup"], env)

        step("5. back up the shop to three targets: local disk, S3 off-site (locked), restic")
        run([*backupctl, "backup", POLICY], env)
        run([*backupctl, "snapshots", POLICY], env)

        step("6. verify the off-site copy: signature, sha256 of every artifact, full decrypt + decompress")
        run([*backupctl, "verify", POLICY, "latest", "--target", "offsite"], env)

        step("7. status: the 3-2-1-1-0 rule read from the real targets")
        run([*backupctl, "status", POLICY], env)

        step("8. restore into a scratch database and a scratch directory, checked against the manifest")
        cluster.create_database("shop_scratch")
        run([*backupctl, "restore", POLICY, "latest", "--source", "shop-db",
             "--to-db", cluster.url("shop_scratch", "postgres"),
             "--db-password", "env:DEMO_SUPERUSER_PASSWORD"], env)  # fmt: skip
        restored_dir = demo / "restored-uploads"
        run([*backupctl, "restore", POLICY, "latest", "--source", "uploads", "--to-dir", str(restored_dir),
             "--force"], env)  # fmt: skip

        step("9. drill from the off-site copy: restore into disposable staging, log in, pay, tear down")
        runtime = os.environ.get("BACKUPCTL_DEMO_RUNTIME", "")
        if not runtime:
            runtime = "local"
            if docker_available():
                print("Docker engine found: building the staging images (skipped when current)")
                build = ["bash", str(ROOT / "docker" / "build-images.sh")]
                built = subprocess.run(build, text=True, check=False)
                runtime = "docker" if built.returncode == 0 else "local"
        reports = demo / "reports"
        drilled = run([*backupctl, "drill", str(ROOT / "drills" / "shop.yaml"), "--from", "offsite",
                       "--runtime", runtime, "--report", str(reports)], env, check=False)  # fmt: skip
        html = sorted(reports.glob("*.html"), key=lambda p: p.stat().st_mtime)

        step("summary")
        import psycopg

        with (
            psycopg.connect(cluster.url("shop", "postgres"), password=cluster.password) as original,
            psycopg.connect(cluster.url("shop_scratch", "postgres"), password=cluster.password) as scratch,
        ):
            before, after = fingerprints(original), fingerprints(scratch)
    subprocess.run(["rm", "-rf", str(cluster_dir)], check=False)  # stopped: its data was throwaway
    equal = sum(1 for table in before if after.get(table) == before[table])
    print(f"tables restored with identical rows and content: {equal}/{len(before)}")
    for table, (rows, _) in sorted(before.items()):
        mark = "equal" if after.get(table) == before[table] else "DIFFERENT"
        print(f"  {table:<24} {rows:>8} rows  {mark}")
    print(f"copies:    {demo / 'backups' / POLICY} (local), s3://{BUCKET}/backups (off-site, stopped now), "
          f"{demo / 'restic'} (restic)")  # fmt: skip
    print(f"catalog:   {state / 'catalog.sqlite'}")
    print(f"keys:      {state / 'keys'} (the identity file is what you keep offline)")
    print(f"restored:  database shop_scratch, files in {restored_dir}")
    print("break-glass without backupctl: see docs/break-glass.md")
    if html:
        verdict = "PASSED" if drilled.returncode == 0 else "FAILED"
        print(f"drill report: {html[-1]}  ({verdict}, {runtime} runtime, from the off-site copy)")
    elapsed = time.monotonic() - started
    print(f"demo finished in {elapsed:.1f}s; the throwaway PostgreSQL and S3 are stopped now")
    env_file = write_env_file(demo, env)
    print("\nTry next (the local and restic copies are still here):")
    for line in next_commands(demo, env_file):
        print(f"  {line}")
    if equal != len(before):
        raise SystemExit("demo failed: the restored database differs")
    if drilled.returncode != 0:
        raise SystemExit("demo failed: the drill did not pass (see the report)")


if __name__ == "__main__":
    main()
