"""Shared test configuration.

Fixtures live in tests/fixtures/<service>.py, one module per real service, and are loaded here.
With BACKUPCTL_TEST_STRICT=1 (set by .ci/run) every skip becomes a failure: in CI nothing the
machine can run may be skipped; on a developer's laptop a missing service is a skip.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.core",
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.sshd",
    "tests.fixtures.mariadb",
    "tests.fixtures.restic",
    "tests.fixtures.docker",
]

STRICT = os.environ.get("BACKUPCTL_TEST_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and call.when in ("setup", "call"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skip turned into failure (BACKUPCTL_TEST_STRICT=1): {reason}"
