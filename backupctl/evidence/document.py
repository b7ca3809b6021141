"""The evidence document: controls per policy, runs, drills, exceptions, as one JSON-able dict."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from backupctl import __version__
from backupctl.catalog.ledger import Audit
from backupctl.catalog.store import Catalog
from backupctl.evidence.collect import Run, collect, policy_runs
from backupctl.evidence.controls import INSUFFICIENT_DATA, ControlResult, catalog_integrity, evaluate
from backupctl.evidence.crosswalk import crosswalk
from backupctl.evidence.period import Period
from backupctl.policy.loader import LoadedPolicy

SCHEMA_VERSION = 1


def build(
    catalog: Catalog,
    period: Period,
    policies: list[LoadedPolicy],
    *,
    include_all: bool,
    now: datetime | None = None,
    lazy_runs: bool = False,
    audited: Callable[[], Audit] | None = None,
) -> dict[str, Any]:
    """Evaluate every control of every policy over the period; the document evidence.json holds.

    `include_all`: also name catalog policies that have no policy file here (a fleet's other
    hosts), as exceptions rather than silently leaving them out. `lazy_runs`: `runs` is a
    RunTable (each row made when read) instead of a list of dicts: what the bundle writer reads.
    `audited`: the ledger audit done elsewhere (the bundle writer's second process), called
    once every policy's controls are evaluated; default: audited here, first.
    """
    now = now or datetime.now(UTC)
    names = [item.policy.name for item in policies]
    by_name = {item.policy.name: item for item in policies}
    data = collect(catalog, period, None if include_all else names, audited=audited is None)
    # The runs policy by policy: each policy's controls are evaluated as soon as its runs are
    # read, and its runs of the lookback (read by its own controls only) are dropped before the
    # next policy's are read: the export holds one policy's lookback, not all of them
    # (evidence benchmark, docs/evidence.md "Performance").
    evaluated: dict[str, list[ControlResult]] = {}
    in_period: dict[str, list[Run]] = {}
    hosts: set[str] = set()
    for runs in policy_runs(catalog, period, None if include_all else names):
        name = runs[0].policy
        hosts.update(run.host for run in runs)
        item = by_name.get(name)
        if item is None:
            continue  # in the catalog, no policy file here: named as an exception below
        data.runs[name] = runs
        evaluated[name] = evaluate(item.policy, data, now)
        del data.runs[name]
        in_period[name] = [run for run in runs if period.contains(run.started_at)]
    data.hosts = sorted(hosts)
    results: list[ControlResult] = []
    for item in policies:
        found = evaluated.pop(item.policy.name, None)
        results += evaluate(item.policy, data, now) if found is None else found  # None: no runs
    period_runs = [run for name in names for run in in_period.pop(name, [])]
    if audited is not None:
        data.audit = audited()
    results.append(catalog_integrity(data))
    exceptions = [
        {"control": r.control, "policy": r.policy, "status": r.status, "detail": detail}
        for r in results
        for detail in r.exceptions
    ]
    unknown = [name for name in data.catalog_policies if name not in names] if include_all else []
    exceptions += [
        {
            "control": "scope",
            "policy": name,
            "status": INSUFFICIENT_DATA,
            "detail": "runs in the catalog but no policy file here: its controls are not evaluated",
        }
        for name in unknown
    ]
    for r in results:
        if r.status == INSUFFICIENT_DATA and not r.exceptions:
            exceptions.append(
                {"control": r.control, "policy": r.policy, "status": r.status, "detail": r.summary}
            )
    return {
        "schema": "backupctl-evidence",
        "version": SCHEMA_VERSION,
        "period": period.as_dict(),
        "generated_at": now.isoformat(),
        "generator": {"host": socket.gethostname(), "backupctl_version": __version__},
        "hosts": data.hosts,
        "policies": [
            {
                "name": item.policy.name,
                "file": item.file.name,
                "sha256": item.sha256,
                "objectives": {
                    "rpo_seconds": item.policy.objectives.rpo.total_seconds(),
                    "rto_seconds": item.policy.objectives.rto.total_seconds(),
                },
                "schedule": item.policy.schedule,
            }
            for item in policies
        ],
        "controls": [r.as_dict() for r in results],
        "exceptions": exceptions,
        "runs": RunTable(period_runs) if lazy_runs else [run.as_dict() for run in period_runs],
        "verifications": [{**v, "at": v["at"].isoformat()} for v in data.verifications],
        "drills": [
            {**d, "started_at": d["started_at"].isoformat(), "finished_at": d["finished_at"].isoformat()}
            for d in data.drills
            if period.contains(d["finished_at"])
        ],
        "storage": _storage(period_runs),
        "ledger": {
            "records": data.audit.records,
            "head": data.audit.head,
            "head_seq": data.audit.head_seq,
            "problems": data.audit.problems,
        },
        "crosswalk": crosswalk(),
    }


class RunTable(Sequence[dict[str, Any]]):
    """The period's runs as evidence.json rows, each made when it is read. A 50-policy quarter
    has 25k of them: as dicts they were 26 MB of the export's peak RSS (evidence benchmark), while
    the bundle reads them only to stream them to evidence.json and runs.csv."""

    def __init__(self, runs: list[Run]) -> None:
        self._runs = runs

    def __len__(self) -> int:
        return len(self._runs)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [run.as_dict() for run in self._runs[index]]
        return self._runs[index].as_dict()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (run.as_dict() for run in self._runs)


def _storage(period_runs: list[Run]) -> dict[str, dict[str, int]]:
    """Bytes stored per policy and target by the period's complete copies."""
    used: dict[str, dict[str, int]] = {}
    for run in period_runs:
        for target, (status, _) in run.copies.items():
            if status == "complete":
                used.setdefault(run.policy, {}).setdefault(target, 0)
                used[run.policy][target] += run.stored_bytes
    return used
