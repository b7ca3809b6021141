"""mariadb-dump's sandbox line, for staging servers whose client predates it.

mariadb-dump 10.5.25, 10.6.18, 10.11.8, 11.0.6, 11.1.5, 11.2.4, 11.4.2 and later begin a dump with
`/*M!999999\\- enable the sandbox mode */`: a client of the same releases then refuses client
commands (`\\!` shell escapes) in the rest of the dump. Older clients stop at that line ("Unknown
command '\\-'"), e.g. MariaDB 10.5.23 in backupctl/mariadb:10.5 (Debian bullseye) restoring a dump
taken with bookworm's mariadb-dump 10.11. For such a client the drill leaves the line out: the dump
was authenticated (signature, digest) before it is restored, and the client runs inside the
throwaway staging container.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO, cast

SANDBOX_LINE = b"/*M!999999\\- enable the sandbox mode */"  # then " \n" (10.11.19), or "\n"
# The first release of each series whose client understands the line; series after 11.4 all do.
_FIRST_WITH_SANDBOX = {(10, 5): 25, (10, 6): 18, (10, 11): 8, (11, 0): 6, (11, 1): 5, (11, 2): 4, (11, 4): 2}


def client_knows_sandbox(version: str) -> bool:
    """Whether a MariaDB client of `version` (e.g. "10.5.23-MariaDB-0+deb11u1") reads the line.
    True for versions it cannot parse (no change) and for MySQL-style numbers outside the table."""
    try:
        major, minor, patch = (int(part) for part in version.split("-")[0].split(".")[:3])
    except ValueError:
        return True
    if (major, minor) > (11, 4):
        return True
    first = _FIRST_WITH_SANDBOX.get((major, minor))
    return first is not None and patch >= first


class _WithoutSandboxLine(io.RawIOBase):
    """`stream` read to its end (whoever produces it may hash it), its first line dropped when it
    is the sandbox line."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        head = stream.read(len(SANDBOX_LINE)) or b""
        self._pending = head
        if head == SANDBOX_LINE:
            rest = b""
            while len(rest) < 16 and not rest.endswith(b"\n") and (byte := stream.read(1)):
                rest += byte
            self._pending = b"" if rest.strip() == b"" else rest  # only blanks left on the line

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending:
            self._pending = self._stream.read(len(view)) or b""
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def without_sandbox_line(stream: BinaryIO) -> BinaryIO:
    """The dump `stream` without a leading sandbox line (see the module doc)."""
    return cast(BinaryIO, io.BufferedReader(_WithoutSandboxLine(stream), buffer_size=1 << 20))
