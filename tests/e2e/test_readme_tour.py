"""README.md's "A five-minute tour", run line by line exactly as written, in a fresh environment.

Fresh: a private HOME, state dir and working directory (with `.venv` linked to this checkout's),
no BACKUPCTL_* variable but the state dir (root's default is /var/lib); and again as a throwaway
unprivileged user in their own copy of the checkout, after the README's line that makes `.venv`
as that user, with no BACKUPCTL_* variable at all (state under ~/.local/state). Both with a real
PostgreSQL database (the fixture) and a real S3 endpoint (moto) that the example policy reaches
through the variables the README names. Every line must exit 0; the run stops at the first that
does not and names it.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_backup_restore import make_tree
from tests.fixtures.postgres import PgDatabase
from tests.fixtures.s3 import TEST_ENV, new_bucket_name

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[list[str]]:
    """The commands of each ```sh block in the tour's section, comments stripped."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines = []
        for raw in block.splitlines():
            line = raw.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
        blocks.append(lines)
    return blocks


def tour_lines() -> list[str]:
    """The tour itself: the block that backs up."""
    tours = [lines for lines in _blocks() if any(line.startswith("backupctl backup ") for line in lines)]
    assert len(tours) == 1, "README.md: expected one ```sh block with the tour"
    return tours[0]


def setup_lines() -> list[str]:
    """What the README tells a user who cannot use root's `.venv`: the block that makes one."""
    setups = [lines for lines in _blocks() if any("-m venv .venv" in line for line in lines)]
    assert len(setups) == 1, "README.md: expected one ```sh block making .venv as another user"
    return setups[0]


def script_of(lines: list[str], stage: str) -> str:
    """A bash script running `lines` that stops at the first failing one and names it."""
    script = ["set -u"]
    for number, line in enumerate(lines, start=1):
        marker = shlex.quote(f"{stage} LINE {number} FAILED: {line}")
        script.append(f"{line} || {{ rc=$?; echo {marker} exit $rc >&2; exit 1; }}")
    return "\n".join(script)


def tour_env(
    home: Path, uploads: Path, backups: Path, pg: PgDatabase, scratch: PgDatabase, s3: str
) -> dict[str, str]:
    """A fresh environment: no BACKUPCTL_*, AWS_* or PG* of ours, the variables the README names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPCTL_", "AWS_", "PG", "XDG_"))}
    return env | {
        **TEST_ENV,
        "HOME": str(home),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "NO_COLOR": "1",
        "AWS_ENDPOINT_URL_S3": s3,
        "APP_DB_URL": pg.url,
        "APP_DB_PASSWORD": pg.password,
        "APP_UPLOADS_DIR": str(uploads),
        "APP_BACKUP_DIR": str(backups),
        "APP_S3_BUCKET": new_bucket_name(),
        "APP_SCRATCH_URL": scratch.url,
        "PGPASSWORD": scratch.password,  # the scratch database's owner (libpq reads it)
    }


def check_tour(done: subprocess.CompletedProcess[str], uploads: Path, work: Path) -> None:
    assert done.returncode == 0, done.stderr[-6000:] + done.stdout[-3000:]
    assert "app: compliant" in done.stdout and "drill app-default PASSED" in done.stdout, done.stdout[-3000:]
    assert (work / "restored-uploads" / "products" / "p007.jpg").read_bytes() == (
        uploads / "products" / "p007.jpg"
    ).read_bytes()


def test_readme_tour_runs_as_written(
    pg_database: PgDatabase, pg_empty_database: PgDatabase, s3_server: str, tmp_path: Path
) -> None:
    lines = tour_lines()
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    uploads = tmp_path / "uploads"
    make_tree(uploads)
    (tmp_path / "home").mkdir()
    env = tour_env(
        tmp_path / "home", uploads, tmp_path / "backups", pg_database, pg_empty_database, s3_server
    )
    env["BACKUPCTL_STATE_DIR"] = str(tmp_path / "state")  # root's default is /var/lib/backupctl
    done = subprocess.run(["bash", "-c", script_of(lines, "TOUR")], cwd=work, env=env, text=True,
                          capture_output=True, timeout=900, check=False)  # fmt: skip
    check_tour(done, uploads, work)


@pytest.fixture
def operator_user() -> Iterator[tuple[str, Path]]:
    """A throwaway unprivileged system user with its own home (outside root's 0700 directories)."""
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root (CI runs as root)")
    name = f"bkctl-tour-{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    home.rmdir()  # useradd creates it, owned by the user
    subprocess.run(["useradd", "--system", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                    name], check=True, capture_output=True)  # fmt: skip
    try:
        yield name, home
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


_NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".demo",
    "__pycache__",
    "*.egg-info",
    "build",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
)


def test_readme_tour_as_another_user(
    pg_database: PgDatabase, pg_empty_database: PgDatabase, s3_server: str, operator_user: tuple[str, Path]
) -> None:
    """The same tour as an unprivileged user in their own clone, with the README's setup line
    (root's `.venv` may be out of reach) and the non-root defaults: no BACKUPCTL_STATE_DIR, state
    and keys under ~/.local/state/backupctl, nothing in /etc or /var/lib."""
    user, home = operator_user
    work = home / "backupctl"
    shutil.copytree(ROOT, work, ignore=_NOT_IN_A_CLONE, symlinks=True)
    uploads = home / "uploads"
    make_tree(uploads)
    subprocess.run(["chown", "-R", f"{user}:", str(work), str(uploads)], check=True)
    env = tour_env(home, uploads, home / "backups", pg_database, pg_empty_database, s3_server)
    for stage, lines in (("SETUP", setup_lines()), ("TOUR", tour_lines())):
        script = script_of(lines, stage)
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, user=user, text=True,
                              capture_output=True, timeout=900, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-6000:] + done.stdout[-3000:]
    check_tour(done, uploads, work)
    state = home / ".local" / "state" / "backupctl"
    assert (state / "catalog.sqlite").is_file() and any((state / "keys").iterdir())
    assert state.stat().st_uid == pwd.getpwnam(user).pw_uid
