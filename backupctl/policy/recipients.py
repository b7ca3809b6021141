"""Does anyone this host knows hold a key to the policy's backups?

An operator who forgets to replace an example recipient encrypts every backup to a key nobody
holds; nothing fails until the first restore. `policy validate` and `doctor` therefore warn when
no recipient of a policy matches an age identity backupctl can see (the policy's
`encryption.identity`, or `age-identity.txt` in the keys directory), unless the policy declares
`encryption.escrow: true` (its identities are kept elsewhere on purpose, e.g. offline).
"""

from __future__ import annotations

from pathlib import Path

from backupctl.core.crypto import parse_identities, parse_recipients
from backupctl.errors import BackupctlError
from backupctl.policy.schema import Policy


def visible_recipients(policy: Policy, keys_dir: Path) -> set[str]:
    """Public keys (age1...) of the identities this host can read for `policy`; unreadable ones skipped."""
    texts: list[str] = []
    if policy.encryption.identity is not None:
        try:
            texts.append(policy.encryption.identity.resolve())
        except BackupctlError:
            pass  # not on this host (the recommended layout): the keys dir may still hold one
    try:
        texts.append((keys_dir / "age-identity.txt").read_text())
    except OSError:
        pass
    found: set[str] = set()
    for text in texts:
        try:
            found.update(str(identity.to_public()) for identity in parse_identities(text))
        except BackupctlError:
            continue
    return found


def unmatched_recipients_warning(policy: Policy, keys_dir: Path) -> str | None:
    """A warning when no recipient of `policy` matches an identity this host can see, else None.

    None as well when the policy declares escrow or its recipients do not parse (validation
    reports that on its own).
    """
    if policy.encryption.escrow:
        return None
    try:
        recipients = {str(r) for r in parse_recipients(policy.encryption.recipients)}
    except BackupctlError:
        return None
    if recipients & visible_recipients(policy, keys_dir):
        return None
    return (
        f"policy '{policy.name}': no recipient matches an age identity on this host "
        f"(encryption.identity, {keys_dir / 'age-identity.txt'}): backups would be encrypted to keys "
        "nobody here holds; use the recipient `backupctl keys generate` printed, or set "
        "`encryption.escrow: true` if the identity is kept elsewhere on purpose"
    )
