"""A restic repository as a backup target, driven through the `restic` CLI (0.14 or newer).

restic is not a blob target (backupctl.targets.base): it takes the *plain* dump stream and
deduplicates, compresses and encrypts it itself. backupctl finds its snapshots again by tags
(`tags_for`); the catalog should store the full restic snapshot id from `ResticBackupResult`.

Secrets:
- The repository password goes into a memfd (anonymous memory, never a file on disk) that only
  the restic child inherits; restic reads it as RESTIC_PASSWORD_FILE=/dev/fd/N. Not
  RESTIC_PASSWORD_COMMAND: that command would need the secret on its own argv. A memfd rather
  than a pipe: every open() of /dev/fd/N of a memfd starts at offset 0, so any number of reads
  see the whole password, whereas a pipe is drained by the first.
- The repository location travels as RESTIC_REPOSITORY (a rest: URL may carry credentials).
- `environment` secret references (e.g. AWS keys) are resolved into the child's environment
  only; `SecretRef.resolve` registers every value with the masker used on all error text.
- Inherited RESTIC_PASSWORD/_COMMAND/RESTIC_REPOSITORY_FILE are blanked (they would conflict
  or win), and so is the variable an `env:` password came from.

Interrupted stdin backups: EOF on stdin is restic's only "end of data", so closing stdin commits
a snapshot. On any error inside `stdin_writer` restic gets SIGINT *before* stdin is closed: it
aborts, removes its lock and creates no snapshot. Residual risk: if backupctl itself is killed
with SIGKILL, the kernel closes the pipe and restic commits a truncated snapshot; that is why
the catalog, not `find()`, is the record of which restic snapshots are complete.

Every restic invocation re-derives the key (scrypt, about 0.8 s here): calls are not free.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from backupctl.core import runner
from backupctl.core.secrets import mask, mask_url_password
from backupctl.errors import ConfigError, TargetError
from backupctl.policy.schema import ResticTarget
from backupctl.targets.base import Posture
from backupctl.targets.restic_errors import lock_free, summarise
from backupctl.targets.restic_watchdog import ReadActivity, StallWatchdog, WaitingReader

log = logging.getLogger("backupctl.targets.restic")

MIN_VERSION = (0, 14, 0)
CHUNK = 1 << 20
TAG = "backupctl"
INSTALL_HINT = "apt install restic, or see https://restic.readthedocs.io/en/stable/020_installation.html"
Progress = Callable[[int], None]  # called with byte increments, like core.pipeline.Progress

# Network and server-side failures worth retrying; checked before "no repository" because an
# unreachable S3 endpoint also reports "unable to open config file".
_TRANSIENT = re.compile(
    r"connection refused|connection reset|i/o timeout|timeout|no such host|temporary failure"
    r"|unexpected EOF|TLS handshake|\b50[0234]\b|internal ?error|service ?unavailable|slow ?down",
    re.IGNORECASE,
)
_MISSING = ("unable to open config file", "Is there a repository at the following location")


BACKGROUND_NICENESS = 19  # the lowest: see stdin_writer(background=True)


def tags_for(policy: str, snapshot_id: str, source: str | None = None) -> list[str]:
    """The restic tags of one backupctl artifact (the one place that builds them).

    Without `source`: the tags every artifact of that backupctl snapshot shares (for `find`).
    """
    tags = [TAG, f"policy={policy}", f"snapshot={snapshot_id}"]
    return [*tags, f"source={source}"] if source is not None else tags


def default_cache_dir() -> Path:
    """RESTIC_CACHE_DIR when set, else /var/cache/backupctl/restic (root) or the XDG cache."""
    if os.environ.get("RESTIC_CACHE_DIR"):
        return Path(os.environ["RESTIC_CACHE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/cache/backupctl/restic")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backupctl" / "restic"


@dataclass
class ResticSnapshotInfo:
    id: str
    short_id: str
    time: str  # RFC 3339 with nanoseconds, as restic prints it
    paths: list[str]
    tags: list[str]
    hostname: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResticSnapshotInfo:
        return cls(data["id"], data["short_id"], data["time"], list(data.get("paths") or []),
                   list(data.get("tags") or []), data.get("hostname", ""))  # fmt: skip


@dataclass
class ResticBackupResult:
    snapshot_id: str  # full id (restic's summary prints only the short one; resolved by tags)
    files_new: int
    files_changed: int
    data_added: int  # new data after dedup, *before* compression in 0.14 (stats() has stored bytes)
    total_bytes_processed: int
    seconds: float


@functools.cache
def _version_of(path: str) -> tuple[int, int, int]:
    done = runner.run([path, "version"], check=False, timeout=60)
    found = re.search(r"restic (\d+)\.(\d+)\.(\d+)", done.stdout)
    if done.returncode != 0 or not found:
        output = runner.last_lines(done.stderr or done.stdout)
        raise ConfigError(f"cannot tell the version of {path}: {output}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def _tag_args(tags: list[str]) -> list[str]:
    for tag in tags:
        if not tag or "," in tag or tag != tag.strip():
            raise ValueError(f"invalid restic tag {tag!r}: no commas, no surrounding spaces")
    return [arg for tag in tags for arg in ("--tag", tag)]


class _Child:
    """A running restic; stderr (and stdout, when `on_line` is given) drained by threads."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        on_line: Callable[[bytes], None] | None,
        stderr_lines: int = 40,
    ) -> None:
        self.process = process
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=stderr_lines)
        self._threads = [threading.Thread(target=self._drain, args=(process.stderr, self._stderr.append))]
        if on_line is not None:
            self._threads.append(threading.Thread(target=self._drain, args=(process.stdout, on_line)))
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    @staticmethod
    def _drain(pipe: IO[bytes] | None, sink: Callable[[bytes], None]) -> None:
        assert pipe is not None
        for line in pipe:
            sink(line)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def interrupt(self, grace: float = 15.0) -> None:
        """SIGINT first: restic then aborts cleanly and removes its lock (SIGTERM/KILL leave it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                runner.stop(self.process, grace=2.0)

    def finish(self) -> int:
        returncode = self.process.wait()
        for thread in self._threads:
            thread.join()
        return returncode


class _BackupOutput:
    """Parses `backup --json` lines: status (progress) and the final summary."""

    def __init__(self, progress: Progress | None) -> None:
        self.summary: dict[str, Any] | None = None
        self._progress = progress
        self._done = 0
        self.progressed = time.monotonic()  # last time restic reported more bytes or files done
        self._files = 0

    def feed(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # restic may print plain text lines (e.g. warnings) even with --json
        if not isinstance(message, dict):
            return
        if message.get("message_type") == "summary":
            self.summary = message
        elif message.get("message_type") == "status":
            done, files = int(message.get("bytes_done") or 0), int(message.get("files_done") or 0)
            if done > self._done or files > self._files:
                self.progressed, self._files = time.monotonic(), files
            if done > self._done:
                if self._progress is not None:
                    self._progress(done - self._done)
                self._done = done


class ResticStdinWriter(io.RawIOBase):
    """Feeds restic's stdin. `result` is set when the `stdin_writer` block exits cleanly."""

    def __init__(self, pipe: IO[bytes], pid: int, on_broken: Callable[[], TargetError]) -> None:
        self._pipe = pipe
        self._on_broken = on_broken
        self.pid = pid  # of the restic process, for diagnostics
        self.bytes_written = 0
        self.result: ResticBackupResult | None = None
        self.progressed = time.monotonic()  # last write restic accepted (for the stall watchdog)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            self._pipe.write(data)
        except OSError as error:  # restic exited early (wrong password, repository gone, ...)
            raise self._on_broken() from error
        size = memoryview(data).nbytes
        self.bytes_written += size
        self.progressed = time.monotonic()
        return size


class ResticRepository:
    """One restic repository from a `type: restic` target. See the module docstring."""

    def __init__(self, config: ResticTarget, *, cache_dir: Path | None = None) -> None:
        self.config = config
        self.name = config.name
        self.medium = config.medium
        self.offsite = config.offsite
        self.location = mask_url_password(config.repository)  # safe to print
        self.label = f"restic target '{config.name}' ({self.location})"  # what errors name
        self._cache_dir = cache_dir
        self._binary: str | None = None
        self._secrets: tuple[str, dict[str, str]] | None = None

    # ----------------------------------------------------------------- setup and checks
    def version(self) -> tuple[int, int, int]:
        """The restic version. Raises ConfigError when restic is missing or older than 0.14."""
        path = shutil.which("restic")
        if path is None:
            raise ConfigError(f"restic is not installed or not on PATH ({INSTALL_HINT})")
        found = _version_of(path)
        if found < MIN_VERSION:
            raise ConfigError(
                f"restic {'.'.join(map(str, found))} at {path} is too old: backupctl needs "
                f"{'.'.join(map(str, MIN_VERSION))} or newer ({INSTALL_HINT})"
            )
        self._binary = path
        return found

    def init(self) -> bool:
        """Create the repository (format v2, compressed). False when it already exists."""
        done = self._run("init", "--repository-version", "2", action="init", ok=(0, 1))
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise self._error("init", done.stderr)
        return done.returncode == 0

    def exists(self) -> bool:
        """True when it opens with the password, False when there is none; else TargetError."""
        done = self._run("cat", "config", action="open", ok=(0, 1))
        if done.returncode == 0:
            return True
        error = self._error("open", done.stderr)
        if any(text in done.stderr for text in _MISSING) and not error.transient:
            return False
        raise error

    def posture(self) -> Posture:
        """Reachability and protection as far as restic can tell; problems say how to fix them.

        `immutable` follows the declaration for a reachable `rest:` repository (the issue's "append-only
        restic REST server where declared"): restic 0.14 cannot ask a server for its mode, and the
        only proof (a rejected delete) needs something deleted, so details and status say
        "declared". Declared on any other kind of repository it is a problem, never immutable.
        """
        details: dict[str, Any] = {"repository": self.location, "append_only": self.config.append_only}
        problems, reachable = [], False
        try:
            details["restic_version"] = ".".join(map(str, self.version()))
            config = json.loads(self._run("cat", "config", action="open", timeout=300).stdout)
            details["repository_version"], reachable = config["version"], True
        except (ConfigError, TargetError) as error:
            problems.append(str(error))
        immutable = False
        if self.config.append_only:
            details["append_only"] = "declared, not verified"  # see above
            immutable = reachable and self.config.repository.startswith("rest:")
            if not self.config.repository.startswith("rest:"):
                problems.append(f"append_only is declared but {self.location} is not a rest: repository; "
                                "only rest-server --append-only enforces it (fix: serve the repository with "
                                "rest-server --append-only, or remove append_only)")  # fmt: skip
        local = self._local_path()
        free = shutil.disk_usage(local).free if reachable and local else None
        return Posture(reachable, self.medium, self.offsite, immutable=immutable, free_bytes=free,
                       problems=problems, details=details)  # fmt: skip

    # ----------------------------------------------------------------- backups
    @contextmanager
    def stdin_writer(
        self,
        filename: str,
        tags: list[str],
        progress: Progress | None = None,
        *,
        full_id: bool = True,
        background: bool = False,
    ) -> Iterator[ResticStdinWriter]:
        """Yield a writer feeding `restic backup --stdin`; the snapshot is committed on clean exit.

        Afterwards `writer.result` holds the ResticBackupResult. On an exception inside the
        block restic is interrupted before its stdin closes, so no snapshot is created.
        `progress` gets byte increments from restic's status lines (on a reader thread).
        `background`: restic runs at the lowest CPU priority (nice 19), for a process that
        is started early and mostly waits, so that its key derivation takes only spare CPU.
        Raises TargetError when restic fails or did not read every byte written.
        """
        if not filename or "/" in filename:
            raise ValueError(f"invalid stdin filename {filename!r}")
        output = _BackupOutput(progress)
        # --compression auto: also accepted (as a no-op) by v1 repositories, verified with 0.14.0;
        # explicit so that a RESTIC_COMPRESSION in the environment cannot change it.
        args = ["backup", "--stdin", "--stdin-filename", filename, "--json", "--compression", "auto"]
        child = self._start(
            [*args, *_tag_args(tags)], output.feed, niceness=BACKGROUND_NICENESS if background else 0,
            stdin=subprocess.PIPE,
        )  # fmt: skip
        stdin = child.process.stdin
        assert stdin is not None
        runner.widen_pipe(stdin)
        writer = ResticStdinWriter(stdin, child.process.pid, lambda: self._stalled(watchdog, "backup", child))
        # A writer started ahead waits for its first byte (the manifest's, at the very end of
        # the backup): the deadline runs from then on.
        watchdog = StallWatchdog(child.process, self.config.stall_timeout.total_seconds(),
                                 lambda: max(output.progressed, writer.progressed)
                                 if writer.bytes_written else time.monotonic())  # fmt: skip
        try:
            yield writer
        except BaseException:
            child.interrupt()
            with suppress(OSError):
                stdin.close()
            # A frozen endpoint would hang the unlock too: the next run clears a stale lock then.
            if child.finish() != 0 and not watchdog.fired:
                self._remove_stale_lock()
            raise
        try:
            stdin.close()  # EOF: restic commits the snapshot
        except OSError as error:
            raise self._stalled(watchdog, "backup", child) from error
        if child.finish() != 0 or output.summary is None:
            raise watchdog.error(self.label) if watchdog.fired else self._error("backup", child.stderr)
        writer.result = self._result(output.summary, tags, full_id)
        if writer.result.total_bytes_processed != writer.bytes_written:
            raise TargetError(
                f"restic stored {writer.result.total_bytes_processed} bytes of {writer.bytes_written} in "
                f"snapshot {writer.result.snapshot_id} of {self.location}"
            )

    def backup_stream(
        self, stream: BinaryIO, filename: str, tags: list[str], progress: Progress | None = None
    ) -> ResticBackupResult:
        """Back up a plain stream as /FILENAME, copied in 1 MiB chunks (memory stays flat)."""
        with self.stdin_writer(filename, tags, progress) as sink:
            while chunk := stream.read(CHUNK):
                sink.write(chunk)
        assert sink.result is not None
        return sink.result

    def backup_path(
        self, path: str, excludes: list[str], tags: list[str], progress: Progress | None = None
    ) -> ResticBackupResult:
        """Incremental backup of a directory tree (restic picks the previous snapshot as parent)."""
        output = _BackupOutput(progress)
        args = ["backup", os.path.abspath(path), "--json", "--compression", "auto", *_tag_args(tags)]
        args += [arg for pattern in excludes for arg in ("--exclude", pattern)]
        child = self._start(args, output.feed)
        stall = self.config.stall_timeout.total_seconds()
        watchdog = StallWatchdog(child.process, stall, lambda: output.progressed)
        returncode = child.finish()
        if watchdog.fired:
            raise watchdog.error(self.label)
        if returncode == 3 and output.summary is not None:  # snapshot made, but files are missing
            raise TargetError(
                f"restic snapshot {output.summary.get('snapshot_id')} of {path} is incomplete, some "
                f"files could not be read: {self._scrub(runner.last_lines(child.stderr))}"
            )
        if returncode != 0 or output.summary is None:
            raise self._error("backup", child.stderr)
        return self._result(output.summary, tags)

    # ----------------------------------------------------------------- reading
    def snapshots(self, tags: list[str] | None = None) -> list[ResticSnapshotInfo]:
        """Snapshots carrying every one of `tags` (all snapshots when None), oldest first."""
        if tags:
            _tag_args(tags)  # validates: a comma would split one tag into two
        # One --tag with comma-separated tags means "all of them" (several --tag mean "any").
        args = ["snapshots", "--json", *(["--tag", ",".join(tags)] if tags else [])]
        listed = json.loads(self._run(*args, action="list snapshots").stdout) or []
        return sorted((ResticSnapshotInfo.from_json(item) for item in listed), key=lambda info: info.time)

    def find(self, policy: str, snapshot_id: str) -> list[ResticSnapshotInfo]:
        """The restic snapshots (one per source) of a backupctl snapshot."""
        return self.snapshots(tags_for(policy, snapshot_id))

    @contextmanager
    def dump(self, restic_snapshot: str, filename: str) -> Iterator[BinaryIO]:
        """Stream /FILENAME of a snapshot. TargetError at block exit when restic failed, or
        as soon as a read waits longer than `stall_timeout` for a byte (frozen backend)."""
        action = f"dump of {restic_snapshot}:/{filename}"
        child = self._start(["dump", restic_snapshot, f"/{filename}"], None, stdout=subprocess.PIPE)
        stdout = child.process.stdout
        assert stdout is not None
        reader = WaitingReader(cast(io.BufferedReader, stdout))
        stall = self.config.stall_timeout.total_seconds()
        watchdog = StallWatchdog(child.process, stall, reader.last_progress)
        try:
            yield cast(BinaryIO, reader)
        except BaseException:
            child.interrupt()
            stdout.close()
            child.finish()
            if watchdog.fired:  # the caller saw a short stream: say why
                raise watchdog.error(self.label, action) from None
            raise
        stopped_early = bool(reader.read(1))
        if stopped_early:  # the caller has read enough: not an error
            child.interrupt()
        stdout.close()
        if watchdog.fired:
            raise watchdog.error(self.label, action)
        if child.finish() != 0 and not stopped_early:
            raise self._error(action, child.stderr)

    def restore(self, restic_snapshot: str, target_dir: Path, include: str | None = None) -> None:
        """Restore a snapshot (or the paths matching `include`) below `target_dir`."""
        args = ["restore", restic_snapshot, "--target", str(target_dir)]
        self._run(*args, *(["--include", include] if include else []), action=f"restore of {restic_snapshot}")

    # ----------------------------------------------------------------- maintenance
    def check(self, read_data_subset: str | None = "5%") -> list[str]:
        """Structure check plus a read of `read_data_subset` of the data; problems ([] when ok)."""
        args = ["check", *(["--read-data-subset", read_data_subset] if read_data_subset else [])]
        done = self._run(*args, action="check", ok=(0, 1))
        if done.returncode == 0:
            return []
        if "repository contains errors" not in done.stderr:
            raise self._error("check", done.stderr)
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
        found = [line for line in lines if re.search(r"error|does not match|missing|damaged", line, re.I)]
        problems = [self._scrub(line) for line in found if "repository contains errors" not in line]
        return problems or [self._scrub(runner.last_lines(done.stderr))]

    def forget(self, restic_snapshot_ids: list[str], prune: bool = True) -> None:
        """Remove snapshots (unknown ids are ignored), then prune unreferenced data."""
        if restic_snapshot_ids:
            args = ["forget", *(["--prune"] if prune else []), *restic_snapshot_ids]
            self._run(*args, action="forget")

    def stats(self) -> dict[str, Any]:
        """`stats --mode raw-data`: total_size (stored bytes after dedup), blob and snapshot counts."""
        done = self._run("stats", "--json", "--mode", "raw-data", action="stats")
        return cast(dict[str, Any], json.loads(done.stdout))

    # ----------------------------------------------------------------- plumbing
    def _local_path(self) -> str | None:
        repository = self.config.repository
        if repository.startswith("local:"):
            return repository.removeprefix("local:")
        return None if re.match(r"^[a-z0-9]+:", repository) else repository

    @contextmanager
    def _password_fd(self) -> Iterator[tuple[int, dict[str, str]]]:
        """A memfd holding the password, and restic's environment pointing at it."""
        if self._secrets is None:
            password = self.config.password.resolve()
            if password != password.strip():
                raise ConfigError(f"the restic password from {self.config.password} has surrounding "
                                  "whitespace, which restic strips when reading a password file")  # fmt: skip
            self._secrets = (password, {name: ref.resolve() for name, ref in self.config.environment.items()})
        cache = self._cache_dir or default_cache_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise ConfigError(
                f"cannot create the restic cache directory (set RESTIC_CACHE_DIR): {error}"
            ) from None
        env = dict.fromkeys(("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY_FILE"), "")
        if self.config.password.scheme == "env":
            env[self.config.password.target] = ""
        fd = os.memfd_create("restic-password")  # close-on-exec: only pass_fds children get it
        try:
            os.write(fd, self._secrets[0].encode())
            yield fd, {**env, **self._secrets[1], "RESTIC_REPOSITORY": self.config.repository,
                       "RESTIC_PASSWORD_FILE": f"/dev/fd/{fd}", "RESTIC_CACHE_DIR": str(cache)}  # fmt: skip
        finally:
            os.close(fd)  # the child holds its own copy from the moment it started

    def _restic(self) -> str:
        if self._binary is None:
            self.version()  # checked once per instance; the probe itself is cached per binary
        assert self._binary is not None
        return self._binary

    def _remove_stale_lock(self) -> None:
        """After an interrupted `restic backup`: remove the lock it may have left.

        restic 0.14 removes its lock on SIGINT, except when the signal arrives while it is
        creating it (measured on restic 0.14.0 here: SIGINT 0.55-0.8 s after start left a lock file
        in most runs of one loop, in 1 of 8 of another); the
        next backup then waits for or trips over it. `restic unlock` removes only stale locks
        (of dead processes on this host, or older than 30 minutes), so a live one is kept.
        Best effort: a failure here must not hide the error that stopped the backup.
        """
        try:
            self._run("unlock", action="unlock", timeout=min(60.0, self.config.stall_timeout.total_seconds()))
        except (TargetError, ConfigError) as error:
            log.debug("restic unlock after an interrupted backup failed: %s", error)

    def _run(
        self, *args: str, action: str, ok: tuple[int, ...] = (0,), timeout: float | None = None
    ) -> runner.Completed:
        """Run restic to completion; one retry after clearing *stale* locks (`restic unlock`).

        Bounded: stopped (TargetError) when it reads nothing and prints nothing for
        `stall_timeout` (a frozen backend; restic_watchdog), or when it runs past `timeout`."""
        for attempt in (1, 2):
            done = self._complete([*args], action, timeout)
            if attempt == 1 and done.returncode != 0 and "already locked" in done.stderr:
                # Only locks of dead processes on this host or older than 30 min are removed.
                self._run("unlock", action="unlock")
                continue
            if done.returncode in ok:
                return done
            raise self._error(action, done.stderr)
        raise AssertionError("unreachable")

    def _complete(self, args: list[str], action: str, timeout: float | None) -> runner.Completed:
        """One restic run under the stall watchdog, its output collected."""
        stdout: list[bytes] = []
        printed = [time.monotonic()]

        def collect(line: bytes) -> None:
            stdout.append(line)
            printed[0] = time.monotonic()

        # stderr is not progress: restic prints a line per retry against a failing backend.
        child = self._start(args, collect, stderr_lines=5000)
        activity = ReadActivity(child.process.pid, lambda: printed[0])
        watchdog = StallWatchdog(child.process, self.config.stall_timeout.total_seconds(), activity)
        try:
            child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.interrupt(grace=5.0)
            child.finish()
            raise TargetError(f"restic {action} on {self.location}: did not finish within {timeout:g}s",
                              transient=True) from None  # fmt: skip
        except BaseException:
            child.interrupt(grace=5.0)
            raise
        returncode = child.finish()
        if watchdog.fired:
            raise watchdog.error(self.label, action)
        argv = [self._restic(), *lock_free(args)]
        return runner.Completed(argv, returncode, b"".join(stdout).decode("utf-8", "replace"), child.stderr)

    def _start(
        self,
        args: list[str],
        on_line: Callable[[bytes], None] | None,
        *,
        niceness: int = 0,
        stderr_lines: int = 40,
        **pipes: Any,
    ) -> _Child:
        binary = self._restic()
        # nice(1) execs restic in the same process, so signals and waits still reach restic.
        # (A renice after the start would miss the threads Go's runtime creates at once.)
        nice = shutil.which("nice") if niceness else None
        prefix = [nice, "-n", str(niceness)] if nice else []
        with self._password_fd() as (fd, env):
            pipes.setdefault("stdout", subprocess.PIPE)
            process = runner.start([*prefix, binary, *lock_free(args)], env=env, pass_fds=(fd,), **pipes)
        return _Child(process, on_line, stderr_lines)

    def _stalled(self, watchdog: StallWatchdog, action: str, child: _Child) -> TargetError:
        """The error of a backup whose stdin broke: the watchdog's, else restic's own."""
        error = self._failed(action, child)
        return watchdog.error(self.label) if watchdog.fired else error

    def _failed(self, action: str, child: _Child) -> TargetError:
        child.finish()  # restic has closed stdin, so it is exiting: collect its stderr
        return self._error(action, child.stderr)

    def _result(self, summary: dict[str, Any], tags: list[str], full_id: bool = True) -> ResticBackupResult:
        short = str(summary["snapshot_id"])
        full = short
        # The summary has only the 8-digit short id, which may become ambiguous in a big repository.
        # Looking the full id up costs a restic call (~0.8 s of key derivation): callers that find
        # snapshots by their tags anyway (backupctl's backups) pass full_id=False.
        if full_id:
            with suppress(TargetError):  # the snapshot is stored: a failed lookup must not fail the backup
                found = [info.id for info in self.snapshots(tags or None) if info.id.startswith(short)]
                full = found[0] if len(found) == 1 else short
        keys = ("files_new", "files_changed", "data_added", "total_bytes_processed")
        counts = {key: int(summary.get(key) or 0) for key in keys}
        return ResticBackupResult(full, **counts, seconds=float(summary.get("total_duration") or 0))

    def _scrub(self, text: str) -> str:
        """Mask registered secrets and the credentials of a rest:/s3: URL restic may echo."""
        return mask(text).replace(self.config.repository, self.location)

    def _error(self, action: str, stderr: str) -> TargetError:
        """Turn restic's stderr into an operator's message; the text is masked."""
        tail = self._scrub(summarise(stderr))  # no Go stack traces
        where = f"restic repository '{self.name}' ({self.location})"
        if "wrong password" in stderr:
            return TargetError(f"{where}: wrong password: the password from {self.config.password} "
                               "opens no key of this repository")  # fmt: skip
        if "already locked" in stderr:
            return TargetError(f"{where} is locked by another restic process; if that process is gone "
                               f"for good, run `restic unlock` ({tail})", transient=True)  # fmt: skip
        if _TRANSIENT.search(stderr):
            return TargetError(f"{action} failed, {where} is unreachable: {tail}", transient=True)
        if any(text in stderr for text in _MISSING):
            return TargetError(f"{where} does not exist or is not a restic repository (create it with "
                               f"`backupctl target setup`): {tail}")  # fmt: skip
        if re.search(r"access ?denied|permission denied|forbidden|\b403\b", stderr, re.IGNORECASE):
            return TargetError(f"{action} failed, access to {where} denied (check the credentials in "
                               f"`environment` and the permissions): {tail}")  # fmt: skip
        if "no matching ID" in stderr or "not found in snapshot" in stderr:
            return TargetError(f"{action} failed, not found in {where}: {tail}")
        return TargetError(f"restic {action} failed on {where}: {tail}")
