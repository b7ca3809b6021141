"""Where things live: policies, state (catalog, keys), resolved from options, env and defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _is_root() -> bool:
    return os.geteuid() == 0


def default_policies_dir() -> Path:
    return Path("/etc/backupctl/policies") if _is_root() else Path("policies")


def default_state_dir() -> Path:
    if _is_root():
        return Path("/var/lib/backupctl")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "backupctl"


@dataclass(frozen=True)
class Settings:
    policies: Path
    state_dir: Path
    catalog_url: str
    keys_dir: Path

    @classmethod
    def resolve(
        cls,
        policies: str | None = None,
        state_dir: str | None = None,
        catalog: str | None = None,
        keys_dir: str | None = None,
    ) -> Settings:
        """Options win over environment (BACKUPCTL_*), which wins over defaults."""
        policies_path = Path(policies or os.environ.get("BACKUPCTL_POLICIES") or default_policies_dir())
        state = Path(state_dir or os.environ.get("BACKUPCTL_STATE_DIR") or default_state_dir())
        catalog_url = (
            catalog or os.environ.get("BACKUPCTL_CATALOG") or f"sqlite:///{state.absolute()}/catalog.sqlite"
        )
        keys = Path(keys_dir or os.environ.get("BACKUPCTL_KEYS_DIR") or state / "keys")
        return cls(policies_path, state, catalog_url, keys)
