"""backupctl.core.forked: a function in a forked child, its result (or its error) through a pipe."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from backupctl.core.forked import ChildFailed, Forked


def _pid_and_double(inbox: Callable[[], Any]) -> tuple[int, int]:
    return os.getpid(), 2 * inbox()


def _fails(inbox: Callable[[], Any]) -> None:
    raise RuntimeError("the child's own error")


def _dies(inbox: Callable[[], Any]) -> None:
    os._exit(7)


def test_the_result_comes_from_another_process_and_input_can_follow() -> None:
    with Forked(_pid_and_double) as child:
        child.send(21)
        pid, doubled = child.result()
        assert (pid, doubled) == (child.pid, 42) and pid != os.getpid()
        assert child.result() == (pid, 42)  # the same value again, no second wait


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_traceback() -> None:
    with Forked(_fails) as child, pytest.raises(ChildFailed, match="the child's own error"):
        child.result()


def test_a_child_that_dies_without_a_result_is_an_error() -> None:
    with Forked(_dies) as child, pytest.raises(ChildFailed, match="exit status 7"):
        child.result()


def test_leaving_without_a_result_kills_and_reaps_the_child() -> None:
    with Forked(_pid_and_double) as child:  # waits for input forever
        pid = child.pid
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left behind
    with pytest.raises(ChildFailed):
        child.result()


def _sum_until_none(inbox: Callable[[], Any]) -> int:
    total = 0
    while (value := inbox()) is not None:
        total += value
    return total


def test_values_sent_one_after_another_arrive_in_order() -> None:
    """What the PDF worker relies on: told to prepare first, handed its input later."""
    with Forked(_sum_until_none) as child:
        for value in (1, 2, 39):
            child.send(value)
        child.send(None)
        assert child.result() == 42


def test_a_child_waiting_for_more_input_ends_when_the_parent_asks_for_the_result() -> None:
    with Forked(_sum_until_none) as child:
        child.send(5)
        with pytest.raises(ChildFailed, match="EOFError"):
            child.result()  # the inbox is closed: the child's next inbox() sees end-of-file
