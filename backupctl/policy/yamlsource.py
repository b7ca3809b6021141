"""YAML reading that remembers where every value came from.

PyYAML's composer gives nodes with marks; we build plain Python data *and* a map from dotted
paths (tuples of keys/indexes) to line numbers, so schema errors can say `file:line`.
Duplicate keys (which PyYAML silently collapses) and `${VAR}` / `${VAR:-default}` interpolation
in string values are handled here too.
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        document.issues.append(ConfigIssue(str(path), None, "", f"cannot read file: {error}"))
        return document
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        context_mark = getattr(error, "context_mark", None)
        hint = f"{context} on line {context_mark.line + 1}" if context and context_mark is not None else None
        document.issues.append(ConfigIssue(str(path), line, "", f"invalid YAML: {problem}", hint))
        return document
    if node is None:
        document.issues.append(ConfigIssue(str(path), 1, "", "the file is empty"))
        return document
    document.lines[()] = node.start_mark.line + 1
    document.data = _convert(node, (), document)
    return document


def _convert(node: yaml.Node, path: PathKey, document: LocatedDocument) -> Any:
    document.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(  # construct the scalar key exactly as safe_load would
                ""
            ).construct_object(key_node, deep=True)
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
            result[key] = _convert(value_node, child, document)
            document.lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, index), document) for index, item in enumerate(node.value)]
    value = yaml.SafeLoader("").construct_object(node, deep=True)
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
