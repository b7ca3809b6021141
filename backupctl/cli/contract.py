"""The machine contract of `--json` and `--log-json` (documented in docs/json.md).

- Every JSON object a command prints carries `"schema": "backupctl.<command>/<version>"` as
  its first key (added here; a command's own keys are unchanged). Top-level arrays keep their
  shape (scripts index them), and each element carries its own leading `schema` key
  (`ELEMENT_SCHEMAS`): an array has no place for a version of its own.
- Every timestamp is RFC 3339 in UTC with a `Z`: `2026-12-06T06:02:22.123456Z`. Commands may
  hand over datetimes or ISO strings in any offset; `normalise` rewrites both.
- A failing command run with `--json` still prints one object: `schema: backupctl.error/1`,
  `ok: false`, the error, its kind and the exit code (`error_document`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

JSON_VERSION = 1
ERROR_SCHEMA = f"backupctl.error/{JSON_VERSION}"
# Schemas of commands whose JSON has changed shape since version 1 (none yet).
_VERSIONS: dict[str, int] = {}
# Commands that print a JSON array -> the schema of each element (docs/json.md).
ELEMENT_SCHEMAS: dict[str, str] = {
    "snapshots": f"backupctl.snapshot/{JSON_VERSION}",
    "verify": f"backupctl.verify.target/{JSON_VERSION}",
    "status": f"backupctl.status.policy/{JSON_VERSION}",
    "schedule.list": f"backupctl.schedule.entry/{JSON_VERSION}",
    "drills": f"backupctl.drills.run/{JSON_VERSION}",
}

# An ISO 8601 date-time with seconds, optional fraction and optional offset (what
# datetime.isoformat() and our own formats produce). Snapshot ids (20261206T060222Z-...) do not match.
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})?$")


def rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 UTC with microseconds and `Z`; a naive datetime is taken as UTC
    (the catalog stores UTC and SQLite returns it without an offset)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise(data: Any) -> Any:
    """A copy of JSON-ready `data` with every datetime and ISO timestamp string in RFC 3339 UTC."""
    if isinstance(data, dict):
        return {key: normalise(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [normalise(value) for value in data]
    if isinstance(data, datetime):
        return rfc3339(data)
    if isinstance(data, str) and _ISO_TIME.match(data):
        try:
            return rfc3339(datetime.fromisoformat(data.replace("Z", "+00:00")))
        except ValueError:
            return data
    return data


def schema_name(command_path: Sequence[str]) -> str:
    """`backupctl.<sub.command>/<version>` for a command path such as ("policy", "validate")."""
    name = ".".join(command_path) or "backupctl"
    return f"backupctl.{name}/{_VERSIONS.get(name, JSON_VERSION)}"


def current_command_path() -> list[str]:
    """The running click command's path without the program name (["policy", "validate"])."""
    context = click.get_current_context(silent=True)
    names: list[str] = []
    while context is not None and context.parent is not None:
        if context.info_name:
            names.append(context.info_name)
        context = context.parent
    return list(reversed(names))


def versioned(data: Any, command_path: Sequence[str]) -> Any:
    """`data` normalised, with a leading `schema` key when it is an object that has none; for
    an array of objects, on each element that has none (its `ELEMENT_SCHEMAS` name)."""
    data = normalise(data)
    if isinstance(data, dict) and "schema" not in data:
        return {"schema": schema_name(command_path), **data}
    if isinstance(data, list):
        element = ELEMENT_SCHEMAS.get(".".join(command_path))
        if element is None:
            name = schema_name(command_path)
            element = f"{name.rsplit('/', 1)[0]}.item/{JSON_VERSION}"
        return [
            {"schema": element, **item} if isinstance(item, dict) and "schema" not in item else item
            for item in data
        ]
    return data


def error_document(
    message: str, exit_code: int, kind: str, command: str, issues: list[dict[str, object]] | None
) -> dict[str, object]:
    """The object `--json` prints when a command fails (docs/json.md, `backupctl.error/1`)."""
    document: dict[str, object] = {
        "schema": ERROR_SCHEMA,
        "ok": False,
        "command": command,
        "error": message,
        "kind": kind,
        "exit_code": exit_code,
        "time": rfc3339(datetime.now(UTC)),
    }
    if issues is not None:
        document["issues"] = issues
    return document


def wants_json(argv: Sequence[str]) -> tuple[bool, bool]:
    """(`--json`, `--log-json`) as given on the command line (options end at `--`).

    Read from argv because after a failure click's contexts are already closed."""
    words = list(argv)
    if "--" in words:
        words = words[: words.index("--")]
    return "--json" in words, "--log-json" in words


def command_word(argv: Sequence[str]) -> str:
    """The command named on the command line (`backup` in `backupctl -q backup app`), or ""."""
    takes_value = {"--policies", "--state-dir", "--catalog", "--keys-dir"}
    iterator = iter(argv)
    for word in iterator:
        if word in takes_value:
            next(iterator, None)
        elif not word.startswith("-"):
            return word
    return ""
