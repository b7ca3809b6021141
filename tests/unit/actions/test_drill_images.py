"""The default drill restores each dump into a server of the version it came from."""

from __future__ import annotations

import pytest

from backupctl.actions.drill import image_for_version


@pytest.mark.parametrize(
    ("kind", "version", "image"),
    [
        ("postgres", "15.4", "backupctl/postgres:15"),
        ("postgres", "16.2 (Debian 16.2-1.pgdg120+2)", "backupctl/postgres:16"),
        ("mariadb", "10.11.6-MariaDB-0+deb12u1", "backupctl/mariadb:10.11"),
        ("mariadb", "11.4.2-MariaDB", "backupctl/mariadb:11.4"),
        ("mariadb", "8.0.35", "mysql:8.0"),
        ("mariadb", "5.7.44-log", "mysql:5.7"),
        ("postgres", None, "backupctl/postgres:15"),
        ("postgres", "", "backupctl/postgres:15"),
    ],
)
def test_image_for_version(kind: str, version: str | None, image: str) -> None:
    assert image_for_version(kind, version, "backupctl/postgres:15") == image
