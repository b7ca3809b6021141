"""`backupctl evidence verify BUNDLE`: the same checks an auditor makes with ssh-keygen and
sha256sum, plus the run ledger's hash chain and, when the catalog is reachable, that nothing in
it changed since the export."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backupctl.catalog.ledger import Audit, LedgerRecord, audit, chain_problems, iter_ledger
from backupctl.catalog.store import Catalog
from backupctl.core import tarfilter
from backupctl.core.forked import Forked
from backupctl.errors import ConfigError, IntegrityError
from backupctl.evidence import sshsig
from backupctl.evidence.bundle import SIGNATURE, SIGNERS, SUMS, file_sha256, read_document_items


@dataclass
class Verdict:
    bundle: str
    signer: str | None = None
    files: int = 0
    ledger_records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "ok": self.ok,
            "signer": self.signer,
            "files": self.files,
            "ledger_records": self.ledger_records,
            "problems": self.problems,
        }


def verify_bundle(bundle: Path, catalog: Catalog | None, allowed_signers: Path | None = None) -> Verdict:
    """Check a bundle directory or .tar. Raises ConfigError when it is neither; every problem
    found (changed, missing or extra file, bad signature, broken chain, edited record) is named
    in the returned Verdict."""
    if bundle.is_dir():
        return _verify_dir(bundle, bundle, catalog, allowed_signers)
    if bundle.is_file() and tarfile.is_tarfile(bundle):
        with tempfile.TemporaryDirectory(prefix="backupctl-verify-") as tmp, tarfile.open(bundle) as tar:
            try:
                tarfilter.extract_all(tar, tmp)
            except tarfilter.RefusedMember as error:
                return Verdict(str(bundle), problems=[f"the tar holds an unsafe member: {error}"])
            roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(roots) != 1:
                return Verdict(str(bundle), problems=["the tar does not hold exactly one bundle directory"])
            return _verify_dir(bundle, roots[0], catalog, allowed_signers)
    raise ConfigError(f"{bundle} is not an evidence bundle (a directory or a .tar)")


def _verify_dir(label: Path, root: Path, catalog: Catalog | None, allowed_signers: Path | None) -> Verdict:
    # The catalog's full audit runs in a forked process meanwhile (the second CPU: it is as long
    # as everything else verify does, evidence benchmark).
    with ExitStack() as stack:
        auditor = None if catalog is None else stack.enter_context(Forked(partial(_audit_worker, catalog)))
        verdict = Verdict(str(label))
        sums_path = root / SUMS
        if not sums_path.is_file():
            verdict.problems.append(f"{SUMS} is missing")
            return verdict
        sums = sums_path.read_bytes()
        try:
            key = sshsig.verify((root / SIGNATURE).read_text(), sums)
            verdict.signer = _trusted(key, allowed_signers or root / SIGNERS)
        except FileNotFoundError:
            verdict.problems.append(f"{SIGNATURE} is missing")
        except IntegrityError as error:
            verdict.problems.append(f"{SIGNATURE}: {error}")
        listed: set[str] = set()
        for line in sums.decode(errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            listed.add(name)
            path = root / name
            if not path.is_file():
                verdict.problems.append(f"file {name}: missing")
            elif file_sha256(path) != digest:  # streamed: ledger.jsonl is 100+ MB
                verdict.problems.append(f"file {name}: changed (sha256 differs from {SUMS})")
        present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        for name in sorted(present - listed - {SUMS, SIGNATURE}):
            verdict.problems.append(f"file {name}: not listed in {SUMS}")
        verdict.files = len(listed)
        _check_ledger(root, catalog, verdict)
        if auditor is not None:
            verdict.problems += [f"catalog now: {p}" for p in auditor.result().problems]
    return verdict


def _audit_worker(catalog: Catalog, inbox: object) -> Audit:
    """In the forked child: the catalog's full audit (its own connection)."""
    catalog.engine.dispose(close=False)
    with catalog.engine.connect() as connection:
        return audit(connection)


def _trusted(key: Ed25519PublicKey, signers: Path) -> str:
    wire = sshsig.public_wire(key)
    import base64

    encoded = base64.b64encode(wire).decode()
    try:
        lines = signers.read_text().splitlines()
    except FileNotFoundError:
        raise IntegrityError(f"no allowed signers file {signers}") from None
    for line in lines:
        if encoded in line.split():
            return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")
    raise IntegrityError(f"the signing key is not in {signers}")


@dataclass
class _Segment:
    """What one pass over ledger.jsonl saw besides its chain."""

    count: int = 0
    first_seq: int | None = None
    last_hash: str | None = None
    newest_status: dict[str, str | None] = field(default_factory=dict)  # run id -> in its newest record
    catalog_problems: list[str] = field(default_factory=list)


def _check_ledger(root: Path, catalog: Catalog | None, verdict: Verdict) -> None:
    """The segment's chain, its ends against chain.json, the runs of evidence.json against their
    newest records, and (with a catalog) every record against the catalog's: one streamed pass
    over ledger.jsonl (memory flat in its size: reading it whole took 600 MB for 155k records,
    evidence benchmark)."""
    try:
        chain = json.loads((root / "chain.json").read_text())
        ledger = chain["ledger"]
        runs = {
            str(run["id"]): str(run["status"]) for run in read_document_items(root / "evidence.json", "runs")
        }
    except (OSError, ValueError, TypeError, KeyError) as error:
        verdict.problems.append(f"cannot read the bundle's ledger: {error}")
        return
    seen = _Segment()
    try:
        with ExitStack() as stack:
            now: Iterator[LedgerRecord] | None = None
            if catalog is not None:
                connection = stack.enter_context(catalog.engine.connect())
                now = iter_ledger(connection, int(ledger["from_seq"]) - 1)
            stream = stack.enter_context((root / "ledger.jsonl").open())
            records = _tapped(stream, runs, now, seen)
            chain_found = [f"ledger.jsonl: {p}" for p in chain_problems(records, ledger["anchor"])]
    except (OSError, ValueError, TypeError) as error:
        verdict.problems.append(f"cannot read the bundle's ledger: {error}")
        return
    verdict.ledger_records = seen.count
    if seen.first_seq is not None and seen.first_seq != ledger["from_seq"]:
        verdict.problems.append(f"ledger.jsonl: starts at record {seen.first_seq}, not {ledger['from_seq']}")
    verdict.problems += chain_found
    if seen.last_hash is not None and seen.last_hash != ledger["head"]:
        verdict.problems.append("ledger.jsonl: its last record is not the head recorded in chain.json")
    for run_id, status in runs.items():
        if run_id in seen.newest_status and seen.newest_status[run_id] != status:
            verdict.problems.append(
                f"evidence.json: run {run_id} says {status}, the ledger {seen.newest_status[run_id]}"
            )
    verdict.problems += seen.catalog_problems


def _tapped(
    stream: TextIO, runs: dict[str, str], now: Iterator[LedgerRecord] | None, seen: _Segment
) -> Iterator[LedgerRecord]:
    """The records of ledger.jsonl, noting on the way what _check_ledger needs (`seen`) and
    comparing each with the catalog's record of the same seq (`now`, in seq order)."""
    current: LedgerRecord | None = next(now, None) if now is not None else None
    for line in stream:
        record = LedgerRecord(**json.loads(line))
        seen.count += 1
        if seen.first_seq is None:
            seen.first_seq = record.seq
        seen.last_hash = record.hash
        if record.kind == "snapshot" and record.subject in runs:
            seen.newest_status[record.subject] = record.data.get("status")
        if now is not None:
            while current is not None and current.seq < record.seq:
                current = next(now, None)
            what = f"catalog: ledger record {record.seq} ({record.kind} {record.subject})"
            if current is None or current.seq != record.seq:
                seen.catalog_problems.append(f"{what} was deleted since the export")
            elif current != record:
                seen.catalog_problems.append(f"{what} was edited since the export")
        yield record
