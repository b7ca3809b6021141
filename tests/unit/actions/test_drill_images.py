"""The default drill restores each dump into a server of the version it came from."""

from __future__ import annotations

import pytest

from backupctl.actions.drill import image_for_version


@pytest.mark.parametrize(
    ("kind", "version", "image"),
    [
        ("postgres", "15.4", "backupctl/postgres:15"),
        ("postgres", "13.16 (Debian 13.16-0+deb11u1)", "backupctl/postgres:13"),
        ("mariadb", "10.5.26-MariaDB-0+deb11u2", "backupctl/mariadb:10.5"),
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


@pytest.mark.parametrize(
    ("image", "hint"),
    [
        ("backupctl/postgres:13", "docker/build-images.sh postgres-13"),
        ("backupctl/mariadb:10.5", "docker/build-images.sh mariadb-10.5"),
        ("backupctl/postgres:15", "docker/build-images.sh postgres"),
        ("backupctl/postgres:16", "no bundled recipe builds it"),
        ("postgres:16", "docker pull"),
    ],
)
def test_a_missing_image_names_how_to_build_it(image: str, hint: str) -> None:
    from backupctl.staging.docker import missing_image_hint

    assert hint in missing_image_hint(image)


def test_every_buildable_image_is_known_to_the_build_script() -> None:
    """The hint names images by the names docker/build-images.sh takes, with the same tags."""
    from pathlib import Path

    from backupctl.staging.docker import BUILDABLE_IMAGES

    script = (Path(__file__).parents[3] / "docker" / "build-images.sh").read_text()
    for image, name in BUILDABLE_IMAGES.items():
        assert f"[{name}]={image}" in script, (name, image)
