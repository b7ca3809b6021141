"""The one tar-member safety rule shared by `verify` and `restore` of a files artifact.

`verify` runs `check_tar_stream` over the decrypted stream (nothing written); `restore` runs the
same `MemberGuard` member by member before extracting, plus the checks only a real destination
can make (an existing symlink on the way). So an artifact that verifies is one restore accepts.

What is refused: absolute member names, a `..` component, hard links leaving the tree or pointing
at a symlink, device files and fifos, and any member that would be written below a symlink of
the same archive. Symlinks themselves are accepted whatever their target (absolute, leading out):
they are restored verbatim as links and never followed.
"""

from __future__ import annotations

import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from backupctl.errors import IntegrityError

CHUNK = 1 << 20


class MemberGuard:
    """Checks members in archive order; remembers the symlinks seen (a few names per link)."""

    def __init__(self) -> None:
        self._symlinks: set[str] = set()

    def check(self, member: tarfile.TarInfo) -> None:
        """Raise IntegrityError "refusing tar member 'NAME': REASON" for a member restore refuses."""

        def refuse(reason: str) -> IntegrityError:
            return IntegrityError(f"refusing tar member '{member.name}': {reason}")

        name = member.name.rstrip("/")
        if name.startswith("/"):
            raise refuse("absolute path")
        parts = name.split("/")
        if ".." in parts:
            raise refuse("'..' in its path")
        if member.isdev() or member.isfifo():
            raise refuse("device files and fifos are not restored")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise refuse(f"unsupported member type {member.type!r}")
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            if above in self._symlinks:
                raise refuse(f"it would be written through the symlink {above}")
        if member.islnk():
            target = member.linkname.rstrip("/")
            if target.startswith("/") or ".." in target.split("/"):
                raise refuse(f"hard link to {member.linkname} outside the destination")
            if target in self._symlinks:
                raise refuse(f"hard link to the symlink {member.linkname}")
        if member.issym():
            self._symlinks.add(name)
        else:
            self._symlinks.discard(name)


def check_tar_stream(stream: BinaryIO) -> list[str]:
    """Read a whole tar stream; the problems restore would refuse it for (empty: restorable).

    Stops at the first refused member (restore stops there too); a stream that is not a valid
    tar archive is one problem.
    """
    guard = MemberGuard()
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
            while (member := tar.next()) is not None:
                cast(Any, tar).members.clear()  # memory stays flat, as in restore
                guard.check(member)
    except IntegrityError as error:
        return [str(error)]
    except tarfile.TarError as error:
        return [f"not a valid tar archive: {error}"]
    finally:
        while stream.read(CHUNK):  # the writer side must never block on a full pipe
            pass
    return []


@contextmanager
def tar_checking_sink() -> Iterator[tuple[BinaryIO, Callable[[], list[str]]]]:
    """A writable sink whose bytes are checked as a tar stream by a thread.

    Yields (sink, finish): write the plain stream into `sink`, then call `finish()` for the
    problems (closes the sink, joins the thread).
    """
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    writer = os.fdopen(write_fd, "wb")
    problems: list[str] = []

    def consume() -> None:
        try:
            problems.extend(check_tar_stream(reader))
        except Exception as error:  # the thread must always report something
            problems.append(f"checking the tar stream failed: {error}")

    thread = threading.Thread(target=consume, daemon=True, name="tar-check")
    thread.start()

    def finish() -> list[str]:
        if not writer.closed:
            writer.close()
        thread.join()
        return problems

    try:
        yield cast(BinaryIO, writer), finish
    finally:
        if not writer.closed:
            writer.close()
        thread.join()
        reader.close()
