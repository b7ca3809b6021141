"""Evidence (issue #14): a seeded November through the catalog API → controls, the bundle and
its offline verification with the real ssh-keygen, tampering named, bad input → exit 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupctl.catalog.models import DrillRow
from backupctl.catalog.store import Catalog, CopyState, record_drill
from backupctl.evidence.verify import verify_bundle
from tests.fixtures.core import Workspace, one_dump_manifest

NOV = datetime(2026, 11, 1, tzinfo=UTC)
MISSED = 9  # Nov 10th: no run at all
FAILED_COPY = 14  # Nov 15th: the S3 copy failed, replicate completed it later


def seed(catalog: Catalog) -> None:
    """Nightly backups at 02:00 UTC through November, one missed night, one failed S3 copy
    later replicated, a weekly verify, one passed drill."""
    for day in range(30):
        if day == MISSED:
            continue
        started = NOV + timedelta(days=day, hours=2, minutes=1)
        snapshot_id = f"2026110{day:02d}shop"
        catalog.begin_snapshot(snapshot_id, "shop", "0" * 64, started)
        s3 = CopyState(
            snapshot_id,
            "s3",
            "failed" if day == FAILED_COPY else "complete",
            40,
            "HTTP 503 SlowDown" if day == FAILED_COPY else None,
        )
        status = "partial" if day == FAILED_COPY else "complete"
        catalog.finish_snapshot(
            one_dump_manifest(snapshot_id, "shop", started, host="h"),
            "c" * 64,
            status,
            copies=[CopyState(snapshot_id, "local", "complete", 40), s3],
        )
        if day == FAILED_COPY:
            catalog.record_copy(snapshot_id, "s3", "complete", 40)  # what `replicate` records
            catalog.mark_complete_if_everywhere(snapshot_id, ["local", "s3"])
        if day % 7 == 0:
            catalog.record_verification(snapshot_id, "local", True, [])
    started = NOV + timedelta(days=20, hours=10)
    record_drill(
        catalog,
        DrillRow(
            id="drill-2026-11-21",
            policy="shop",
            drill="shop-default",
            snapshot_id="202611020shop",
            target="local",
            runtime="docker",
            started_at=started,
            finished_at=started + timedelta(minutes=3),
            ok=True,
            reason=None,
            rto_seconds=180.0,
            rto_objective_seconds=3600.0,
            rpo_seconds=None,
            rpo_objective_seconds=None,
            stages=[],
            checks=[{"name": "row-counts", "ok": True}],
            report_paths={},
        ),
    )


@pytest.fixture
def seeded(workspace: Workspace) -> Workspace:
    policy = workspace.base_policy(
        "shop",
        [{"name": "db", "type": "sqlite", "path": "/srv/shop.db"}],
        [
            {"name": "local", "type": "local", "path": str(workspace.backups), "medium": "disk"},
            {
                "name": "s3",
                "type": "s3",
                "bucket": "acme-backups",
                "endpoint_url": "http://127.0.0.1:9",
                "object_lock": {"mode": "COMPLIANCE", "days": 30},
            },
        ],
        schedule="0 2 * * *",
    )
    workspace.write_policy("shop", policy)
    workspace.env["TZ"] = "UTC"
    seed(Catalog.open(f"sqlite:///{workspace.state}/catalog.sqlite"))
    return workspace


def _controls(document: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["control"]: c for c in document["controls"]}  # type: ignore[index,union-attr]


def test_seeded_month_controls_and_exceptions(seeded: Workspace) -> None:
    document = seeded.run_json("report", "--month", "2026-11")
    controls = _controls(document)
    assert controls["backups-scheduled"]["status"] == "NON_COMPLIANT"
    assert controls["backups-scheduled"]["measured"] == {"expected": 30, "missed": 1, "runs": 29}
    assert controls["rpo-achieved"]["status"] == "NON_COMPLIANT"  # 48 h gap around the missed night
    assert controls["copies"]["status"] == "COMPLIANT"  # the failed copy was replicated
    assert controls["restore-drill"]["status"] == "COMPLIANT"
    # Verify runs are recorded when they run (now, in December), never back-dated.
    assert controls["verify-runs"]["status"] == "INSUFFICIENT_DATA"
    assert controls["encryption"]["status"] == "COMPLIANT"
    assert controls["immutable-copy"]["status"] == "COMPLIANT"
    assert controls["3-2-1-1-0"]["status"] == "COMPLIANT"
    assert controls["catalog-integrity"]["status"] == "COMPLIANT"
    details = [e["detail"] for e in document["exceptions"]]
    assert any("missed" in d and "2026-11-10T02:00" in d for d in details), details
    assert any("s3 failed: HTTP 503 SlowDown; resolved" in d for d in details), details
    assert all(run["trigger"] != "unknown" for run in document["runs"])


def test_period_without_data_is_insufficient(seeded: Workspace) -> None:
    document = seeded.run_json("report", "--month", "2025-03")
    statuses = {c["control"]: c["status"] for c in document["controls"] if c["policy"] == "shop"}
    assert set(statuses.values()) == {"INSUFFICIENT_DATA"}, statuses


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--month", "2026-13"],
        ["report", "--month", "nov"],
        ["evidence", "export", "--quarter", "2026Q5", "--out", "x"],
    ],
)
def test_bad_period_exits_2(seeded: Workspace, args: list[str]) -> None:
    done = seeded.run(*args)
    assert done.returncode == 2, done.stderr
    assert "expected YYYY" in done.stderr
    assert not (Path.cwd() / "x").exists()


def test_bundle_verifies_with_ssh_keygen_and_tampering_is_named(seeded: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "2026Q4"
    summary = seeded.run_json("evidence", "export", "--quarter", "2026Q4", "--out", str(out))
    assert summary["exceptions"] >= 2
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    for expected in (
        "evidence.json",
        "controls.csv",
        "exceptions.csv",
        "crosswalk.csv",
        "report.html",
        "policies/shop.yaml",
        "ledger.jsonl",
        "VERIFY.md",
        "SHA256SUMS",
        "SHA256SUMS.sig",
    ):
        assert expected in names
    # The auditor's check: OpenSSH alone.
    with (out / "SHA256SUMS").open("rb") as sums:
        done = subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(out / "allowed_signers"),
                "-I",
                "backupctl-evidence",
                "-n",
                "backupctl-evidence",
                "-s",
                str(out / "SHA256SUMS.sig"),
            ],
            stdin=sums,
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "Good" in done.stdout
    assert (
        subprocess.run(
            ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, capture_output=True, check=False
        ).returncode
        == 0
    )
    assert seeded.run("evidence", "verify", str(out)).returncode == 0
    # The output path exists now: exit 2, nothing touched.
    again = seeded.run("evidence", "export", "--quarter", "2026Q4", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr

    catalog = Catalog.open(f"sqlite:///{seeded.state}/catalog.sqlite")
    for index, name in enumerate(names):  # one flipped byte in any file
        broken = tmp_path / "flip"
        shutil.copytree(out, broken)
        data = bytearray((broken / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (broken / name).write_bytes(bytes(data))
        if index == 0:  # the CLI once (exit code, message); the same function in-process for the rest
            done = seeded.run("evidence", "verify", str(broken))
            assert done.returncode == 1 and name in done.stderr, (name, done.stderr)
        verdict = verify_bundle(broken, catalog)
        assert not verdict.ok and any(name in problem for problem in verdict.problems), (name, verdict)
        shutil.rmtree(broken)
    removed = tmp_path / "removed"
    shutil.copytree(out, removed)
    (removed / "runs.csv").unlink()
    done = seeded.run("evidence", "verify", str(removed))
    assert done.returncode == 1 and "file runs.csv: missing" in done.stderr

    # An edited catalog record: found by verify (and by the next export's integrity control).
    with sqlite3.connect(seeded.state / "catalog.sqlite") as db:
        db.execute("UPDATE snapshots SET error = 'nothing to see' WHERE id = '202611014shop'")
    done = seeded.run("evidence", "verify", str(out))
    assert done.returncode == 1
    assert "snapshot 202611014shop was edited" in done.stderr
    document = seeded.run_json("report", "--month", "2026-11")
    assert _controls(document)["catalog-integrity"]["status"] == "NON_COMPLIANT"


def test_tar_bundle_and_ledger_edit(seeded: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "q4.tar"
    seeded.run_json("evidence", "export", "--quarter", "2026Q4", "--out", str(out))
    assert tarfile.is_tarfile(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    assert seeded.run("evidence", "verify", str(out)).returncode == 0
    with sqlite3.connect(seeded.state / "catalog.sqlite") as db:
        (seq,) = db.execute(
            "SELECT seq FROM run_records WHERE kind = 'copy' AND payload LIKE '%failed%'"
        ).fetchone()
        db.execute(
            "UPDATE run_records SET payload = replace(payload, 'failed', 'complete') WHERE seq = ?", (seq,)
        )
    done = seeded.run("evidence", "verify", str(out))
    assert done.returncode == 1 and f"ledger record {seq} " in done.stderr, done.stderr
    chain = json.loads(
        seeded.run(
            "evidence", "export", "--quarter", "2027Q1", "--out", str(tmp_path / "q1"), "--json"
        ).stdout
    )
    assert chain["previous"]["period"] == "2026Q4"


def _artifacts_dir() -> Path:
    """Where test artefacts a person looks at are kept (.test-artifacts/, git-ignored)."""
    path = Path(__file__).resolve().parents[3] / ".test-artifacts" / "evidence"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_pdf_and_html_render_every_control(seeded: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    seeded.run_json("evidence", "export", "--quarter", "2026Q4", "--out", str(out))
    document = json.loads((out / "evidence.json").read_text())
    text = subprocess.run(
        ["pdftotext", "-layout", str(out / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for control in document["controls"]:
        # One table row per control: its name and its status on the same line of the PDF.
        assert any(control["control"] in line and control["status"] in line for line in lines), control
    shot = tmp_path / "report.png"
    # Chromium refuses to run as root with its sandbox: --no-sandbox (the page is our own file).
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    shutil.copyfile(shot, _artifacts_dir() / "evidence-report.png")
    shutil.copyfile(out / "report.pdf", _artifacts_dir() / "evidence-report.pdf")


def test_a_failing_forked_phase_fails_the_export_and_leaves_nothing(
    seeded: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PDF is laid out in a forked process: its error is the export's, and the staging
    directory goes (nothing half-written, no bundle recorded in the chain)."""
    from backupctl.core.forked import ChildFailed
    from backupctl.evidence import bundle, pdf
    from backupctl.evidence.period import parse_quarter
    from backupctl.evidence.run import export_bundle
    from backupctl.settings import Settings

    for name, value in seeded.env.items():
        monkeypatch.setenv(name, value)

    def broken(html: str, path: Path) -> None:
        raise RuntimeError("the layout exploded")

    monkeypatch.setattr(pdf, "write_pdf", broken)  # the child is forked: it has the patch
    out_dir = tmp_path / "audit"
    out_dir.mkdir()
    settings = Settings.resolve()
    with pytest.raises(ChildFailed, match="the layout exploded"):
        export_bundle(settings, parse_quarter("2026Q4"), (), out_dir / "2026Q4.tar")
    assert list(out_dir.iterdir()) == []
    assert bundle.read_index(settings.state_dir) == []


def test_export_summary_counts_the_written_document(
    seeded: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export frees its document before the PDF's layout ends and returns only a summary:
    its counts are those of the evidence.json it wrote."""
    from backupctl.evidence.period import parse_quarter
    from backupctl.evidence.run import export_bundle
    from backupctl.settings import Settings

    for name, value in seeded.env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "bundle"
    summary = export_bundle(Settings.resolve(), parse_quarter("2026Q4"), (), out)
    document = json.loads((out / "evidence.json").read_text())
    statuses = [control["status"] for control in document["controls"]]
    assert summary["controls"] == {status: statuses.count(status) for status in sorted(set(statuses))}
    assert summary["exceptions"] == len(document["exceptions"]) > 0
    assert summary["path"] == str(out) and (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert verify_bundle(out, Catalog.open(f"sqlite:///{seeded.state}/catalog.sqlite")).ok
