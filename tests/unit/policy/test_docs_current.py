from pathlib import Path

from backupctl.policy.example import reference_markdown

ROOT = Path(__file__).resolve().parents[3]


def test_policy_reference_is_generated_from_the_schema() -> None:
    current = (ROOT / "docs" / "policy-reference.md").read_text()
    assert current.strip() == reference_markdown().strip(), (
        "docs/policy-reference.md is stale: run `backupctl policy reference > docs/policy-reference.md`"
    )
