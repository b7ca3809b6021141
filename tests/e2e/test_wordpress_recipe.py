"""The shipped WordPress recipe end to end: a WordPress 6.1 (Debian's packages) on MariaDB is
installed through its own installer, backed up (MariaDB + wp-content with Debian's absolute
symlinks) and drilled in Docker with drills/wordpress.yaml: every check of the recipe passes."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.core import Workspace

ROOT = Path(__file__).resolve().parents[2]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Site:
    db_ip: str
    url: str
    password: str
    content: Path
    media: bytes


def wait_for(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with NO_PROXY.open(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def container_ip(name: str, network: str) -> str:
    done = subprocess.run(
        ["docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', name],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def site(workspace: Workspace, staging_images: dict[str, str]) -> Iterator[Site]:
    """'Production': MariaDB + WordPress containers on an ordinary network, installed by
    WordPress' own installer over HTTP; wp-content copied out to the host (the files source)."""
    prefix = f"bctl-wptest-{secrets.token_hex(3)}"
    network, db, app = prefix, f"{prefix}-db", f"{prefix}-app"
    password = secrets.token_urlsafe(12)
    subprocess.run(["docker", "network", "create", network], check=True, capture_output=True)
    try:
        subprocess.run(
            ["docker", "run", "-d", "--name", db, "--network", network, "--network-alias", "db",
             "-e", "MARIADB_ROOT_PASSWORD", "-e", "MARIADB_DATABASE=wordpress", staging_images["mariadb"]],
            check=True, capture_output=True, env={**os.environ, "MARIADB_ROOT_PASSWORD": password},
        )  # fmt: skip
        subprocess.run(
            ["docker", "run", "-d", "--name", app, "--network", network, "-e", "WORDPRESS_DB_HOST=db:3306",
             "-e", "WORDPRESS_DB_USER=root", "-e", "WORDPRESS_DB_PASSWORD",
             "-e", "WORDPRESS_DB_NAME=wordpress", staging_images["wordpress"]],
            check=True, capture_output=True, env={**os.environ, "WORDPRESS_DB_PASSWORD": password},
        )  # fmt: skip
        url = f"http://{container_ip(app, network)}"
        wait_for(f"{url}/wp-login.php")
        form = {"weblog_title": "Drill Blog", "user_name": "drill", "admin_password": password,
                "admin_password2": password, "pw_weak": "1", "admin_email": "drill@example.com",
                "blog_public": "0"}  # fmt: skip
        deadline = time.monotonic() + 90
        while True:  # the installer needs the database; MariaDB may still be initialising
            request = urllib.request.Request(
                f"{url}/wp-admin/install.php?step=2", urllib.parse.urlencode(form).encode(), method="POST"
            )
            try:
                with NO_PROXY.open(request, timeout=60) as answer:
                    page = answer.read().decode()
            except urllib.error.HTTPError as error:  # 500 while the database is not up yet
                page = error.read().decode(errors="replace")
            if "Success!" in page or "Already Installed" in page:
                break
            assert time.monotonic() < deadline, page[-2000:]
            time.sleep(2)
        content = workspace.root / "wp-content"
        subprocess.run(["docker", "cp", f"{app}:/var/lib/wordpress/wp-content", str(content)], check=True)
        media = hashlib.sha256(b"drill").digest() * 1000  # 32 kB of "image"
        (content / "uploads" / "2026").mkdir(parents=True, exist_ok=True)
        (content / "uploads" / "2026" / "drill.png").write_bytes(media)
        yield Site(container_ip(db, network), url, password, content, media)
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", db, app], capture_output=True, check=False)
        subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)


def test_wordpress_backed_up_and_drilled_with_the_recipe(workspace: Workspace, site: Site) -> None:
    started = time.monotonic()
    policy = workspace.base_policy(
        "wordpress",
        [
            {"name": "wordpress-db", "type": "mysql", "host": site.db_ip, "port": 3306, "user": "root",
             "password": "env:WORDPRESS_DB_PASSWORD", "database": "wordpress"},
            {"name": "wp-content", "type": "files", "path": str(site.content), "symlinks": "keep"},
        ],
    )  # fmt: skip
    workspace.write_policy("wordpress", policy)
    workspace.env.update({
        "WORDPRESS_DB_PASSWORD": site.password, "WP_DRILL_PASSWORD": site.password,
        "WP_MEDIA_PATH": "2026/drill.png", "WP_MEDIA_SHA256": hashlib.sha256(site.media).hexdigest(),
    })  # fmt: skip
    done = workspace.run("backup", "wordpress")
    assert done.returncode == 0, done.stdout + done.stderr
    # Debian's bundled plugins are absolute symlinks: kept as links, and the backup says so.
    assert "leads outside the tree; kept as a link" in done.stdout + done.stderr

    drill = workspace.root / "drills" / "wordpress.yaml"
    drill.parent.mkdir()
    shutil.copy(ROOT / "drills" / "wordpress.yaml", drill)
    done = workspace.run("drill", str(drill), "--json", timeout=600)
    outcome = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    statuses = {check["name"]: check["status"] for check in outcome["checks"]}
    for name in ("home-page", "login-dashboard", "media-file", "published-posts", "woocommerce-orders"):
        assert statuses[name] == "passed", outcome["checks"]
    woo = next(check for check in outcome["checks"] if check["name"] == "woocommerce-orders")
    assert woo["detail"].startswith("not applicable")  # no WooCommerce in Debian: its check says so
    stages = [stage["name"] for stage in outcome["stages"]]
    assert "post-restore staging-url" in stages
    print(f"wordpress recipe: backup + drill in {time.monotonic() - started:.0f}s")
