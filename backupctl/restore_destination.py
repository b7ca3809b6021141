"""A restore never leaves a silent half-tree: directories are restored into a temporary sibling
and renamed into place only when the restore succeeded; where that cannot be (a database, or
`--force` into a directory that already holds files), a failure says what was left behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupctl.core.secrets import mask_url_password
from backupctl.errors import BackupctlError, ConfigError
from backupctl.sources.base import RestoreRequest


def _tree_size(directory: Path) -> tuple[int, int]:
    """(files, bytes) under `directory` (symlinks not followed)."""
    files = size = 0
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            size += path.lstat().st_size
    return files, size


def _empty_or_absent(directory: Path) -> bool:
    return not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))


@contextmanager
def guarded(request: RestoreRequest) -> Iterator[tuple[RestoreRequest, Path | None]]:
    """Yield (the request to run, the staging directory or None); on failure, explain what the
    destination holds by re-raising the error with an added sentence.

    For `--to-dir` into an absent or empty directory the request names a hidden sibling
    (`.NAME.restore-XXXX`); the caller moves it into place with `commit`. Anything else is
    restored in place, and a failure names what may be partial."""
    staging: Path | None = None
    original = request
    if request.to_dir is not None and _empty_or_absent(request.to_dir.absolute()):
        target = request.to_dir.absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
        request = dataclasses.replace(request, to_dir=staging)
    try:
        yield request, staging
    except ConfigError:  # refused before anything was written (errors.ConfigError): no hint
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    except BackupctlError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        error.args = (f"{error}\n{_left_behind(original, staging)}",)
        raise
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def commit(staging: Path, destination: Path) -> None:
    """Move a completed restore from `staging` to `destination` (absent or empty)."""
    destination = destination.absolute()
    if destination.exists():
        destination.rmdir()  # empty: checked before the restore began
    staging.rename(destination)


def _left_behind(request: RestoreRequest, staging: Path | None) -> str:
    if staging is not None:
        return f"nothing was written to {request.to_dir}: the partial restore beside it was removed"
    if request.to_dir is not None:
        files, size = _tree_size(request.to_dir) if request.to_dir.is_dir() else (0, 0)
        return (
            f"{request.to_dir} was restored into in place (--force on a non-empty directory): it now holds "
            f"{files} files ({size} bytes), old and partially restored ones mixed; restore into an empty "
            "directory to get a clean tree"
        )
    if request.to_db is not None:
        return (
            f"the database {mask_url_password(request.to_db)} may hold a partial restore: "
            "restore again with --clean, or drop and recreate it"
        )
    if request.to_file is not None:
        state = "exists and may be partial" if request.to_file.exists() else "was not created"
        return f"{request.to_file} {state}"
    return "the destination may hold a partial restore"
