import os
from pathlib import Path

import pytest

from backupctl.core.secrets import SecretRef, mask, mask_url_password
from backupctl.errors import SecretError


def test_literal_is_refused() -> None:
    with pytest.raises(ValueError, match="literal secrets are not allowed"):
        SecretRef.parse("hunter2")


def test_env_ref(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPCTL_TEST_SECRET", "s3cr3t-value")
    assert SecretRef.parse("env:BACKUPCTL_TEST_SECRET").resolve() == "s3cr3t-value"
    assert mask("password is s3cr3t-value!") == "password is ********!"


def test_missing_env_ref() -> None:
    with pytest.raises(SecretError, match="not set"):
        SecretRef.parse("env:BACKUPCTL_TEST_DOES_NOT_EXIST").resolve()


def test_file_ref_permissions(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-secret\n")
    os.chmod(secret, 0o600)
    assert SecretRef.parse(f"file:{secret}").resolve() == "file-secret"
    os.chmod(secret, 0o640)
    with pytest.raises(SecretError, match="chmod 600"):
        SecretRef.parse(f"file:{secret}").resolve()


def test_relative_file_ref_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        SecretRef.parse("file:relative/pw")


def test_cmd_ref() -> None:
    assert SecretRef.parse("cmd:echo from-command").resolve() == "from-command"
    with pytest.raises(SecretError, match="status 1"):
        SecretRef.parse("cmd:false").resolve()


def test_mask_url_password() -> None:
    assert mask_url_password("postgresql://u:pw@h:5432/db") == "postgresql://u:********@h:5432/db"
    assert mask_url_password("postgresql://u@h/db") == "postgresql://u@h/db"
