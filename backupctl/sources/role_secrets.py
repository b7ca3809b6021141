"""The secrets artifact of a database source: the password hashes of its roles/accounts.

Captured only with `roles: {passwords: true}` (sources/pg_roles.py, sources/mariadb_grants.py),
stored as an artifact of its own (`<source>.secrets`, core.manifest.secrets_source) — encrypted
like a dump, verified like one, never in the manifest, which is readable without the private
key. Plain form: JSON `{"format": "backupctl-role-secrets", "version": 1, "kind": "postgres" |
"mysql", "passwords": {role or user@host: hash or CREATE USER statement}}`. Every value read or
written is registered as a secret, so `mask()` hides it in any error or log line.
"""

from __future__ import annotations

import json

from backupctl.core.secrets import register_secret
from backupctl.errors import SourceError

SECRETS_FORMAT = "backupctl-role-secrets"
SECRETS_VERSION = 1


def secrets_document(kind: str, passwords: dict[str, str]) -> bytes:
    """The plain bytes of a secrets artifact of source kind `kind`."""
    for secret in passwords.values():
        register_secret(secret)
    document = {"format": SECRETS_FORMAT, "version": SECRETS_VERSION, "kind": kind, "passwords": passwords}
    return json.dumps(document, sort_keys=True).encode()


def read_secrets(data: bytes) -> dict[str, str]:
    """The passwords (by role or `user@host`) of a secrets artifact's plain bytes. Raises
    SourceError for anything else."""
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("format") != SECRETS_FORMAT:
        raise SourceError("the secrets artifact is not a backupctl role-secrets document")
    passwords = document.get("passwords")
    found = {str(k): str(v) for k, v in passwords.items()} if isinstance(passwords, dict) else {}
    for secret in found.values():
        register_secret(secret)
    return found
