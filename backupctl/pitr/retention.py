"""Pruning of archived segments older than what the oldest kept base backup (or dump) needs.

Rules (source-agnostic; the source says where its oldest kept base starts with `keep_from` and
how names sort with `ChainRules.sort_key`):

- chain segments sorting before `keep_from` are deleted, oldest first; side files (records whose
  `rules.in_chain` is false, e.g. PostgreSQL `.history`/`.backup`) are deleted when
  `side_file_doomed(record)` says so (default: never — timeline history files are tiny and
  restores need them);
- deletion stops at the first segment that object lock retains (`RetainedByLock`): since it goes
  oldest first, what stays is always one contiguous window — never a hole inside it;
- `dry_run=True` only reports what would be deleted;
- segment objects left without a record (an interrupted push, or a data object locked after its
  record went) below `keep_from` are swept too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backupctl.errors import RetainedByLock
from backupctl.pitr.archive import SegmentArchive, SegmentRecord
from backupctl.pitr.chain import ChainRules


@dataclass
class SegmentPrune:
    target: str
    keep_from: str | None
    doomed: list[str] = field(default_factory=list)  # deleted (or, in a dry run, to delete)
    retained_by_lock: list[str] = field(default_factory=list)
    orphans_swept: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "keep_from": self.keep_from,
            "deleted" if not self.dry_run else "would_delete": self.doomed,
            "retained_by_lock": self.retained_by_lock,
            "orphans_swept": self.orphans_swept,
            "dry_run": self.dry_run,
        }


def prune_segments(
    archive: SegmentArchive,
    records: list[SegmentRecord],
    rules: ChainRules,
    keep_from: str | None,
    *,
    dry_run: bool = False,
    side_file_doomed: Callable[[SegmentRecord], bool] | None = None,
) -> SegmentPrune:
    """Delete the segments of `archive` that sort before `keep_from` (None: keep everything).

    `records` are the archive's records (`archive.list_records(trusted)`). Returns what was (or
    would be) deleted; stops at the first segment retained by object lock.
    """
    result = SegmentPrune(target=archive.target.name, keep_from=keep_from, dry_run=dry_run)
    if keep_from is None:
        return result
    bound = rules.sort_key(keep_from)
    doomed = sorted(
        (r.name for r in records if rules.in_chain(r) and rules.sort_key(r.name) < bound),
        key=rules.sort_key,
    )
    side = [r.name for r in records if not rules.in_chain(r) and side_file_doomed and side_file_doomed(r)]
    for name in [*doomed, *side]:
        if dry_run:
            result.doomed.append(name)
            continue
        try:
            archive.delete_segment(name)
        except RetainedByLock:
            result.retained_by_lock.append(name)
            if name in doomed:
                break  # oldest first: stopping here keeps the retained window contiguous
            continue
        result.doomed.append(name)
    if not dry_run:
        recorded = {r.name for r in records} - set(result.doomed)
        for name in sorted(archive.stored_segment_names() - recorded, key=rules.sort_key):
            if rules.sort_key(name) >= bound:
                continue  # maybe a push in progress right now
            try:
                archive.target.delete(archive.segment_key(name))
            except RetainedByLock:
                continue
            result.orphans_swept.append(name)
    return result
