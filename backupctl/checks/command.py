"""Command checks: run a program in (Docker) or for (local runtime) a service.

Passes when the exit code equals `exit_code` (default 0) and, when `output_contains` is given,
the output (stdout and stderr as the runtime merges them) contains that substring. The argv is
passed as written: no shell, no placeholders and no secret references, because a command line
is visible to every process on the host (`ps`) and secrets must never be on one.
"""

from __future__ import annotations

from backupctl.checks.base import CheckContext, CheckOutcome, excerpt, register_check, show
from backupctl.drills.schema import CommandCheck


@register_check("command")
def run_command(check: CommandCheck, context: CheckContext) -> CheckOutcome:
    """Run the check's argv in its service and compare exit code and output."""
    service = context.service(check.service)
    result = context.runtime.exec(service, list(check.command))
    problems: list[str] = []
    if result.exit_code != check.exit_code:
        problems.append(f"expected exit code {check.exit_code}, got {result.exit_code}")
    if check.output_contains is not None and check.output_contains not in result.output:
        problems.append(f"expected the output to contain {show(check.output_contains)}")
    # The tail of the output is where programs say why they failed.
    output = f"output: {excerpt(result.output, tail=True)}" if result.output.strip() else "no output"
    if problems:
        return CheckOutcome(False, f"{'; '.join(problems)}; {output}")
    wanted = f"exit code {check.exit_code}"
    if check.output_contains is not None:
        wanted += f" and output containing {show(check.output_contains)}"
    return CheckOutcome(True, f"expected {wanted}: ok ({output})")
