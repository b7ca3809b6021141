"""The achieved RPO of a source's point-in-time archive, whatever the engine, for `backupctl status`.

One small interface (`PitrArchiveProbe`) with one implementation per engine, chosen by the
explicit registry keyed on the source's YAML `type:` (like backupctl.targets.registry): the
general commands ask "what does this source's point-in-time archive look like", never which
engine it is. Each implementation reuses its engine's own status action (`wal status`,
`binlog status`): the RPO is computed once, in one place per engine, from listings and the
catalog (no segment or binlog is downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from backupctl.catalog.store import ArchiveObservation, Catalog
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

# (metric name, help text, value): the engine's own Prometheus gauges, labelled policy + source.
MetricSample = tuple[str, str, float]


@dataclass
class PitrArchiveStatus:
    """What `status` shows of one source's point-in-time archive.

    archive: what the archive holds, in words ("WAL", "binlogs"); rpo_seconds: now - the newest
    archived segment/event (None when nothing is archived); objective_seconds: the RPO the engine's
    own status holds it to; problems: why it fails (breached RPO, holes, missing base backup);
    detail: the engine's own `--json` status (`wal status` / `binlog status`).
    """

    source: str
    archive: str
    rpo_seconds: float | None
    objective_seconds: float
    newest: str | None
    problems: list[str]
    detail: dict[str, Any] = field(default_factory=dict)
    metrics: list[MetricSample] = field(default_factory=list)
    observation: ArchiveObservation | None = None  # what the catalog records of this reading

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "archive": self.archive,
            "ok": self.ok,
            "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 1),
            "objective_seconds": self.objective_seconds,
            "newest": self.newest,
            "problems": self.problems,
        }


class PitrArchiveProbe(Protocol):
    """Reads one engine's point-in-time archive of a source (listings and catalog only)."""

    def __call__(
        self, settings: Settings, catalog: Catalog, policy: Policy, source_name: str, now: datetime
    ) -> PitrArchiveStatus: ...


# The one registry: source `type:` -> "module:function" of its probe, imported only when a policy
# has such a source (the probes live beside each engine's status action). Adding an engine with a
# point-in-time archive touches its probe module and one line here (docs/pitr.md, "status").
PROBES: dict[str, str] = {
    "postgres": "backupctl.actions.wal_pitr_probe:wal_archive_status",
    "mysql": "backupctl.actions.binlog_pitr_probe:binlog_archive_status",
}


def probe_for(source_type: str) -> PitrArchiveProbe | None:
    """The probe of a source type (None: that kind has no point-in-time archive)."""
    import importlib

    spec = PROBES.get(source_type)
    if spec is None:
        return None
    module, function = spec.split(":")
    probe: PitrArchiveProbe = getattr(importlib.import_module(module), function)
    return probe


def pitr_statuses(
    settings: Settings, catalog: Catalog, policy: Policy, now: datetime
) -> list[PitrArchiveStatus]:
    """The point-in-time archive status of every source of `policy` with a `pitr:` block.

    A probe that cannot read its archive (a target down, a bad key) is a problem of that source,
    never an exception: `status` still reports the other rules.
    """
    from backupctl.core.secrets import mask
    from backupctl.errors import BackupctlError

    results = []
    for source in policy.sources:
        if getattr(source, "pitr", None) is None:
            continue
        probe = probe_for(source.type)
        if probe is None:
            continue
        try:
            results.append(probe(settings, catalog, policy, source.name, now))
        except BackupctlError as error:
            results.append(
                PitrArchiveStatus(
                    source.name,
                    "archive",
                    None,
                    policy.objectives.rpo.total_seconds(),
                    None,
                    [f"unreadable: {mask(str(error))}"],
                )
            )
    return results


def record_observations(catalog: Catalog, statuses: list[PitrArchiveStatus]) -> None:
    """Record in the catalog what was read of each archive (evidence: the achieved RPO of a PITR
    source over a period comes from these observations, `wal push` never writes the catalog)."""
    for status in statuses:
        if status.observation is not None:
            catalog.record_archive_observation(status.observation)
