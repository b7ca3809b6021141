"""Run one function in a forked child process, its result handed back through a pipe.

What the evidence export and verify use to overlap independent phases on a second CPU (the
ledger audit, the PDF layout): the child starts with a copy of the parent's memory (modules,
policies, an open catalog engine: call `engine.dispose(close=False)` in the child before using
it), so nothing is imported or loaded twice. The child ends with `os._exit`: none of the
parent's `finally` blocks, `atexit` handlers or buffered output run twice.

A child can also receive values after it started (`send`, one `inbox()` each, in order): a
worker forked early, while the parent is small, that prepares (imports) when told and then
waits for its input.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, Generic, TypeVar

from backupctl.errors import BackupctlError

T = TypeVar("T")


class ChildFailed(BackupctlError):
    """The forked child raised (its traceback is in the message) or died."""


# The parent's ends of every live child's pipes: a child forked later closes them, so that only
# the parent holds them (a child's end-of-file then means the parent closed or died).
_PARENT_ENDS: set[int] = set()


class Forked(Generic[T]):
    """`function(inbox)` running in a forked child; `result()` waits for its return value.

    Each `inbox()` in the child returns the next value the parent `send`s (blocking until
    then). Use as a context manager: leaving it without `result()` (an error in the parent)
    kills the child.
    """

    def __init__(self, function: Callable[[Callable[[], Any]], T]) -> None:
        results_read, results_write = os.pipe()
        inbox_read, inbox_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            for fd in (results_read, inbox_write, *_PARENT_ENDS):
                os.close(fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _run_child(function, inbox_read, results_write)
        os.close(results_write)
        os.close(inbox_read)
        self.pid = pid
        _PARENT_ENDS.update((results_read, inbox_write))
        self._results: BinaryIO | None = os.fdopen(results_read, "rb")
        self._inbox: BinaryIO | None = os.fdopen(inbox_write, "wb")
        self._done = False
        self._outcome: tuple[T] | None = None

    def send(self, value: Any) -> None:
        """Hand `value` to the child's next `inbox()` (any number of times before `result()`)."""
        assert self._inbox is not None, "send() after result()"
        try:
            pickle.dump(value, self._inbox, protocol=pickle.HIGHEST_PROTOCOL)
            self._inbox.flush()
        except BrokenPipeError:
            self._close_inbox()  # the child already ended: result() says how

    def result(self) -> T:
        """The child's return value (waits for it; the same value on every call); raises
        ChildFailed when it raised or died."""
        if self._outcome is not None:
            return self._outcome[0]
        if self._results is None:
            raise ChildFailed(f"child process {self.pid} was stopped")
        self._close_inbox()  # nothing more is sent: a child waiting for input sees end-of-file
        try:
            data = self._results.read()
        finally:
            self._close_results()
            self._close_inbox()
            _, status = os.waitpid(self.pid, 0)
            self._done = True
        code = os.waitstatus_to_exitcode(status)
        if not data:
            raise ChildFailed(f"child process {self.pid} ended without a result (exit status {code})")
        ok, value = pickle.loads(data)
        if not ok:
            raise ChildFailed(str(value))
        self._outcome = (value,)
        result: T = value
        return result

    def kill(self) -> None:
        """Stop the child (if it still runs) and reap it."""
        if self._done:
            return
        self._close_results()
        self._close_inbox()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        self._done = True

    def _close_inbox(self) -> None:
        if self._inbox is not None:
            _PARENT_ENDS.discard(self._inbox.fileno())
            try:
                self._inbox.close()
            except BrokenPipeError:
                pass
            self._inbox = None

    def _close_results(self) -> None:
        if self._results is not None:
            _PARENT_ENDS.discard(self._results.fileno())
            self._results.close()
            self._results = None

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _run_child(function: Callable[[Callable[[], Any]], Any], inbox_fd: int, results_fd: int) -> None:
    received = os.fdopen(inbox_fd, "rb")

    def inbox() -> Any:
        return pickle.load(received)  # EOFError when the parent sends nothing more

    code = 0
    try:
        outcome: tuple[bool, Any] = (True, function(inbox))
    except BaseException:
        outcome, code = (False, traceback.format_exc()), 1
    try:
        with os.fdopen(results_fd, "wb") as stream:
            pickle.dump(outcome, stream, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        code = 1
    os._exit(code)
