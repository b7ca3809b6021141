"""A throwaway MariaDB server living in one directory.

    with LocalMariaDB(Path("/tmp/backupctl-demo")) as server:
        server.create_database("shop")
        server.create_user("shop", shop_password, ["ALL PRIVILEGES ON `shop`.*"])
        url = server.url("shop", user="shop")  # mysql://shop@127.0.0.1:<port>/shop, no password

Layout of the directory:
  data/                 the data directory (mariadb-install-db)
  mariadb.sock          Unix socket; mariadb.pid, mariadb.log (server log, quoted on failure)
  port                  the TCP port of the running server, so another process can find it
  root.password         root's generated password, mode 0600; written once root is secured

Accounts: root@localhost only (the other root accounts and anonymous ones that
mariadb-install-db creates are dropped), with a password, so code under test that connects over
TCP (127.0.0.1, which MariaDB treats as `localhost`) exercises the password path. Users made with
`create_user` default to `@localhost` too. Built for speed (no doublewrite, log flushed once a
second, no binary log) unless `durable=True`; `settings={"log-bin": ...}` turns the binary log
on (binlog tests).

As root, mariadbd drops privileges to `run_as` (default: the `mysql` system user when it exists,
else it runs as root with --user=root); every parent of the directory must then be traversable
by that user (e.g. a 0755 directory under /tmp).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from backupctl.core import runner
from backupctl.core.secrets import register_secret
from backupctl.errors import ConfigError, JobFailed
from backupctl.sources.mysql import password_options, quote_identifier, quote_string

_FAST_SETTINGS = {"innodb-doublewrite": "0", "innodb-flush-log-at-trx-commit": "0"}
_START_ATTEMPTS = 3  # a picked free port can be taken by someone else before the server binds it
_START_TIMEOUT = 60.0
_SERVER_DIRS = ("/usr/sbin", "/usr/libexec", "/usr/local/sbin", "/usr/local/libexec")


@dataclass(frozen=True)
class MariaDBPrograms:
    """Absolute paths of the server, installer, client and admin programs."""

    server: str
    install_db: str
    client: str
    admin: str


def find_mariadb_programs() -> MariaDBPrograms:
    """Locate mariadbd (or mysqld), mariadb-install-db, mariadb and mariadb-admin.

    Server programs are also looked for in the sbin/libexec directories, which are often not
    on a non-root PATH. Raises ConfigError naming what is missing.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SERVER_DIRS])

    def first(*names: str) -> str:
        for name in names:
            if found := shutil.which(name, path=search):
                return found
        raise ConfigError(
            f"MariaDB program '{names[0]}' was not found: install the 'mariadb-server' and "
            "'mariadb-client' packages"
        )

    return MariaDBPrograms(
        server=first("mariadbd", "mysqld"),
        install_db=first("mariadb-install-db", "mysql_install_db"),
        client=first("mariadb", "mysql"),
        admin=first("mariadb-admin", "mysqladmin"),
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (it may be taken later: retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class LocalMariaDB:
    """A MariaDB server in `directory`, created on first `start()`, listening on 127.0.0.1.

    `port` defaults to a free port picked at start; `settings` are extra server options
    (`{"max-allowed-packet": "64M"}`); `run_as` overrides the system user used as root.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        programs: MariaDBPrograms | None = None,
        port: int | None = None,
        run_as: str | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.programs = programs or find_mariadb_programs()
        self._fixed_port = port
        self.port = port or 0
        self._settings = {**({} if durable else _FAST_SETTINGS), **(settings or {})}
        self.run_as = run_as or self._default_user()
        self._password: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ paths and state
    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_path(self) -> Path:
        return self.directory / "mariadb.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "mariadb.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "mariadb.log"

    @property
    def password_file(self) -> Path:
        return self.directory / "root.password"

    @property
    def password(self) -> str:
        """root's password (needed over TCP). Raises JobFailed before the first `start()`."""
        if self._password is None:
            if not self.password_file.is_file():
                raise JobFailed(f"the server in {self.directory} has not been started yet")
            self._password = self.password_file.read_text().strip()
            register_secret(self._password)
        return self._password

    def initialized(self) -> bool:
        """Whether `data/` already holds the system tables."""
        return (self.data_dir / "mysql").is_dir()

    def running(self) -> bool:
        """Whether the server of this directory is up (its pid file names a live mariadbd)."""
        pid = self._pid()
        return pid is not None and _is_server(pid)

    # ------------------------------------------------------------------ lifecycle
    def init(self) -> None:
        """Create the directory (0755) and the system tables. Raises JobFailed on failure."""
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        if self.run_as is not None and self.run_as != "root":
            self._check_traversable()
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        user = [f"--user={self.run_as}"] if self.run_as else []
        runner.run(
            [
                self.programs.install_db, "--no-defaults", f"--datadir={self.data_dir}", *user,
                "--auth-root-authentication-method=normal", "--skip-test-db",
            ],
            timeout=300,
        )  # fmt: skip

    def start(self) -> None:
        """Initialise when needed, start the server and wait until it accepts connections.

        The first start gives root a generated password. Raises JobFailed (with the server
        log's tail) when the server does not come up.
        """
        if not self.initialized():
            self.init()
        if self.running():
            self.port = int((self.directory / "port").read_text())
            return
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = self._fixed_port or free_port(self.host)
            if self._spawn():
                break
            if (
                attempt == _START_ATTEMPTS
                or self._fixed_port
                or "Address already in use" not in self._log_tail()
            ):
                raise JobFailed(f"MariaDB did not start: {self._log_tail()}")
        (self.directory / "port").write_text(f"{self.port}\n")
        if not self.password_file.is_file():
            self._secure_root()

    def stop(self) -> None:
        """Shut the server down (SIGTERM: a clean InnoDB shutdown) and wait until it is gone."""
        pid = self._pid()
        if pid is None or not _is_server(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _START_TIMEOUT
        while _is_server(pid) and time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.05)
        if _is_server(pid):
            os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait()
            self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ using it
    def url(self, database: str, user: str = "root", password: str | None = None) -> str:
        """A TCP URL `mysql://user[:password]@127.0.0.1:port/database`.

        The password is only included when passed explicitly (`server.password` for root).
        """
        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"mysql://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    def sql(self, text: str, database: str | None = None) -> str:
        """Run SQL as root over the Unix socket; return the tab-separated output, no headers.

        The SQL goes through stdin and the password through an inherited pipe, so neither is
        on a command line; no option file of the calling user is read. Raises JobFailed on the
        first SQL error.
        """
        return self._client(text, database, self.password)

    def create_database(self, name: str, charset: str = "utf8mb4") -> None:
        """Create a database with the given default character set."""
        self.sql(f"CREATE DATABASE {quote_identifier(name)} CHARACTER SET {charset};")

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists."""
        self.sql(f"DROP DATABASE IF EXISTS {quote_identifier(name)};")

    def create_user(
        self, name: str, password: str, grants: Sequence[str] = (), host: str = "localhost"
    ) -> None:
        """Create `name@host` with a password and run `GRANT <grant> TO` it for each grant.

        A grant is privileges and object, e.g. "SELECT, SHOW VIEW ON `shop`.*". The password
        goes through stdin and is registered for masking.
        """
        register_secret(password)
        account = f"{quote_string(name)}@{quote_string(host)}"
        statements = [f"CREATE USER {account} IDENTIFIED BY {quote_string(password)};"]
        statements += [f"GRANT {grant} TO {account};" for grant in grants]
        self.sql("\n".join(statements))

    def drop_user(self, name: str, host: str = "localhost") -> None:
        """Drop `name@host` if it exists."""
        self.sql(f"DROP USER IF EXISTS {quote_string(name)}@{quote_string(host)};")

    # ------------------------------------------------------------------ helpers
    def _spawn(self) -> bool:
        """Start mariadbd on self.port; True once it answers, False when it exits first."""
        options = {
            "datadir": str(self.data_dir), "socket": str(self.socket_path), "port": str(self.port),
            "bind-address": self.host, "pid-file": str(self.pid_file), "log-error": str(self.log_file),
            "innodb-buffer-pool-size": "64M", **self._settings,
        }  # fmt: skip
        if self.run_as:
            options["user"] = self.run_as  # as root: the user mariadbd switches to
        argv = [
            self.programs.server,
            "--no-defaults",
            *(f"--{key}={value}" for key, value in options.items()),
        ]
        if "log-bin" not in self._settings:  # settings={"log-bin": "binlog", ...} turns it on
            argv.append("--skip-log-bin")
        self.pid_file.unlink(missing_ok=True)
        self._process = runner.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self.socket_path.exists():
                ping = [self.programs.admin, "--no-defaults", f"--socket={self.socket_path}",
                        "--user=root", "--connect-timeout=2", "ping"]  # fmt: skip
                if runner.run(ping, check=False, timeout=30).returncode == 0:
                    return True
            time.sleep(0.1)
        runner.stop(self._process)
        self._process = None
        raise JobFailed(
            f"MariaDB did not accept connections within {_START_TIMEOUT:.0f}s: {self._log_tail()}"
        )

    def _secure_root(self) -> None:
        """Give root@localhost a password; drop the other root and the anonymous accounts."""
        password = secrets.token_urlsafe(18)
        register_secret(password)
        accounts = self._client(
            "SELECT user, host FROM mysql.user WHERE (user = 'root' AND host <> 'localhost') OR user = '';",
            None, None,
        )  # fmt: skip
        statements = [
            f"DROP USER {quote_string(user)}@{quote_string(host)};"
            for user, host in (line.split("\t") for line in accounts.splitlines())
        ]
        statements.append(f"ALTER USER root@localhost IDENTIFIED BY {quote_string(password)};")
        self._client("\n".join(statements), None, None)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        self._password = password

    def _client(self, text: str, database: str | None, password: str | None) -> str:
        with password_options(password, isolated=True) as (first, fds):
            argv = [self.programs.client, *first, f"--socket={self.socket_path}", "--user=root",
                    "--batch", "--skip-column-names", "--default-character-set=utf8mb4"]  # fmt: skip
            if database:
                argv.append(f"--database={database}")
            return runner.run(argv, input_text=text, timeout=300, pass_fds=fds).stdout

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _default_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("mysql")
            return "mysql"
        except KeyError:
            return "root"  # mariadbd refuses to run as root unless told so explicitly

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


def _is_server(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) mariadbd/mysqld process."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    state = status.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and os.path.basename(command).decode(errors="replace") in ("mariadbd", "mysqld")
