"""YAML reading that remembers where every value came from.

PyYAML's composer gives nodes with marks; we build plain Python data *and* a map from dotted
paths (tuples of keys/indexes) to line numbers, so schema errors can say `file:line`.
Duplicate keys (which PyYAML silently collapses) and `${VAR}` / `${VAR:-default}` interpolation
in string values are handled here too.

Hostile input stays cheap: a file larger than MAX_DOCUMENT_BYTES is refused before it is parsed,
and building the data stops after MAX_VALUES values, so a "billion laughs" alias bomb (each alias
re-expands the node it names) fails in milliseconds instead of taking minutes and gigabytes.
Tags PyYAML's safe loader does not know (`!!python/name:`), invalid UTF-8 and bad YAML all
become a located ConfigIssue.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backupctl.errors import ConfigIssue

PathKey = tuple[str | int, ...]
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Drill files keep lower-case `${name}` for values the runtime and checks fill in later
# (`${db.port}`, `${p1}`); only upper-case names are environment variables there.
UPPERCASE_ONLY = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")

# A policy or drill is a few kilobytes; the example policy is ~3 KB. 1 MiB leaves room for
# generated files and still parses in well under a second.
MAX_DOCUMENT_BYTES = 1 << 20
# Values (mappings, lists, scalars) built from one document, counting every alias expansion.
# The largest real policy we know of has a few thousand; 100,000 are built in about a second.
MAX_VALUES = 100_000


@dataclass
class _Budget:
    """What `_convert` shares while building one document: one safe loader, a value count."""

    loader: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))
    values: int = 0


_PLAIN_COLLECTIONS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class _TooManyValues(Exception):
    """Raised inside `_convert` when the document expands beyond MAX_VALUES."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


@dataclass
class LocatedDocument:
    file: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    variables: re.Pattern[str] = _VARIABLE

    def line_of(self, path: PathKey) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)


def dotted(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_yaml(path: Path, variables: re.Pattern[str] = _VARIABLE) -> LocatedDocument:
    """Parse a YAML file into data plus line map. Problems are collected in `issues`.

    `variables` selects which `${...}` are environment variables interpolated now."""
    document = LocatedDocument(file=str(path), data=None)
    document.variables = variables
    text = read_text(path, document.issues)
    if text is None:
        return document
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            document.issues.append(ConfigIssue(str(path), 1, "", "the file is empty"))
            return document
        document.lines[()] = node.start_mark.line + 1
        document.data = _convert(node, (), document, _Budget())
    except yaml.YAMLError as error:
        document.data = None
        document.issues.append(_yaml_issue(str(path), error))
    except _TooManyValues as error:
        document.data = None
        document.issues.append(
            ConfigIssue(
                str(path),
                error.line,
                "",
                f"the document expands to more than {MAX_VALUES:,} values",
                "YAML aliases (*name) re-expanding anchors? write the values out",
            )
        )
    return document


def read_text(path: Path, issues: list[ConfigIssue]) -> str | None:
    """The UTF-8 text of a configuration file, or None with a located issue appended.

    Refuses files over MAX_DOCUMENT_BYTES before reading them, and names the line of the
    first byte that is not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            issues.append(
                ConfigIssue(
                    str(path),
                    None,
                    "",
                    f"the file is {size:,} bytes; configuration files are limited to "
                    f"{MAX_DOCUMENT_BYTES:,} bytes",
                )
            )
            return None
        raw = path.read_bytes()[: MAX_DOCUMENT_BYTES + 1]  # the file may grow after stat()
    except OSError as error:
        issues.append(ConfigIssue(str(path), None, "", f"cannot read file: {error}"))
        return None
    if len(raw) > MAX_DOCUMENT_BYTES:
        issues.append(ConfigIssue(str(path), None, "", f"the file is over {MAX_DOCUMENT_BYTES:,} bytes"))
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        issues.append(
            ConfigIssue(
                str(path),
                line,
                "",
                f"invalid UTF-8: byte 0x{raw[error.start]:02x} at column {column}",
                "configuration files are UTF-8 text",
            )
        )
        return None


def _yaml_issue(file: str, error: yaml.YAMLError) -> ConfigIssue:
    """A located issue for a PyYAML parse or construction error (unknown tags included)."""
    mark = getattr(error, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    hint = f"{context} on line {context_mark.line + 1}" if context and context_mark is not None else None
    if isinstance(error, yaml.constructor.ConstructorError):
        hint = "only plain YAML values are allowed; tags like !!python/... are not"
    return ConfigIssue(file, line, "", f"invalid YAML: {problem}", hint)


def _convert(node: yaml.Node, path: PathKey, document: LocatedDocument, budget: _Budget) -> Any:
    """Plain data for `node`. Raises _TooManyValues past MAX_VALUES, yaml.YAMLError on bad tags."""
    budget.values += 1
    if budget.values > MAX_VALUES:
        raise _TooManyValues(node.start_mark.line + 1)
    document.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTIONS:
        # Scalars go through the safe constructor, which refuses foreign tags; collections are
        # built here, so refuse `!!python/object/apply:` and friends ourselves.
        raise yaml.constructor.ConstructorError(
            None, None, f"could not determine a constructor for the tag '{node.tag}'", node.start_mark
        )
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = budget.loader.construct_object(key_node, deep=True)  # exactly as safe_load would
            if not isinstance(key, str | int):
                document.issues.append(
                    ConfigIssue(
                        document.file,
                        key_node.start_mark.line + 1,
                        dotted(path),
                        f"keys must be plain words, got {type(key).__name__}",
                    )
                )
                continue
            if key in result:
                document.issues.append(
                    ConfigIssue(
                        document.file,
                        key_node.start_mark.line + 1,
                        dotted((*path, key)),
                        f"duplicate key '{key}' (first defined on line {document.lines[(*path, key)]})",
                    )
                )
                continue
            child = (*path, key)
            document.lines[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, document, budget)
            document.lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, index), document, budget) for index, item in enumerate(node.value)]
    value = budget.loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        value = _interpolate(value, path, document, node.start_mark.line + 1)
    return value


def _interpolate(value: str, path: PathKey, document: LocatedDocument, line: int) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        document.issues.append(
            ConfigIssue(
                document.file,
                line,
                dotted(path),
                f"environment variable {name} is not set",
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )
        )
        return match.group(0)

    return document.variables.sub(replace, value)
