"""Hostile input stays cheap and located (issue #13, item 4): the real CLI on alias bombs, huge
files, foreign YAML tags, invalid UTF-8, drills naming what does not exist, a full state disk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.core import Workspace


def _policy(space: Workspace, data: Path) -> dict[str, object]:
    return space.base_policy("app", [{"name": "files", "type": "files", "path": str(data)}])


def _alias_bomb() -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) strings if expanded naively."""
    lines = ["name: app", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{level}: &a{level} [{','.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 10)]
    return "\n".join(lines) + "\n"


def _huge_policy(space: Workspace) -> str:
    """A 10 MB policy that is valid YAML throughout: a real policy plus 10 MB of sources."""
    base = yaml.safe_dump(_policy(space, space.root), sort_keys=False)
    extra = "".join(
        f"  - name: s{index}\n    type: files\n    path: /srv/data/{index:08d}/{'x' * 40}\n"
        for index in range(10 * 1024 * 1024 // 80)
    )
    return base.replace("sources:\n", "sources:\n" + extra, 1)


def _timed(space: Workspace, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float, int]:
    """Run the CLI under /usr/bin/time -v: (result, wall seconds, cpu seconds, max RSS in KB)."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "backupctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **space.env},
        timeout=120,
        check=False,
    )

    def field(name: str) -> str:
        match = re.search(rf"^\s*{re.escape(name)}: (.+)$", done.stderr, re.MULTILINE)
        assert match, done.stderr
        return match.group(1)

    wall_text = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    wall = sum(float(part) * 60**power for power, part in enumerate(reversed(wall_text.split(":"))))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return done, wall, cpu, int(field("Maximum resident set size (kbytes)"))


@pytest.mark.parametrize("kind", ["alias-bomb", "10MB"])
def test_hostile_policy_exit_2_fast_and_small(workspace: Workspace, kind: str) -> None:
    workspace.policies.mkdir(parents=True)
    path = workspace.policies / "app.yaml"
    path.write_text(_alias_bomb() if kind == "alias-bomb" else _huge_policy(workspace))
    for args in (("policy", "validate", str(path)), ("backup", "app")):
        done, wall, cpu, rss_kb = _timed(workspace, *args)
        assert done.returncode == 2, done.stderr
        assert str(path) in done.stderr
        assert "expands to more than" in done.stderr or "limited to" in done.stderr, done.stderr
        # The bound is 2 s: CPU time is what the input costs; wall time gets a margin
        # for a loaded machine. Measured: ~0.8 s CPU, ~50 MB.
        assert cpu < 2.0, (args, cpu)
        assert wall < 10.0, (args, wall)
        assert rss_kb < 100 * 1024, (args, rss_kb)
    assert not workspace.backups.exists()


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: app\nschedule: !!python/name:os.system\n", 2, "could not determine a constructor"),
        ("name: app\nobjectives: !!python/object/apply:os.system ['true']\n", 2, "invalid YAML"),
        ("name: app\nschedule: !custom x\n", 2, "invalid YAML"),
        (b"name: app\n# ok\nschedule: caf\xe9\n", 3, "invalid UTF-8"),
    ],
    ids=["python-name", "python-apply", "unknown-tag", "latin-1"],
)
def test_tags_and_encoding_exit_2_with_line(
    workspace: Workspace, text: str | bytes, line: int, message: str
) -> None:
    workspace.policies.mkdir(parents=True)
    path = workspace.policies / "app.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    for args in (("policy", "validate", str(path)), ("backup", "app")):
        done = workspace.run(*args)
        assert done.returncode == 2, done.stderr
        assert f"{path}:{line}:" in done.stderr, done.stderr
        assert message in done.stderr, done.stderr
        assert "internal error" not in done.stderr


def test_drill_naming_unknown_policy_or_source_has_a_line(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    workspace.write_policy("app", _policy(workspace, data))
    drill = tmp_path / "drill.yaml"
    body = {
        "name": "d",
        "policy": "app",
        "services": [
            {
                "name": "web",
                "kind": "app",
                "image": "x",
                "port": 80,
                "files": [{"source": "filez", "path": "/srv"}],
            }
        ],
    }
    drill.write_text(yaml.safe_dump(body, sort_keys=False))
    done = workspace.run("drill", str(drill))
    assert done.returncode == 2, done.stderr
    source_line = drill.read_text().splitlines().index("  - source: filez") + 1
    assert f"{drill}:{source_line}: at 'services[0].files[0].source'" in done.stderr, done.stderr
    assert "did you mean 'files'" in done.stderr

    drill.write_text(yaml.safe_dump({**body, "policy": "nope"}, sort_keys=False))
    done = workspace.run("drill", str(drill))
    assert done.returncode == 2, done.stderr
    assert f"{drill}:2: at 'policy' no policy named 'nope'" in done.stderr, done.stderr


@pytest.fixture
def full_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the state directory (root mounts it; a real ENOSPC, not a simulation)."""
    mount = tmp_path / "small-state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> None:
    with (directory / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass


def test_full_state_disk_names_the_path(workspace: Workspace, tmp_path: Path, full_state_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello")
    subprocess.run(["cp", "-a", str(workspace.keys), str(full_state_dir / "keys")], check=True)
    workspace.env["BACKUPCTL_STATE_DIR"] = str(full_state_dir)
    workspace.env["BACKUPCTL_KEYS_DIR"] = str(full_state_dir / "keys")
    workspace.write_policy("app", _policy(workspace, data))
    _fill(full_state_dir)

    done = workspace.run("backup", "app")
    assert done.returncode == 1, done.stderr
    assert "internal error" not in done.stderr
    assert str(full_state_dir) in done.stderr, done.stderr
    assert "No space left on device" in done.stderr, done.stderr
    # The lock was released: once there is room again, the next backup works.
    (full_state_dir / "filler").unlink()
    workspace.run("backup", "app", check=True)
