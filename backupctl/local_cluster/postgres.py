"""A throwaway PostgreSQL cluster living in one directory.

    with LocalPostgres(Path("/tmp/backupctl-demo")) as cluster:
        cluster.create_role("shop", password=shop_password)
        cluster.create_database("shop", owner="shop")
        url = cluster.url("shop", user="shop")  # no password in it unless you pass one

Layout of the directory:
  data/                  PGDATA; the Unix socket lives here too (only its owner can reach it)
  postgres.log           server log (its tail is quoted when the server does not start)
  superuser.password     the generated password of the superuser, mode 0600

Authentication: `trust` on the Unix socket, `scram-sha-256` over TCP on 127.0.0.1, so code under
test that connects by URL exercises the password path. The cluster is built for speed, not
durability (fsync off) unless `durable=True`.

PostgreSQL refuses to run as root. When this process is root, the directory is given to the
`postgres` system user (or `run_as`) and initdb/pg_ctl run through `runuser -u <user> --`; every
parent of the directory must then be traversable by that user (e.g. a 0755 directory under /tmp).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from backupctl.core import runner
from backupctl.core.secrets import register_secret
from backupctl.errors import ConfigError, JobFailed

_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_START_ATTEMPTS = 3  # a picked free port can be taken by someone else before the server binds it


def find_postgres_bindir() -> Path:
    """Directory holding initdb, pg_ctl, postgres, psql.

    Tries `pg_config --bindir` first, then the newest /usr/lib/postgresql/<major>/bin.
    Raises ConfigError when no PostgreSQL server binaries are installed.
    """
    try:
        done = runner.run(["pg_config", "--bindir"], check=False, timeout=30)
        candidate = Path(done.stdout.strip())
        if done.returncode == 0 and (candidate / "initdb").is_file():
            return candidate
    except ConfigError:
        pass  # no pg_config on PATH: look in the Debian layout
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").is_file()]

    def major(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    if not found:
        raise ConfigError(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found: install the "
            "'postgresql' package or put pg_config on PATH"
        )
    return max(found, key=major)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (it may be taken later: retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def quote_ident(name: str) -> str:
    """SQL identifier quoting: `a"b` -> `"a""b"`."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """SQL string literal quoting (standard_conforming_strings is on in every supported version)."""
    return "'" + value.replace("'", "''") + "'"


class LocalPostgres:
    """A PostgreSQL cluster in `directory`, created on first `start()`, listening on 127.0.0.1.

    `port` defaults to a free port picked at start; `settings` are extra postgresql.conf
    entries; `run_as` overrides the system user used when running as root.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        bindir: Path | None = None,
        port: int | None = None,
        superuser: str = "postgres",
        run_as: str | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.bindir = bindir or find_postgres_bindir()
        self.superuser = superuser
        self._fixed_port = port
        self.port = port or 0
        self._settings = {**({} if durable else _FAST_SETTINGS), **(settings or {})}
        self.run_as = run_as or ("postgres" if os.geteuid() == 0 else None)
        self._password: str | None = None

    # ------------------------------------------------------------------ paths and state
    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.directory / "superuser.password"

    @property
    def password(self) -> str:
        """The superuser's password (needed over TCP). Raises JobFailed before `init()`."""
        if self._password is None:
            if not self.password_file.is_file():
                raise JobFailed(f"the cluster in {self.directory} has not been initialised")
            self._password = self.password_file.read_text().strip()
            register_secret(self._password)
        return self._password

    def initialized(self) -> bool:
        """Whether `data/` already holds a cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    def running(self) -> bool:
        """Whether the server of this directory is up (`pg_ctl status`)."""
        if not self.initialized():
            return False
        done = runner.run(
            self._as_owner([self._bin("pg_ctl"), "status", "-D", str(self.data_dir)]), check=False
        )
        return done.returncode == 0

    # ------------------------------------------------------------------ lifecycle
    def init(self) -> None:
        """Create the directory (0755) and run initdb in it. Raises JobFailed when initdb fails."""
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        owner = self._owner_ids()
        if owner:
            self._check_traversable()
            os.chown(self.directory, *owner)
        password = secrets.token_urlsafe(18)
        register_secret(password)
        # initdb reads the password from a file: it never appears on a command line.
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if owner:
            os.chown(self.password_file, *owner)
        runner.run(
            self._as_owner(
                [
                    self._bin("initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={self.superuser}",
                    f"--pwfile={self.password_file}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            timeout=300,
        )
        self._password = password
        lines = {
            "listen_addresses": quote_literal(self.host),
            "unix_socket_directories": quote_literal(str(self.socket_dir)),
            **{key: quote_literal(value) for key, value in self._settings.items()},
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# added by backupctl LocalPostgres\n")
            conf.writelines(f"{key} = {value}\n" for key, value in lines.items())

    def start(self) -> None:
        """Initialise when needed and start the server, waiting until it accepts connections.

        Raises JobFailed (with the server log's tail) when it does not come up.
        """
        if not self.initialized():
            self.init()
        if self.running():
            return
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = self._fixed_port or free_port(self.host)
            argv = [
                self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", "60", "-o", f"-p {self.port}",
            ]  # fmt: skip
            try:
                runner.run(self._as_owner(argv), timeout=120)
                return
            except JobFailed as error:
                if attempt == _START_ATTEMPTS or self._fixed_port:
                    raise JobFailed(f"PostgreSQL did not start: {error} | log: {self._log_tail()}") from None

    def stop(self) -> None:
        """Stop the server (fast shutdown) if it runs. Raises JobFailed when pg_ctl fails."""
        if self.running():
            runner.run(
                self._as_owner([self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"]),
                timeout=120,
            )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ using it
    def url(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A TCP URL `postgresql://user[:password]@127.0.0.1:port/database`.

        The password is only included when passed explicitly (`cluster.password` for the superuser).
        """
        credentials = quote(user or self.superuser, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; return unaligned, tuples-only output.

        The SQL goes through stdin, so passwords in it stay off the command line.
        Raises JobFailed on the first SQL error.
        """
        argv = [
            self._bin("psql"), "--no-psqlrc", "--no-align", "--tuples-only", "--quiet",
            "--set=ON_ERROR_STOP=1", f"--host={self.socket_dir}", f"--port={self.port}",
            f"--username={self.superuser}", f"--dbname={database}", "--file=-",
        ]  # fmt: skip
        return runner.run(argv, input_text=sql, timeout=300).stdout

    def create_role(self, name: str, password: str | None = None, *, superuser: bool = False) -> None:
        """Create a login role, optionally with a password (sent over stdin, never argv)."""
        options = " SUPERUSER" if superuser else ""
        if password is not None:
            register_secret(password)
            options += f" PASSWORD {quote_literal(password)}"
        self.psql(f"CREATE ROLE {quote_ident(name)} LOGIN{options};")

    def create_database(self, name: str, owner: str | None = None) -> None:
        """Create a database, owned by `owner` (a role) when given."""
        suffix = f" OWNER {quote_ident(owner)}" if owner else ""
        self.psql(f"CREATE DATABASE {quote_ident(name)}{suffix};")

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, disconnecting its sessions."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE);")

    # ------------------------------------------------------------------ helpers
    def _bin(self, program: str) -> str:
        return str(self.bindir / program)

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        if self.run_as is None:
            return list(argv)
        return [runner.require_tool("runuser", "util-linux"), "-u", self.run_as, "--", *argv]

    def _owner_ids(self) -> tuple[int, int] | None:
        if self.run_as is None:
            return None
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise ConfigError(
                f"running as root, PostgreSQL needs an unprivileged system user '{self.run_as}' "
                "(install the postgresql package, or pass run_as=)"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _check_traversable(self) -> None:
        for parent in self.directory.parents:
            if not parent.stat().st_mode & 0o001:
                raise ConfigError(
                    f"{parent} is not traversable by other users, so '{self.run_as}' cannot reach "
                    f"{self.directory}: use a directory under /tmp, or chmod o+x {parent}"
                )

    def _log_tail(self) -> str:
        try:
            return runner.last_lines(self.log_file.read_text(errors="replace"))
        except OSError:
            return "(no server log)"
