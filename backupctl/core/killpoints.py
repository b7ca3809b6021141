"""Test-only: stop a run at a named point so that a test can kill it exactly there.

`BACKUPCTL_TEST_PAUSE_AT=<point>:<marker file>` (read here and nowhere else) makes `pause_point`
create the marker file and sleep until the process is killed, when the run reaches `<point>`;
tests/e2e/test_kill_points.py uses it for the points no file or object on a target reveals
(after a manifest reached one target but not the next, before the catalog commit, ...). Never
set it in production: a run would hang there. Unset, `pause_point` returns at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_PAUSE_AT = os.environ.get("BACKUPCTL_TEST_PAUSE_AT", "")


def pause_point(point: str) -> None:
    """Hang here (until killed) when the test-only setting names `point`."""
    if not _PAUSE_AT:
        return
    name, _, marker = _PAUSE_AT.partition(":")
    if name != point:
        return
    Path(marker).touch()
    while True:
        time.sleep(60)
