"""A self-contained HTML rendering of an evidence document: inline CSS, charts as inline SVG."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

# Exceptions shown per policy and control in the HTML/PDF; the rest are counted there and listed in
# full in exceptions.csv and evidence.json (a PDF of 10,000 rows is read by nobody, and WeasyPrint
# takes minutes and gigabytes to lay it out).
EXCEPTIONS_SHOWN = 25
DRILLS_COMPACT = 20  # failed drills listed in the compact layout
COMPACT_ABOVE = 60  # controls: a PDF with more uses the compact layout
_COLORS = {"COMPLIANT": "#1a7f37", "NON_COMPLIANT": "#cf222e", "INSUFFICIENT_DATA": "#9a6700"}
_CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}
.status{font-weight:bold}.name{white-space:nowrap}h1{font-size:22px}h2{font-size:18px;margin-top:1.5em}
.sign{margin-top:3em}.sign div{display:inline-block;width:40%;border-top:1px solid #000;margin-right:5%}
""" + "".join(f".s-{status}{{color:{color}}}" for status, color in _COLORS.items())


def _status(status: str) -> str:
    # A class, not a style attribute: WeasyPrint parses each style attribute on its own (451 in
    # a 50-policy matrix, ~0.3 s of the PDF, evidence benchmark).
    known = status if status in _COLORS else "OTHER"
    return f'<span class="status s-{known}">{escape(status)}</span>'


def bar_chart(
    title: str, values: list[tuple[str, float]], unit: str, width: int = 640, *, one_text: bool = False
) -> str:
    """A horizontal bar chart as inline SVG. Small values stay visible: every non-zero bar is at
    least 2 px, and the value is written next to it. `one_text` (the compact PDF): the value
    is written in the label instead, one SVG text per bar (WeasyPrint lays out each text on its
    own: 400 fewer took ~0.5 s off a 50-policy PDF, evidence benchmark)."""
    if not values:
        return f"<p>{escape(title)}: no data</p>"
    top = max(value for _, value in values) or 1.0
    row, label_width = 18, 300 if one_text else 180
    room = width - label_width - (10 if one_text else 120)  # the value's text right of the bar
    height = row * len(values) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="12" font-size="12" font-weight="bold">{escape(title)} '
        f"(scale 0 to {top:,.1f} {escape(unit)})</text>",
    ]
    for index, (label, value) in enumerate(values):
        y = 20 + index * row
        length = 0.0 if value <= 0 else max(2.0, room * value / top)
        shown = f"{value:,.2f} {unit}"
        text = f"{label[:28]}: {shown}" if one_text else label[:28]
        parts.append(f'<text x="0" y="{y + 12}" font-size="11">{escape(text)}</text>')
        parts.append(
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{row - 6}" fill="#4878d0"/>'
        )
        if not one_text:
            parts.append(
                f'<text x="{label_width + length + 4:.1f}" y="{y + 12}" font-size="11">{escape(shown)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _exception_row(policy: str, control: str, detail_html: str) -> str:
    return f"<tr><td>{escape(policy)}</td><td class='name'>{escape(control)}</td><td>{detail_html}</td></tr>"


def _byte_unit(largest: float) -> tuple[float, str]:
    """The unit that shows the largest value as a number between 1 and 1024 (40 bytes stay
    40 B rather than 0.00 MiB)."""
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if largest >= 1024**power:
            return float(1024**power), unit
    return 1.0, "B"


def _matrix(controls: list[dict[str, Any]], counts: dict[tuple[str, str], int]) -> list[str]:
    """Controls as a policy-by-control table of statuses, each with its number of exceptions
    (`counts`: (policy, control) -> exceptions) when it has any: a fleet's report on a few pages."""
    names = list(dict.fromkeys(c["control"] for c in controls))
    rows: dict[str, dict[str, str]] = defaultdict(dict)
    for control in controls:
        rows[control["policy"]][control["control"]] = control["status"]
    out = [
        "<table><tr><th>Policy</th>" + "".join(f"<th class='name'>{escape(n)}</th>" for n in names) + "</tr>"
    ]
    for policy, statuses in rows.items():
        cells = "".join(
            f"<td>{_status(statuses[n]) + _count(counts.get((policy, n), 0)) if n in statuses else ''}</td>"
            for n in names
        )
        out.append(f"<tr><td>{escape(policy)}</td>{cells}</tr>")
    out.append("</table>")
    return out


def _count(exceptions: int) -> str:
    return f" ({exceptions:,})" if exceptions else ""


def _exceptions_by_control(exceptions: list[dict[str, Any]], digest: str | None) -> list[str]:
    """The compact layout's exceptions: one row per control (policies concerned, how many, the
    first one), then where every one of them is (the per policy and control counts are in the
    matrix). A row per policy and control was 150 rows and ~1.5 s of a 50-policy PDF
    (evidence benchmark); a fleet's full list is read in the CSV, not on paper."""
    if not exceptions:
        return ["<p>None.</p>"]
    per_control: dict[str, tuple[list[int], set[str], dict[str, Any]]] = {}
    for item in exceptions:
        count, policies, _ = per_control.setdefault(item["control"], ([0], set(), item))
        count[0] += 1
        policies.add(item["policy"])
    out = ["<table><tr><th>Control</th><th>Policies</th><th>Exceptions</th><th>The first one</th></tr>"]
    for control, (count, policies, first) in per_control.items():
        out.append(
            f"<tr><td class='name'>{escape(control)}</td><td>{len(policies)}</td><td>{count[0]:,}</td>"
            f"<td>{escape(first['policy'])}: {escape(first['detail'])}</td></tr>"
        )
    where = f"exceptions.csv (sha256 <code>{escape(digest)}</code>)" if digest else "exceptions.csv"
    out.append(
        f"</table><p><b>Every one of the {len(exceptions):,} exceptions</b>, with its policy, control and "
        f"detail: {where} and evidence.json. Per policy and control: the counts in the table above.</p>"
    )
    return out


def _storage_totals(storage: dict[str, dict[str, int]]) -> list[str]:
    """Bytes stored by the period's copies per target, summed over the policies (the compact
    layout; per policy and target in evidence.json `storage` and the HTML report)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for targets in storage.values():
        for target, stored in targets.items():
            totals[target][0] += stored
            totals[target][1] += 1
    if not totals:
        return ["<p>No complete copy in the period.</p>"]
    out = ["<table><tr><th>Target</th><th>Stored by the period's copies</th><th>Policies</th></tr>"]
    for target, (stored, policies) in sorted(totals.items()):
        scale, unit = _byte_unit(float(stored))
        out.append(
            f"<tr><td>{escape(target)}</td><td>{stored / scale:,.2f} {unit}</td><td>{policies}</td></tr>"
        )
    out.append("</table><p>Per policy and target: report.html and evidence.json (storage).</p>")
    return out


def render(
    document: dict[str, Any], title: str, *, compact: bool = False, exceptions_sha256: str | None = None
) -> str:
    """The report as one HTML page (no external resources: it prints and archives as is).

    `compact` (the PDF of a big fleet): controls as a matrix with each one's number of
    exceptions, the exceptions summed up per control with the first of each, and where all of
    them are (exceptions.csv, with its sha256 `exceptions_sha256` when given; evidence.json).
    """
    limit = EXCEPTIONS_SHOWN
    period = document["period"]
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)} — {escape(period['label'])}</h1>",
        f"<p>Period {escape(period['start'])} to {escape(period['end'])} (UTC). "
        f"Generated {escape(document['generated_at'])} on {escape(document['generator']['host'])} "
        f"by backupctl {escape(document['generator']['backupctl_version'])}. "
        f"Hosts: {escape(', '.join(document['hosts']) or 'none')}.</p>",
    ]
    if compact:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for item in document["exceptions"]:
            counts[(item["policy"], item["control"])] += 1
        out += ["<h2>Controls</h2>", *_matrix(document["controls"], counts)]
        out += ["<h2>Exceptions</h2>", *_exceptions_by_control(document["exceptions"], exceptions_sha256)]
    else:
        out.append(
            "<h2>Controls</h2><table><tr><th>Policy</th><th>Control</th><th>Status</th><th>Why</th></tr>"
        )
    for control in [] if compact else document["controls"]:
        out.append(
            f"<tr><td>{escape(control['policy'])}</td><td class='name'>{escape(control['control'])}</td>"
            f"<td>{_status(control['status'])}</td><td>{escape(control['summary'])}</td></tr>"
        )
    if not compact and document["exceptions"]:
        out.append("</table><h2>Exceptions</h2>")
        out.append("<table><tr><th>Policy</th><th>Control</th><th>Detail</th></tr>")
        shown: dict[tuple[str, str], int] = defaultdict(int)
        for item in document["exceptions"]:
            key = (item["policy"], item["control"])
            shown[key] += 1
            if shown[key] <= limit:
                out.append(_exception_row(item["policy"], item["control"], escape(item["detail"])))
        for (policy, control), count in shown.items():
            if count > limit:
                out.append(
                    _exception_row(policy, control, f"<b>… and {count - limit} more in exceptions.csv</b>")
                )
        out.append("</table>")
    elif not compact:
        out.append("</table><h2>Exceptions</h2><p>None.</p>")
    runs_per_policy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run in document["runs"]:
        runs_per_policy[run["policy"]][0 if run["status"] in ("complete", "partial") else 1] += 1
    out.append("<h2>Runs</h2>")
    out.append(
        bar_chart(
            "Successful runs per policy",
            [(p, float(v[0])) for p, v in sorted(runs_per_policy.items())],
            "runs",
            one_text=compact,
        )
    )
    out.append(
        bar_chart(
            "Failed runs per policy",
            [(p, float(v[1])) for p, v in sorted(runs_per_policy.items())],
            "runs",
            one_text=compact,
        )
    )
    rpo = [
        (c["policy"], c["measured"].get("worst_gap_seconds", 0) / 3600)
        for c in document["controls"]
        if c["control"] == "rpo-achieved" and c["measured"].get("worst_gap_seconds") is not None
    ]
    out.append("<h2>Recovery objectives</h2>")
    out.append(bar_chart("Largest gap between restorable points (achieved RPO)", rpo, "h", one_text=compact))
    if compact:  # one bar per policy, not per drill: SVG text is the slowest thing WeasyPrint draws
        slowest: dict[str, float] = {}
        for d in document["drills"]:
            slowest[d["policy"]] = max(slowest.get(d["policy"], 0.0), float(d["rto_seconds"] or 0))
        slowest_chart = bar_chart(
            "Slowest measured RTO of a drill, per policy", sorted(slowest.items()), "s", one_text=True
        )
        out.append(slowest_chart)
    else:
        rto = [(d["policy"] + " " + d["id"][:8], float(d["rto_seconds"] or 0)) for d in document["drills"]]
        out.append(bar_chart("Measured RTO of drills", rto, "s"))
    used = [
        (f"{p} → {t}", float(b))
        for p, targets in sorted(document["storage"].items())
        for t, b in sorted(targets.items())
    ]
    if compact:  # one row per target: a 50-policy chart was 0.7 s of the PDF (evidence benchmark)
        out += ["<h2>Storage</h2>", *_storage_totals(document["storage"])]
    else:
        scale, unit = _byte_unit(max((b for _, b in used), default=0.0))
        storage = [(label, b / scale) for label, b in used]
        out.append("<h2>Storage</h2>" + bar_chart("Stored by the period's copies", storage, unit))
    out.append(
        "<h2>Drills</h2><table><tr><th>Drill</th><th>Policy</th><th>Finished</th>"
        "<th>Result</th><th>RTO s</th></tr>"
    )
    drills = document["drills"]
    listed = [d for d in drills if not d["ok"]][:DRILLS_COMPACT] if compact else drills
    for d in listed:
        out.append(
            f"<tr><td>{escape(d['id'])}</td><td>{escape(d['policy'])}</td><td>{escape(d['finished_at'])}</td>"
            f"<td>{'passed' if d['ok'] else 'FAILED: ' + escape(str(d['reason']))}</td>"
            f"<td>{d['rto_seconds']}</td></tr>"
        )
    if len(listed) < len(drills):
        out.append(
            f"<tr><td colspan='5'><b>{len(drills) - len(listed)} more drills (passed ones and "
            "failures beyond the first) in drills.csv</b></td></tr>"
        )
    out.append(
        "</table><h2>Policies in force</h2><table><tr><th>Policy</th><th>File</th><th>sha256</th></tr>"
    )
    for p in document["policies"]:
        out.append(
            f"<tr><td>{escape(p['name'])}</td><td>{escape(p['file'])}</td><td><code>{escape(p['sha256'])}</code></td></tr>"
        )
    ledger = document["ledger"]
    out.append(
        f"</table><h2>Run ledger</h2><p>{ledger['records']} records, head #{ledger['head_seq']} "
        f"<code>{escape(ledger['head'])}</code>; "
        f"problems: {escape('; '.join(ledger['problems']) or 'none')}.</p>"
    )
    out.append(
        "<div class='sign'><div>Reviewed by (name, date)</div><div>Signature</div></div></body></html>"
    )
    return "\n".join(out)
