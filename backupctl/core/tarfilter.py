"""tarfile's 'data' extraction filter (PEP 706) on every Python 3.11 backupctl supports.

Python 3.11.4 added the filters; Debian bookworm's own python3 is 3.11.2 (measured: no
`tarfile.data_filter`, no `filter=` argument, no `TarInfo.replace`), and it is what an operator's
`python3 -m venv` uses. Where tarfile has the filters they are used; elsewhere `_data_filter`
applies the same refusals (absolute names, names or hard/symbolic link targets leaving the
destination, device and FIFO members) and the same permission limits for files. Owners are left
as archived there: tarfile sets them only as root, where callers keep them anyway.
"""

from __future__ import annotations

import copy
import os
import tarfile
from typing import Any

HAS_FILTERS = hasattr(tarfile, "data_filter")


class RefusedMember(Exception):
    """The data filter refuses this member; the message says why."""


def with_attrs(member: tarfile.TarInfo, **attrs: Any) -> tarfile.TarInfo:
    """A copy of `member` with `attrs` changed (TarInfo.replace, which 3.11.2 lacks)."""
    changed = copy.copy(member)
    for name, value in attrs.items():
        setattr(changed, name, value)
    return changed


def data_filter(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """The member as the 'data' filter would extract it under `destination`; RefusedMember."""
    if HAS_FILTERS:
        try:
            return tarfile.data_filter(member, destination)
        except tarfile.FilterError as error:
            raise RefusedMember(str(error)) from None
    return _data_filter(member, destination)


def extract_options() -> dict[str, Any]:
    """`tar.extract(..., **extract_options())` after data_filter: no second filtering."""
    return {"filter": "fully_trusted"} if HAS_FILTERS else {}


def extract_all(tar: tarfile.TarFile, destination: str) -> None:
    """`tar.extractall(destination, filter="data")` on any 3.11. Raises RefusedMember."""
    if HAS_FILTERS:
        try:
            tar.extractall(destination, filter="data")
        except tarfile.FilterError as error:
            raise RefusedMember(str(error)) from None
        return
    members = [_data_filter(member, destination) for member in tar.getmembers()]
    tar.extractall(destination, members=members)


def _inside(path: str, destination: str) -> bool:
    return os.path.commonpath([path, destination]) == destination


def _data_filter(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """CPython 3.12's `tarfile._get_filtered_attrs(for_data=True)`, minus dropping owners."""
    destination = os.path.realpath(destination)
    name = member.name.lstrip("/" + os.sep)
    if os.path.isabs(name):
        raise RefusedMember(f"{member.name!r} is absolute")
    if not _inside(os.path.realpath(os.path.join(destination, name)), destination):
        raise RefusedMember(f"{member.name!r} would be extracted outside the destination")
    mode = member.mode & 0o755  # no setuid/setgid/sticky, no group/other write
    if member.isreg() or member.islnk():
        if not mode & 0o100:
            mode &= ~0o111
        mode |= 0o600
    elif member.isdir():
        mode |= 0o700
    elif not member.issym():
        raise RefusedMember(f"{member.name!r} is a special file")
    if member.islnk() or member.issym():
        if os.path.isabs(member.linkname):
            raise RefusedMember(f"{member.name!r} is a link to an absolute path")
        base = os.path.join(destination, os.path.dirname(name)) if member.issym() else destination
        if not _inside(os.path.realpath(os.path.join(base, member.linkname)), destination):
            raise RefusedMember(f"{member.name!r} would link to a path outside the destination")
    return with_attrs(member, name=name, mode=mode)
