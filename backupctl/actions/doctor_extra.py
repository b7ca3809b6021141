"""`doctor` checks of the operator's path, kept apart from actions/doctor.py (one hook there).

- recipients: a policy whose age recipients match no identity this host can see (and that does
  not declare escrow) is a warning: its backups may be encrypted to a key nobody holds.
"""

from __future__ import annotations

from backupctl.actions.doctor_findings import Finding
from backupctl.policy.recipients import unmatched_recipients_warning
from backupctl.policy.schema import Policy
from backupctl.settings import Settings


def extra_policy_findings(settings: Settings, policy: Policy) -> list[Finding]:
    """The operator-path findings for one policy (warnings only, never failures)."""
    findings: list[Finding] = []
    check = f"{policy.name}: recipients"
    warning = unmatched_recipients_warning(policy, settings.keys_dir)
    if warning:
        fix = "encrypt to the recipient `backupctl keys generate` printed, or set encryption.escrow: true"
        findings.append(Finding(check, False, warning, fix, warn=True))
    else:
        findings.append(Finding(check, True, "a recipient matches an identity here, or escrow is declared"))
    from backupctl.actions.doctor_privileges import privilege_findings

    findings.extend(privilege_findings(policy))
    return findings
