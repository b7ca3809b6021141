"""`backupctl evidence export`: write a signed evidence bundle (a directory or a .tar).

Everything is written under a temporary name next to the destination and renamed into place
only when complete: a failed export leaves nothing behind. A destination that exists is an
error (exit 2), never overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from backupctl.catalog.ledger import Audit, Segment, audit, stamp
from backupctl.catalog.models import RunRecordRow
from backupctl.catalog.store import Catalog
from backupctl.core.crypto import load_signing_key
from backupctl.core.forked import Forked
from backupctl.errors import ConfigError
from backupctl.evidence import sshsig
from backupctl.evidence.document import RunTable
from backupctl.evidence.pdf import PdfWorker
from backupctl.evidence.report_html import COMPACT_ABOVE, render

INDEX_FILE = "evidence-bundles.json"  # in the state dir: the chain of exported bundles
SUMS, SIGNATURE, SIGNERS = "SHA256SUMS", "SHA256SUMS.sig", "allowed_signers"

VERIFY_MD = """# Verifying this evidence bundle

Nothing but OpenSSH (8.1 or newer) and coreutils is needed.

1. Check the signature over the checksum list (the key is also published by `backupctl keys`
   on the host; compare its line with `allowed_signers` here, or use your own copy):

       ssh-keygen -Y verify -f allowed_signers -I {identity} -n {namespace} -s SHA256SUMS.sig < SHA256SUMS

   Expected: `Good "{namespace}" signature for {identity} with ED25519 key SHA256:...`

2. Check every file against the list (a changed, missing or extra file fails):

       sha256sum --strict -c SHA256SUMS && test "$(find . -type f | wc -l)" -eq {files}

3. Chain: `chain.json` holds the SHA256SUMS digest of the previous bundle ({previous}). Compute
   `sha256sum SHA256SUMS` in the previous quarter's bundle and compare: a deleted or replaced
   bundle shows.

4. Run ledger: `ledger.jsonl` is a contiguous segment of the catalog's hash-chained run ledger;
   `backupctl evidence verify BUNDLE` recomputes every hash (see docs/evidence.md for the
   formula) and, where the catalog is reachable, compares it with the catalog now.
"""


def _write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    """A CSV table of `rows` (streamed to the file: runs.csv of a fleet is megabytes)."""
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})


def _cell(value: object) -> object:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A temporary directory next to `out`, removed on any failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# json.dumps(value, sort_keys=True), built once (see ledger.segment_line): the lines of evidence.json.
_LEDGER_LINE = json.JSONEncoder(sort_keys=True)


def write_document(document: dict[str, Any], stream: TextIO) -> None:
    """evidence.json: one top-level key per line, one line per item of its lists (a run, an
    exception, a control), keys sorted. Each line goes through the C encoder: `json.dump` with
    `indent` falls back to the pure-Python one, 1.5 s of CPU for a 50-policy quarter (evidence
    benchmark). Streamed item by item: no 20 MB string in memory."""
    stream.write("{")
    for index, key in enumerate(sorted(document)):
        stream.write(("," if index else "") + f"\n{_LEDGER_LINE.encode(key)}: ")
        value = document[key]
        if isinstance(value, RunTable) and not value:
            stream.write("[]")
        elif isinstance(value, list | RunTable) and value:
            stream.write("[")
            for position, item in enumerate(value):
                stream.write(("," if position else "") + "\n  " + _LEDGER_LINE.encode(item))
            stream.write("\n]")
        else:
            stream.write(_LEDGER_LINE.encode(value))
    stream.write("\n}\n")


def read_document_items(path: Path, key: str) -> Iterator[Any]:
    """The items of the list `key` of an evidence.json, one line at a time (the layout
    write_document writes: 25k runs as one JSON value were ~100 MB of Python objects); a file
    in another layout is parsed whole."""
    opening = _LEDGER_LINE.encode(key) + ": ["
    with path.open() as stream:
        for line in stream:
            line = line.rstrip("\n")
            if line in (opening + "]", opening + "],"):
                return
            if line == opening:
                for item in stream:
                    if item.startswith("]"):
                        return
                    yield json.loads(item.strip().removesuffix(","))
                raise ValueError(f"{path.name}: the list {key} is not closed")
    with path.open() as stream:
        whole = json.load(stream)
    yield from whole.get(key, []) if isinstance(whole, dict) else []


def read_index(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / INDEX_FILE
    if not path.exists():
        return []
    value: list[dict[str, Any]] = json.loads(path.read_text())
    return value


def export(
    build_document: Callable[[Callable[[], Audit]], dict[str, Any]],
    catalog: Catalog,
    out: Path,
    keys_dir: Path,
    state_dir: Path,
    policy_files: list[Path],
    period_start: str,
    pdf: PdfWorker,
) -> dict[str, Any]:
    """Write the bundle to `out` (a directory, or a tar file when the name ends in .tar).

    `build_document(audited)` builds the document (document.build with `audited`). Two phases
    run in forked processes on the second CPU meanwhile (evidence benchmark, docs/evidence.md
    "Performance"): the full ledger audit, which also writes the ledger segment in the same
    pass, while the document is built; the PDF (`pdf`, a worker forked before the export's
    modules were imported; WeasyPrint imported once the audit's process has ended, so their
    peaks do not add up) while evidence.json, the CSVs and the HTML are written.

    Returns a summary: path, files, SHA256SUMS digest, previous bundle, ledger records, the
    controls per status and the number of exceptions (the document itself is freed before the
    PDF's layout ends, see below). Raises
    ConfigError when `out` exists or no signing key exists (nothing is written then).
    """
    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out {out} already exists: choose a new path (bundles are never overwritten)")
    key = load_signing_key(keys_dir)
    index = read_index(state_dir)
    previous = index[-1] if index else None
    with _staging(out) as work:
        root = work / "bundle"
        root.mkdir()
        since, anchor = _segment_start(catalog, previous, period_start)
        with Forked(partial(_audit_worker, catalog, since, anchor, root)) as auditor:

            def audited() -> Audit:
                result = auditor.result()[0]
                pdf.prepare()  # the auditor has ended: WeasyPrint's import does not add to its peak
                return result

            document = build_document(audited)
            segment = auditor.result()[1]
            compact = len(document["controls"]) > COMPACT_ABOVE
            # First: the compact PDF names exceptions.csv by its sha256 (the paper binds the list).
            exceptions = root / "exceptions.csv"
            _write_csv(exceptions, document["exceptions"], ["policy", "control", "status", "detail"])
            html = render(
                document, "Backup evidence", compact=compact, exceptions_sha256=file_sha256(exceptions)
            )
            pdf.render(html, root / "report.pdf")
            _write_tables(document, root, policy_files)
            label = document["period"]["label"]
            statuses = [control["status"] for control in document["controls"]]
            counts = {status: statuses.count(status) for status in sorted(set(statuses))}
            exception_count = len(document["exceptions"])
            # The PDF's layout is the export's last and largest phase: whatever this process
            # still holds while it runs counts in the process tree's peak. The document (runs,
            # exceptions: ~50 MB of Python objects) is written by now; freed, its pages go back
            # to the system (pymalloc unmaps empty arenas) before the wait.
            del document, html, statuses
            _release_free_memory()
            pdf.result()
        chain = {
            "period": label,
            "previous": previous,
            "ledger": {
                "from_seq": since + 1,
                "anchor": anchor,
                "head_seq": segment.head_seq,
                "head": segment.head,
            },
        }
        (root / "chain.json").write_text(json.dumps(chain, indent=1, sort_keys=True) + "\n")
        (root / SIGNERS).write_text(sshsig.allowed_signers_line(key.private.public_key()) + "\n")
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        (root / "VERIFY.md").write_text(
            VERIFY_MD.format(
                identity=sshsig.IDENTITY,
                namespace=sshsig.NAMESPACE,
                files=len(files) + 3,
                previous=previous["period"] if previous else "none: this is the first bundle",
            )
        )
        files.append("VERIFY.md")
        sums = "".join(f"{file_sha256(root / name)}  {name}\n" for name in sorted(files))
        (root / SUMS).write_text(sums)
        (root / SIGNATURE).write_text(sshsig.sign(key.private, sums.encode()))
        digest = hashlib.sha256(sums.encode()).hexdigest()
        if out.suffix == ".tar":
            staged = work / "bundle.tar"
            with tarfile.open(staged, "w") as tar:
                tar.add(root, arcname=out.stem, recursive=True)
            staged.rename(out)
        else:
            root.rename(out)
    entry = {
        "period": label,
        "sha256sums": digest,
        "head_seq": segment.head_seq,
        "head": segment.head,
        "path": str(out),
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / INDEX_FILE).write_text(json.dumps([*index, entry], indent=1) + "\n")
    summary = {
        "path": str(out),
        "files": len(files) + 2,
        "sha256sums_digest": digest,
        "previous": previous,
        "ledger_records": segment.count,
        "controls": counts,
        "exceptions": exception_count,
    }
    return summary


def _release_free_memory() -> None:
    """Collect what reference counting left (cycles: the cyclic collector was paused while the
    document was built) and hand the C heap's free pages back to the system (glibc
    `malloc_trim`: large lists and strings come from malloc, not from pymalloc's arenas)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: its free pages stay until reused


def _write_tables(document: dict[str, Any], root: Path, policy_files: list[Path]) -> None:
    """evidence.json, the CSV tables (but exceptions.csv), the HTML report, the policies and the
    drill reports."""
    with (root / "evidence.json").open("w") as stream:
        write_document(document, stream)
    _write_csv(
        root / "controls.csv",
        document["controls"],
        ["policy", "control", "status", "summary", "exceptions", "measured"],
    )
    run_columns = ["id", "policy", "status", "started_at", "finished_at", "host", "trigger",
                   "stored_bytes", "encrypted", "copies", "error"]  # fmt: skip
    _write_csv(root / "runs.csv", document["runs"], run_columns)
    drill_columns = ["id", "policy", "drill", "snapshot_id", "target", "finished_at", "ok", "reason",
                     "rto_seconds", "rto_objective_seconds"]  # fmt: skip
    _write_csv(root / "drills.csv", document["drills"], drill_columns)
    crosswalk_columns = ["control", "clause", "title", "kind", "text"]
    _write_csv(root / "crosswalk.csv", document["crosswalk"], crosswalk_columns)
    (root / "report.html").write_text(render(document, "Backup evidence"))
    (root / "policies").mkdir()
    for path in policy_files:
        shutil.copyfile(path, root / "policies" / path.name)
    _copy_drill_reports(document, root / "drills")


def _audit_worker(
    catalog: Catalog, since: int, anchor: str | None, root: Path, inbox: Callable[[], Any]
) -> tuple[Audit, Segment]:
    """In the forked child: the full audit, writing ledger.jsonl on the way (its own connection:
    the parent's pooled ones are not shared across the fork)."""
    catalog.engine.dispose(close=False)
    with catalog.engine.connect() as connection, (root / "ledger.jsonl").open("w") as stream:
        segment = Segment(since, anchor, stream)
        result = audit(connection, segment)
    segment.stream = None  # type: ignore[assignment]  # not sent back
    return result, segment


def _segment_start(
    catalog: Catalog, previous: dict[str, Any] | None, period_start: str
) -> tuple[int, str | None]:
    """Where this bundle's ledger segment starts: after the previous bundle's head (the chain
    continues from bundle to bundle), else at the first record of the period (what came before
    is not evidence of it). Returns (the seq before the segment, the hash the segment links to)."""
    if previous is not None:
        return int(previous["head_seq"]), str(previous["head"])
    start = stamp(datetime.fromisoformat(period_start))
    with catalog.engine.connect() as connection:
        first = connection.execute(
            select(RunRecordRow.seq, RunRecordRow.prev_hash)
            .where(RunRecordRow.at >= start)
            .order_by(RunRecordRow.seq)
            .limit(1)
        ).first()
    if first is None or int(first[0]) == 1:
        return 0, None
    return int(first[0]) - 1, str(first[1])


def _copy_drill_reports(document: dict[str, Any], into: Path) -> None:
    """Every drill report of the period that still exists on this host."""
    for drill in document["drills"]:
        for kind, path in sorted(drill.get("report_paths", {}).items()):
            source = Path(path)
            if source.is_file():
                target = into / drill["id"] / f"{kind}{source.suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
