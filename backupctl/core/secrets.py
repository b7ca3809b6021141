"""Secret references: `env:NAME`, `file:/path` (0600 or stricter), `cmd:program args`.

Secrets never appear inline in YAML, on a command line, in a log or in a report. Every value
resolved here is registered with the masker, so `mask()` can scrub it from any text we print.

Children get only the secrets they need: `child_environment` (used by core.runner for every
child) withholds every variable an `env:` reference names and every variable whose value is a
resolved secret; a caller hands a child its own secret explicitly (PGPASSWORD for pg_dump, ...).
So the PostgreSQL password never reaches mariadb-dump's environment.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backupctl.errors import SecretError

SCHEMES = ("env", "file", "cmd")
_MASK = "********"


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference; `str()` gives the reference, never the value."""

    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        scheme, sep, target = text.partition(":")
        if not sep or scheme not in SCHEMES or not target.strip():
            raise ValueError(
                "literal secrets are not allowed in policies; refer to the secret instead: "
                "env:NAME, file:/path/to/secret (mode 0600) or cmd:program args"
            )
        if scheme == "file" and not target.startswith("/"):
            raise ValueError(f"file: secret paths must be absolute, got '{target}'")
        if scheme == "env":
            withhold_variable(target.strip())
        return cls(scheme, target.strip())

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    def check(self) -> None:
        """Cheap resolvability check for validation (never runs `cmd:`). Raises SecretError."""
        if self.scheme == "env":
            if self.target not in os.environ:
                raise SecretError(f"environment variable {self.target} is not set")
        elif self.scheme == "file":
            check_secret_file(Path(self.target))

    def resolve(self) -> str:
        """Return the secret value (trailing newline stripped) and register it for masking."""
        if self.scheme == "env":
            if self.target not in os.environ:
                raise SecretError(f"secret env:{self.target}: environment variable is not set")
            value = os.environ[self.target]
        elif self.scheme == "file":
            path = Path(self.target)
            check_secret_file(path)
            value = path.read_text().rstrip("\r\n")
        else:
            value = _run_secret_command(self.target)
        if not value:
            raise SecretError(f"secret {self} is empty")
        register_secret(value)
        return value


def check_secret_file(path: Path) -> None:
    """Refuse secret files that are missing, not regular, or readable by group/others."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except PermissionError:
        raise SecretError(f"secret file {path} is not readable by this user") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"secret file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise SecretError(
            f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must not be accessible by group or others (fix: chmod 600 {path})"
        )


def _run_secret_command(command: str) -> str:
    argv = shlex.split(command)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise SecretError(f"secret command '{argv[0]}' was not found") from None
    except subprocess.TimeoutExpired:
        raise SecretError(f"secret command '{argv[0]}' did not finish within 60s") from None
    if done.returncode != 0:
        # stderr of a secret helper may echo the secret: report only the status.
        raise SecretError(f"secret command '{argv[0]}' exited with status {done.returncode}")
    return done.stdout.rstrip("\r\n")


_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret value so that `mask()` hides it wherever it appears."""
    if len(value) >= 4:
        with _lock:
            _registered.add(value)


_withheld: set[str] = set()


def withhold_variable(name: str) -> None:
    """Keep environment variable `name` (it holds a secret) out of every child's environment."""
    with _lock:
        _withheld.add(name)


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its secrets, plus `extra` (what this child needs).

    Withheld: variables named by `env:` references, and any variable whose value is a
    registered secret (a password exported under another name)."""
    with _lock:
        names = set(_withheld)
        values = set(_registered)
    env = {name: value for name, value in os.environ.items() if name not in names and value not in values}
    if extra:
        env.update(extra)
    return env


def mask(text: str) -> str:
    """Replace every registered secret value in `text` with asterisks."""
    with _lock:
        values = sorted(_registered, key=len, reverse=True)
    for value in values:
        text = text.replace(value, _MASK)
    return text


def mask_url_password(url: str) -> str:
    """Hide the password part of a URL (`scheme://user:pw@host` -> `scheme://user:****@host`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    if ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{_MASK}@{host}"
