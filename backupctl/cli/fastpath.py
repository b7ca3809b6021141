"""The console entry point: `wal push --spool` answered from the archiver's ack, else the CLI.

PostgreSQL runs archive_command once per 16 MiB segment. A full `wal push` costs ~0.2 s, most
of it importing click, pydantic and boto3 (`python -X importtime -m backupctl wal push ...`);
when the asynchronous archiver (`backupctl wal archiver`, actions.wal_archiver) has already
made the segment durable on every WAL target, this module answers from its acknowledgement
with the standard library and blake3 only: exit 0 when the file's digest equals the acked
digest. Anything else -- no ack, a different digest, an argument it does not know, a spool that
is not private -- goes on to the full CLI, whose push honours the archive contract by itself:
correctness never depends on the archiver running, and an ack for other content never leads to
exit 0 (the full push then reports the conflict).

Before the full push, the per-segment lock is taken (and held until this process exits), so the
archiver and archive_command never push one segment at the same time; while the archiver is
running and pushing the segment, this waits for its ack instead of pushing it again.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

# The C core of `signal`: 0.2 ms to import instead of 5 (signal's enums), and the fast path
# must install its SIGTERM handler before anything else (python -S -X importtime).
_signal = __import__("_signal")

# Global options of the CLI that take a value (backupctl.cli.main) / that take none.
_GLOBAL_VALUES = {"--policies", "--state-dir", "--catalog", "--keys-dir"}
_GLOBAL_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet", "--log-json"}
ARCHIVER_GRACE = 1.0  # s: a running archiver polls archive_status every 0.1 s (actions.wal_archiver)
BUSY_LIMIT = 120.0  # s: the archiver still holds the segment's lock: exit 1, PostgreSQL retries
POLL = 0.005


def parse_push(argv: list[str]) -> tuple[str, str, str, str, str] | None:
    """(policy, source, spool, path, name) of `wal push POLICY --source S --spool DIR PATH [NAME]`
    with global options anywhere; None for any other command line (the CLI then parses it)."""
    words: list[str] = []
    options: dict[str, str] = {}
    items = iter(argv)
    for item in items:
        if item in _GLOBAL_FLAGS:
            continue
        option, equals, value = item.partition("=")
        if option in _GLOBAL_VALUES or option in ("--source", "--spool"):
            if not equals:
                value = next(items, "")
            if option in ("--source", "--spool"):
                options[option] = value
            continue
        if item.startswith("-"):
            return None  # an option the fast path does not know (--help, --json...): the CLI decides
        words.append(item)
    if words[:2] != ["wal", "push"] or not 4 <= len(words) <= 5:
        return None
    if not options.get("--source") or not options.get("--spool"):
        return None
    policy, path = words[2], words[3]
    name = words[4] if len(words) == 5 else os.path.basename(path)
    return policy, options["--source"], options["--spool"], path, name


def fast_push(argv: list[str]) -> bool:
    """True when the segment is acknowledged with this exact content (exit 0 at once); False to
    run the full CLI (with the segment's lock held, when the spool exists)."""
    parsed = parse_push(argv)
    if parsed is None:
        return False
    from backupctl.pitr import spool

    policy, source, root, path, name = parsed
    if any("/" in part or part.startswith(".") or not part for part in (policy, source, name)):
        return False  # not names the CLI would accept: it says so
    acks = spool.acks_dir(root, policy, source)
    if not os.path.isdir(acks):
        # created here too, so that the segment lock below exists before an archiver starts:
        # a push without the lock could overlap one of the archiver's
        spool.prepare(root, policy, source)  # OSError: main() falls back to the full push
    if not spool.private(acks) or not spool.private(root):
        return False
    ack = spool.read_ack(root, policy, source, name)
    if ack is not None:
        return spool.matches(ack, path)  # a different digest: the full push reports the conflict
    lock = spool.SegmentLock(spool.lock_path(root, policy, source, name))
    began = time.monotonic()
    archiver = spool.archiver_running(root, policy, source) is not None
    while True:
        if lock.try_acquire():
            ack = spool.read_ack(root, policy, source, name)
            if ack is not None:
                lock.release()
                return spool.matches(ack, path)
            waited = time.monotonic() - began
            if not archiver or waited >= ARCHIVER_GRACE:
                # push it ourselves (the archiver skips a locked segment); the lock is dropped
                # and its file removed when this process exits
                atexit.register(lock.release, remove=True)
                return False
            lock.release()  # give the running archiver the moment it needs to pick it up
        elif time.monotonic() - began > BUSY_LIMIT:
            sys.stderr.write(
                f"error: the archiver has been pushing {name} for over {BUSY_LIMIT:.0f}s "
                "(target slow or hung?); PostgreSQL retries it\n"
            )
            sys.exit(1)
        ack = spool.read_ack(root, policy, source, name)
        if ack is not None:
            return spool.matches(ack, path)
        time.sleep(POLL)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM while waiting for the archiver: exit 1 as the full push would, not a signal death
    # (PostgreSQL's archiver dies on it); the CLI installs its own handler afterwards.
    previous = _signal.signal(_signal.SIGTERM, _interrupted)
    try:
        if fast_push(sys.argv[1:]):
            sys.exit(0)
    except KeyboardInterrupt:
        # SIGINT before the CLI installed its handlers: exit 1, never >= 128 (archive contract)
        sys.stderr.write("error: interrupted; PostgreSQL retries the segment\n")
        sys.exit(1)
    except OSError:
        pass  # the spool could not be read or locked: the full push decides, as without a spool
    _signal.signal(_signal.SIGTERM, previous)
    from backupctl.cli.main import main as full

    full()
