"""restic's error output, summarised for an operator: no Go stack traces, no retry chatter.

restic prints a Go stack trace after some fatal errors (a lock it cannot create in a read-only
repository, for one) and a line per retry before it; `summarise` keeps the lines that say what
went wrong, e.g. "unable to create lock in backend | open /repo/locks/...: read-only file system".
"""

from __future__ import annotations

import re

# Lines of a Go stack trace: "goroutine 1 [running]:", "main.main()", "runtime.goexit",
# "github.com/restic/restic/internal/backend/local.(*Local).Save", and the "\tfile.go:153" lines.
_FRAME = re.compile(
    r"^(\t|\s{4,}|goroutine \d+ |created by |runtime\.|main\.|github\.com/|golang\.org/|gopkg\.in/|"
    r"[\w.\-]+/[\w.\-/]*\.[\w(*).\-]+$|[\w\-]+\.\(?\*?[\w]+\)?\.[\w.]+$|exit status \d+$)"
)
# restic's backend retries: "Save(<lock/fcf9f3c974>) returned error, retrying after 552ms: ..."
_RETRY = re.compile(r"returned error, retrying after|^Load\(.*\) (returned error|failed)")
_NOISE = re.compile(
    r"^(using temporary cache in |create exclusive lock for repository|repository \w+ opened)"
)


def summarise(stderr: str, count: int = 3) -> str:
    """The last `count` meaningful lines of restic's stderr, joined by " | " (or a placeholder)."""
    kept: list[str] = []
    for line in stderr.splitlines():
        text = line.rstrip()
        if not text.strip() or _FRAME.match(text) or _RETRY.search(text) or _NOISE.match(text):
            continue
        if text not in kept:
            kept.append(text)
    return " | ".join(kept[-count:]) or "(no error output)"


# restic commands that only read the repository. They run with `--no-lock`, so verify, restore
# and drills work against a read-only repository (a read-only mount, an append-only or
# read-only credential), as docs/operations.md recommends for a drill host. Without it restic
# retries creating its lock for ~40 s and dies with a stack trace. A read without a lock may see
# a concurrent `prune` remove data: backupctl's own prune and these reads never overlap on one
# host (policy lock); docs/targets.md says so for other writers.
READ_ONLY_COMMANDS = frozenset(
    {"snapshots", "dump", "restore", "cat", "stats", "ls", "check", "find", "diff"}
)


def lock_free(args: list[str] | tuple[str, ...]) -> list[str]:
    """`args` with `--no-lock` first when the restic command (args[0]) only reads."""
    return ["--no-lock", *args] if args and args[0] in READ_ONLY_COMMANDS else list(args)
