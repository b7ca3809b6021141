"""Every YAML example in docs/ parses, and every policy example (whole or fragment) validates.

A fragment is merged into a minimal valid policy: a top-level mapping replaces those keys, a list
of `{name, type, ...}` items becomes the targets. Placeholders an operator must replace
(`age1...`, /var/lib/backupctl/keys/) are swapped for real keys. Prometheus rule files (`groups:`) only parse.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backupctl.core.crypto import generate_keys
from backupctl.policy.loader import load_policy

DOCS = Path(__file__).resolve().parents[3] / "docs"
BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            found.append((f"{page.name}#{number}", match.group(1)))
    return found


def test_docs_have_yaml_examples() -> None:
    assert len(examples()) >= 8


@pytest.mark.parametrize(("where", "text"), examples(), ids=[where for where, _ in examples()])
def test_yaml_example_validates(where: str, text: str, tmp_path: Path) -> None:
    recipient = generate_keys(tmp_path / "keys").recipient
    # Placeholders and the default keys directory of a real host stand for this test's keys.
    text = text.replace("age1...", recipient).replace("/var/lib/backupctl/keys/", f"{tmp_path}/keys/")
    data = yaml.safe_load(text)
    if isinstance(data, dict) and "groups" in data:
        return  # a Prometheus rules file: parsing is all there is to check here
    if where.startswith(("drills.md", "drill-reference.md")) and isinstance(data, dict):
        from backupctl.drills.schema import Drill

        # Drill-file fragments: every top-level key is one of the drill schema's
        # (tests/unit/drills validates whole drill files).
        assert set(data) <= set(Drill.model_fields), (where, set(data) - set(Drill.model_fields))
        return
    policy: dict[str, Any] = {
        "name": "example",
        "objectives": {"rpo": "24h", "rto": "1h"},
        "encryption": {"recipients": [recipient]},
        "sources": [{"name": "files", "type": "files", "path": "/srv"}],
        "targets": [{"name": "nas", "type": "local", "path": "/mnt/nas/backups"}],
    }
    if isinstance(data, list):
        policy["targets"] = data
    else:
        assert isinstance(data, dict), where
        policy.update(data)
    (tmp_path / "drills").mkdir()
    (tmp_path / "drills" / "shop.yaml").write_text("name: shop\n")
    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "example.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    load_policy(path, check_secrets=False)  # raises PolicyInvalid listing every problem
