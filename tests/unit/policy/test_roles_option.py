"""`roles: {passwords: ...}` on database sources: default off, errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backupctl.errors import ConfigError
from backupctl.policy.loader import load_policy


def _policy(tmp_path: Path, source: dict[str, object]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "p", "objectives": {"rpo": "24h", "rto": "1h"},
        "encryption": {"recipients": ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]},
        "sources": [{"name": "db", **source}],
        "targets": [{"name": "local", "type": "local", "path": str(tmp_path / "b")}],
    }, sort_keys=False))  # fmt: skip
    return path


POSTGRES = {"type": "postgres", "url": "postgresql://backup@db/shop"}
MYSQL = {"type": "mysql", "user": "backup", "database": "shop"}


@pytest.mark.parametrize("source", [POSTGRES, MYSQL])
def test_passwords_default_off_and_opt_in(tmp_path: Path, source: dict[str, object]) -> None:
    loaded = load_policy(_policy(tmp_path, source), check_secrets=False)
    assert loaded.policy.sources[0].roles.passwords is False  # type: ignore[union-attr]
    loaded = load_policy(_policy(tmp_path, {**source, "roles": {"passwords": True}}), check_secrets=False)
    assert loaded.policy.sources[0].roles.passwords is True  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"roles": {"passwords": "sometimes"}}, "roles.passwords"),
        ({"roles": {"password": True}}, "roles.password"),
        ({"roles": {"passwords": True}, "container": "db1"}, "not supported with `via` or `container`"),
    ],
)
def test_bad_roles_option_names_file_and_line(
    tmp_path: Path, extra: dict[str, object], expected: str
) -> None:
    path = _policy(tmp_path, {**POSTGRES, **extra})
    with pytest.raises(ConfigError) as raised:
        load_policy(path, check_secrets=False)
    message = str(raised.value)
    assert f"{path}:" in message and expected in message, message


def test_files_sources_have_no_roles_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="roles"):
        load_policy(_policy(tmp_path, {"type": "files", "path": "/srv", "roles": {"passwords": True}}),
                    check_secrets=False)  # fmt: skip
