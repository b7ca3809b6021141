"""The actions behind `backupctl report` and `backupctl evidence`: load policies, build the
document, write outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backupctl.catalog.store import Catalog
from backupctl.errors import ConfigError, PolicyInvalid
from backupctl.evidence.document import build
from backupctl.evidence.period import Period
from backupctl.policy.loader import LoadedPolicy, validate_paths
from backupctl.settings import Settings


def load_policies(settings: Settings, names: tuple[str, ...]) -> list[LoadedPolicy]:
    """The valid policies (secrets unresolved: evidence needs none), optionally only `names`.
    Raises ConfigError for an unknown name or when no policy file is valid."""
    loaded, issues = validate_paths([settings.policies], check_secrets=False)
    if issues and not loaded:
        raise PolicyInvalid(issues)
    by_name = {item.policy.name: item for item in loaded}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(
            f"--policy: no policy named {', '.join(unknown)} (known: {', '.join(sorted(by_name))})"
        )
    return [by_name[name] for name in (names or tuple(sorted(by_name)))]


def document_for(
    settings: Settings, period: Period, names: tuple[str, ...]
) -> tuple[dict[str, Any], list[LoadedPolicy], Catalog]:
    policies = load_policies(settings, names)
    catalog = Catalog.open(settings.catalog_url)
    return build(catalog, period, policies, include_all=not names), policies, catalog


def write_new(path: Path, text: str) -> None:
    """Write a new file atomically; exit 2 (ConfigError) when it exists."""
    if path.exists():
        raise ConfigError(f"--out {path} already exists: choose a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.rename(path)
