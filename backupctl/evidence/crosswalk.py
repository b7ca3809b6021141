"""Which framework clauses each control supports, with the clause text.

`kind` says what the text is: "quote" (the clause's own words, short) or "summary" (our
paraphrase, where we could not check the exact wording: PCI DSS). An auditor reads the
standard itself; the text here only says which requirement a control is evidence for."""

from __future__ import annotations

CLAUSES: dict[str, dict[str, str]] = {
    "ISO/IEC 27001:2022 A.8.13": {
        "title": "Information backup",
        "kind": "quote",
        "text": (
            "Backup copies of information, software and systems should be maintained and "
            "regularly tested in accordance with the agreed topic-specific policy on backup."
        ),
    },
    "SOC 2 A1.2": {
        "title": "Availability: recovery infrastructure",
        "kind": "quote",
        "text": (
            "The entity authorizes, designs, develops or acquires, implements, operates, "
            "approves, maintains, and monitors environmental protections, software, data "
            "back-up processes, and recovery infrastructure to meet its objectives."
        ),
    },
    "SOC 2 A1.3": {
        "title": "Availability: recovery plan testing",
        "kind": "quote",
        "text": (
            "The entity tests recovery plan procedures supporting system recovery to meet its objectives."
        ),
    },
    "NIST CSF 2.0 PR.DS-11": {
        "title": "Data security: backups",
        "kind": "quote",
        "text": ("Backups of data are created, protected, maintained, and tested."),
    },
    "PCI DSS 4.0 12.10.1": {
        "title": "Incident response plan",
        "kind": "summary",
        "text": (
            "An incident response plan exists and is ready to be activated, including "
            "business recovery and continuity procedures and data backup processes."
        ),
    },
    "PCI DSS 4.0 12.10.2": {
        "title": "Incident response plan testing",
        "kind": "summary",
        "text": ("At least once every 12 months the incident response plan is reviewed, updated and tested."),
    },
    "PCI DSS 4.0 9.4.1.x": {
        "title": "Media with cardholder data",
        "kind": "summary",
        "text": (
            "Offline media backups with cardholder data are stored in a secure location and "
            "the location's security is reviewed at least once every 12 months (9.4.1.1, "
            "9.4.1.2)."
        ),
    },
    "GDPR Art. 32(1)(c)": {
        "title": "Security of processing",
        "kind": "quote",
        "text": (
            "the ability to restore the availability and access to personal data in a timely "
            "manner in the event of a physical or technical incident."
        ),
    },
    "GDPR Art. 32(1)(d)": {
        "title": "Security of processing",
        "kind": "quote",
        "text": (
            "a process for regularly testing, assessing and evaluating the effectiveness of "
            "technical and organisational measures for ensuring the security of the "
            "processing."
        ),
    },
}

CONTROL_CLAUSES: dict[str, list[str]] = {
    "backups-scheduled": [
        "ISO/IEC 27001:2022 A.8.13",
        "SOC 2 A1.2",
        "NIST CSF 2.0 PR.DS-11",
        "PCI DSS 4.0 12.10.1",
    ],
    "rpo-achieved": ["SOC 2 A1.2", "NIST CSF 2.0 PR.DS-11", "GDPR Art. 32(1)(c)"],
    "retention": ["ISO/IEC 27001:2022 A.8.13", "NIST CSF 2.0 PR.DS-11"],
    "encryption": ["NIST CSF 2.0 PR.DS-11", "PCI DSS 4.0 9.4.1.x", "GDPR Art. 32(1)(c)"],
    "3-2-1-1-0": ["ISO/IEC 27001:2022 A.8.13", "SOC 2 A1.2", "NIST CSF 2.0 PR.DS-11", "PCI DSS 4.0 9.4.1.x"],
    "immutable-copy": ["NIST CSF 2.0 PR.DS-11", "SOC 2 A1.2"],
    "restore-drill": [
        "ISO/IEC 27001:2022 A.8.13",
        "SOC 2 A1.3",
        "NIST CSF 2.0 PR.DS-11",
        "PCI DSS 4.0 12.10.2",
        "GDPR Art. 32(1)(c)",
        "GDPR Art. 32(1)(d)",
    ],
    "verify-runs": ["ISO/IEC 27001:2022 A.8.13", "NIST CSF 2.0 PR.DS-11", "GDPR Art. 32(1)(d)"],
    "copies": ["SOC 2 A1.2", "NIST CSF 2.0 PR.DS-11"],
    "catalog-integrity": ["SOC 2 A1.2", "GDPR Art. 32(1)(d)"],
}


def crosswalk() -> list[dict[str, str]]:
    """Rows (control, clause, title, kind, text) for crosswalk.csv and evidence.json."""
    return [
        {
            "control": control,
            "clause": clause,
            "title": CLAUSES[clause]["title"],
            "kind": CLAUSES[clause]["kind"],
            "text": CLAUSES[clause]["text"],
        }
        for control, clauses in CONTROL_CLAUSES.items()
        for clause in clauses
    ]
