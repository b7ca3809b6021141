"""`backupctl evidence verify BUNDLE`: the same checks an auditor makes with ssh-keygen and
sha256sum, plus the run ledger's hash chain and, when the catalog is reachable, that nothing in
it changed since the export."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backupctl.catalog.ledger import LedgerRecord, audit, chain_problems, read_ledger
from backupctl.catalog.store import Catalog
from backupctl.core import tarfilter
from backupctl.errors import ConfigError, IntegrityError
from backupctl.evidence import sshsig
from backupctl.evidence.bundle import SIGNATURE, SIGNERS, SUMS


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
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            verdict.problems.append(f"file {name}: changed (sha256 differs from {SUMS})")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for name in sorted(present - listed - {SUMS, SIGNATURE}):
        verdict.problems.append(f"file {name}: not listed in {SUMS}")
    verdict.files = len(listed)
    _check_ledger(root, catalog, verdict)
    return verdict


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


def _check_ledger(root: Path, catalog: Catalog | None, verdict: Verdict) -> None:
    try:
        chain = json.loads((root / "chain.json").read_text())
        records = [
            LedgerRecord(**json.loads(line)) for line in (root / "ledger.jsonl").read_text().splitlines()
        ]
        document = json.loads((root / "evidence.json").read_text())
    except (OSError, ValueError, TypeError) as error:
        verdict.problems.append(f"cannot read the bundle's ledger: {error}")
        return
    verdict.ledger_records = len(records)
    ledger = chain["ledger"]
    if records and records[0].seq != ledger["from_seq"]:
        verdict.problems.append(f"ledger.jsonl: starts at record {records[0].seq}, not {ledger['from_seq']}")
    verdict.problems += [f"ledger.jsonl: {p}" for p in chain_problems(records, ledger["anchor"])]
    if records and records[-1].hash != ledger["head"]:
        verdict.problems.append("ledger.jsonl: its last record is not the head recorded in chain.json")
    newest = {(r.kind, r.subject): r.data for r in records}
    for run in document.get("runs", []):
        recorded = newest.get(("snapshot", run["id"]))
        if recorded is not None and recorded.get("status") != run["status"]:
            verdict.problems.append(
                f"evidence.json: run {run['id']} says {run['status']}, the ledger {recorded.get('status')}"
            )
    if catalog is None:
        return
    with catalog.engine.connect() as connection:
        now = {
            r.seq: r for r in read_ledger(connection, ledger["from_seq"] - 1) if r.seq <= ledger["head_seq"]
        }
        for record in records:
            current = now.get(record.seq)
            if current is None:
                verdict.problems.append(
                    f"catalog: ledger record {record.seq} ({record.kind} {record.subject}) "
                    "was deleted since the export"
                )
            elif current.hash != record.hash or current != record:
                verdict.problems.append(
                    f"catalog: ledger record {record.seq} ({record.kind} {record.subject}) "
                    "was edited since the export"
                )
        result = audit(connection)
    verdict.problems += [f"catalog now: {p}" for p in result.problems]
