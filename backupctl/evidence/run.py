"""The actions behind `backupctl report` and `backupctl evidence`: load policies, build the
document, write outputs."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from backupctl.catalog.ledger import Audit, audit
from backupctl.catalog.store import Catalog
from backupctl.core.forked import Forked
from backupctl.errors import ConfigError, PolicyInvalid
from backupctl.evidence.document import build
from backupctl.evidence.pdf import PdfWorker
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
    settings: Settings, period: Period, names: tuple[str, ...], *, lazy_runs: bool = False
) -> tuple[dict[str, Any], list[LoadedPolicy], Catalog]:
    """The document of `period` for the policies `names` (all when empty); `lazy_runs`: see
    document.build (the bundle writer's form). The ledger audit runs in a forked process while
    the runs are read and the controls evaluated (see bundle.export)."""
    policies = load_policies(settings, names)
    catalog = Catalog.open(settings.catalog_url)
    with without_cyclic_gc(), Forked(partial(_audit_worker, catalog)) as auditor:
        document = build(
            catalog, period, policies, include_all=not names, lazy_runs=lazy_runs, audited=auditor.result
        )
    return document, policies, catalog


def _audit_worker(catalog: Catalog, inbox: object) -> Audit:
    """In the forked child: the full ledger audit (its own connection)."""
    catalog.engine.dispose(close=False)
    with catalog.engine.connect() as connection:
        return audit(connection)


def export_bundle(
    settings: Settings, period: Period, names: tuple[str, ...], out: Path, pdf: PdfWorker | None = None
) -> dict[str, Any]:
    """`evidence export`: the bundle of `period` for the policies `names` (all when empty)
    written to `out`. `pdf`: the worker that lays out the PDF, forked before this module was
    imported (see backupctl.evidence.pdf); default: one forked here. Returns the bundle's
    summary (bundle.export). Raises ConfigError (out exists, no signing key, unknown policy)."""
    if pdf is None:
        with PdfWorker() as worker:
            return export_bundle(settings, period, names, out, worker)
    from backupctl.evidence import bundle

    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out {out} already exists: choose a new path (bundles are never overwritten)")
    policies = load_policies(settings, names)
    catalog = Catalog.open(settings.catalog_url)

    def build_document(audited: Callable[[], Audit]) -> dict[str, Any]:
        with without_cyclic_gc():
            return build(catalog, period, policies, include_all=not names, lazy_runs=True, audited=audited)

    return bundle.export(
        build_document,
        catalog,
        out,
        settings.keys_dir,
        settings.state_dir,
        [item.file for item in policies],
        period.as_dict()["start"],
        pdf,
    )


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector. Building a document allocates about a million
    objects that all live until it is written (runs, copies, exceptions; nothing cyclic to
    reclaim), and each full collection walks all of them: 1.5 s of the 7 s a 50-policy quarter
    takes to build (evidence benchmark). Reference counting still frees everything as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_new(path: Path, text: str) -> None:
    """Write a new file atomically; exit 2 (ConfigError) when it exists."""
    if path.exists():
        raise ConfigError(f"--out {path} already exists: choose a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.rename(path)
