"""The archive_command line for postgresql.conf, and recognising it in a server's settings.

With an asynchronous archiver (`pitr.archiver`), archive_command is a POSIX `sh` line that
answers an acknowledged segment without starting Python (`python3 -c pass` alone costs about as
much as pgBackRest's whole async `archive-push`, docs/benchmarks.md): PostgreSQL runs it with
`sh -c` after substituting %p and %f, and it

1. stats %p, the spool and its `acks` directory in one `stat` process (coreutils; the only
   process besides `sh`), and requires both directories to be mode 700 and owned by the owner of
   %p -- the server's user, who runs archive_command: the same "private spool" rule as
   cli.fastpath's `spool.private`, since an ack anyone else could write proves nothing;
2. reads the first two lines of `<spool>/<policy>/<source>/acks/%f.ack` with the shell's `read`
   builtin, and exits 0 only when they are the ack header and an `identity` line equal to %p's
   `dev inode size mtime ctime` (pitr.spool.identity_of: recorded by the archiver only for a
   file that did not change while it was pushed);
3. otherwise `exec`s `backupctl wal push ... --spool ...`, the Python fast path (digest check,
   the wait for a running archiver, the lock) and then the full push, unchanged.

The identity ties the ack to *this* file, not only to its name: a rewritten file has another
ctime (the kernel sets it on every write, rename and utime, and no tool can set it back), a
recycled segment (PostgreSQL renames an old file to a future name, then overwrites it) has
another name and ctime, and a restored data directory has other inodes. `SIGINT`/`SIGTERM`
while the shell part runs exit 1, never >= 128 (PostgreSQL's archiver dies on those).

Standard library only; no other backupctl import (doctor and the CLI import it).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# coreutils stat(1): mode and owner (the privacy rule), then the identity fields, in the order
# and spelling of pitr.spool.identity_of (%.9Y / %.9Z: seconds with nanoseconds).
STAT_FORMAT = "%a %u %d %i %s %.9Y %.9Z"
ACK_HEADER = "backupctl-wal-ack 1"  # pitr.spool.ACK_FORMAT + ACK_VERSION


def _pg_escape(text: str) -> str:
    """A literal for archive_command: PostgreSQL replaces %p, %f and %% before running it."""
    return text.replace("%", "%%")


def _word(text: str) -> str:
    return _pg_escape(shlex.quote(text))


def push_words(
    policy: str, source: str, spool: str | None, program: str | Sequence[str] = "backupctl"
) -> str:
    """`backupctl wal push POLICY --source S [--spool DIR] "%p" "%f"`, shell-quoted. `program` is
    the program, or the program followed by global options (`--policies DIR`...)."""
    leading = [program] if isinstance(program, str) else list(program)
    words = [*map(_word, leading), "wal", "push", _word(policy), "--source", _word(source)]
    if spool is not None:
        words += ["--spool", _word(spool)]
    return " ".join([*words, '"%p"', '"%f"'])


def archive_command(
    policy: str,
    source: str,
    spool: str | None,
    *,
    program: str | Sequence[str] = "backupctl",
    stat: str = "stat",
) -> str:
    """The archive_command value (as PostgreSQL stores it, before %p/%f substitution).

    Without a spool: the plain `wal push`. With one: the shell line of the module docstring."""
    push = push_words(policy, source, spool, program)
    if spool is None:
        return push
    root = spool.rstrip("/") or "/"
    acks = f"{root}/{policy}/{source}/acks"
    # Fields of `set -- $i`: %p = $1..$7 (mode uid dev ino size mtime ctime), spool = $8..$14,
    # acks = ${15}..${21}; every field is a number, so word splitting is exact.
    return (
        "trap 'exit 1' INT TERM; "
        f'i=$({_word(stat)} -c {_pg_escape(shlex.quote(STAT_FORMAT))} -- "%p" {_word(root)} {_word(acks)} '
        "2>/dev/null) && set -- $i && "
        '[ "$8 $9 ${15} ${16}" = "700 $2 700 $2" ] && '
        f'{{ read -r h && read -r k v; }} 2>/dev/null < {_word(acks + "/")}"%f".ack && '
        f'[ "$h|$k $v" = "{ACK_HEADER}|identity $3 $4 $5 $6 $7" ] && exit 0; '
        f"exec {push}"
    )


def substitute(command: str, path: str, name: str) -> str:
    """What PostgreSQL 15 runs (pgarch.c): %p -> path, %f -> name, %% -> %, any other % kept."""
    out: list[str] = []
    index = 0
    while index < len(command):
        char = command[index]
        following = command[index + 1] if index + 1 < len(command) else ""
        if char == "%" and following in ("p", "f", "%"):
            out.append({"p": path, "f": name, "%": "%"}[following])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


class PushLine:
    """The `wal push` that an archive_command runs: policy, source and spool (None: no spool)."""

    __slots__ = ("fast", "policy", "source", "spool")

    def __init__(self, policy: str, source: str, spool: str | None, fast: bool) -> None:
        self.policy = policy
        self.source = source
        self.spool = spool
        self.fast = fast  # the shell line answers acked segments before any Python starts


def parse(command: str) -> PushLine | None:
    """The `backupctl wal push` in an archive_command setting (the plain line, the shell line of
    `archive_command`, or a hand-written wrapper calling it); None when there is none."""
    try:
        lexer = shlex.shlex(substitute(command, "%p", "%f"), posix=True, punctuation_chars=_OPERATORS)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: PostgreSQL's sh would refuse it too
        return None
    for index, token in enumerate(tokens):
        if token.rsplit("/", 1)[-1] != "backupctl":
            continue
        end = index + 1
        while end < len(tokens) and not set(tokens[end]) <= set(_OPERATORS):
            end += 1
        found = _push_arguments(tokens[index + 1 : end])
        if found is not None:
            policy, source, spool = found
            return PushLine(policy, source, spool, fast=f"{ACK_HEADER}|identity" in command)
    return None


_OPERATORS = ";&|()<>"
# options of `wal push` and of the CLI (backupctl.cli.main) that take a value
_WITH_VALUE = {"--source", "--spool", "--policies", "--state-dir", "--catalog", "--keys-dir"}


def _push_arguments(argv: list[str]) -> tuple[str, str, str | None] | None:
    """(policy, source, spool) of `wal push POLICY --source S [--spool DIR] PATH [NAME]`."""
    words: list[str] = []
    options: dict[str, str] = {}
    items = iter(argv)
    for item in items:
        option, equals, value = item.partition("=")
        if option in _WITH_VALUE:
            options[option] = value if equals else next(items, "")
        elif not item.startswith("-"):
            words.append(item)
    if words[:2] != ["wal", "push"] or len(words) < 3 or not options.get("--source"):
        return None
    return words[2], options["--source"], options.get("--spool") or None


def conf_literal(value: str) -> str:
    """`value` as a postgresql.conf / ALTER SYSTEM string literal."""
    return "'" + value.replace("'", "''") + "'"
