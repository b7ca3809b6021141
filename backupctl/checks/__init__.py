"""Drill checks: one module per kind (http, sql, command), one interface, one registry.

    from backupctl.checks import CheckContext, run_check
    result = run_check(drill.checks[0], CheckContext(runtime, {s.name: s for s in drill.services}))
"""

from backupctl.checks.base import (
    CheckContext,
    CheckOutcome,
    CheckResult,
    register_check,
    registered_checks,
    run_check,
)

__all__ = [
    "CheckContext",
    "CheckOutcome",
    "CheckResult",
    "register_check",
    "registered_checks",
    "run_check",
]
