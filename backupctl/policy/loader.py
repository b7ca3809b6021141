"""Load and validate policy files: structural (schema) then logical checks, all errors at once.

Every problem becomes a ConfigIssue with file, line, dotted path, message and, where we can
guess, a hint ("did you mean 'targets'?"). `load_policy` raises PolicyInvalid carrying all of
them; nothing is written anywhere while loading.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from backupctl.core.secrets import SecretRef
from backupctl.errors import ConfigError, ConfigIssue, PolicyInvalid, SecretError
from backupctl.policy.schema import Policy
from backupctl.policy.yamlsource import LocatedDocument, PathKey, dotted, read_text, read_yaml

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    file: Path
    sha256: str  # of the file's bytes, recorded in every manifest


def load_policy(path: Path, *, check_secrets: bool = True) -> LoadedPolicy:
    """Load one policy file. Raises PolicyInvalid listing every problem found."""
    loaded: LoadedPolicy = load_model(path, Policy, _logical_policy_checks, check_secrets=check_secrets)
    return loaded


M = typing.TypeVar("M", bound=BaseModel)


def load_model(
    path: Path,
    model: type[M],
    logical: typing.Callable[[M, LocatedDocument, bool], list[ConfigIssue]],
    *,
    check_secrets: bool = True,
    variables: re.Pattern[str] | None = None,
) -> Any:
    """Shared by policies and drills: YAML → structural validation → logical validation."""
    document = read_yaml(path, variables) if variables is not None else read_yaml(path)
    if document.issues and document.data is None:
        raise PolicyInvalid(document.issues)
    issues = list(document.issues)
    if not isinstance(document.data, dict):
        issues.append(ConfigIssue(str(path), 1, "", "expected a mapping of keys at the top level"))
        raise PolicyInvalid(issues)
    try:
        parsed = model.model_validate(document.data)
    except ValidationError as error:
        issues.extend(schema_issues(error, document, model))
        raise PolicyInvalid(_sorted(issues)) from None
    issues.extend(logical(parsed, document, check_secrets))
    if issues:
        raise PolicyInvalid(_sorted(issues))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if model is Policy:
        return LoadedPolicy(typing.cast(Policy, parsed), path, digest)
    return parsed


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(issues, key=lambda issue: (issue.file, issue.line or 0, issue.path))


# --------------------------------------------------------------------------- schema errors
def schema_issues(
    error: ValidationError, document: LocatedDocument, model: type[BaseModel]
) -> list[ConfigIssue]:
    """Translate pydantic errors into located, human issues."""
    issues: list[ConfigIssue] = []
    seen: set[tuple[str, str]] = set()
    for item in error.errors():
        path: PathKey = _data_path(item["loc"], document.data)
        if item["type"] == "union_tag_invalid":
            path = (*path, "type")
        message, hint = _message(item, path, document.data, model)
        key = (dotted(path), message)
        if key in seen:
            continue
        seen.add(key)
        issues.append(ConfigIssue(document.file, document.line_of(path), dotted(path), message, hint))
    return issues


def _data_path(loc: tuple[int | str, ...], data: Any) -> PathKey:
    """Drop discriminator tags pydantic inserts into `loc` (sources[0].postgres.url -> sources[0].url)."""
    path: list[str | int] = []
    current = data
    for part in loc:
        tag = isinstance(current, dict) and isinstance(part, str) and part not in current
        if tag and isinstance(current, dict) and current.get("type") == part:
            continue  # the union tag, not a key in the file
        path.append(part)
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        else:
            current = None
    return tuple(path)


def _message(item: Any, path: PathKey, data: Any, model: type[BaseModel]) -> tuple[str, str | None]:
    kind = item["type"]
    raw = str(item.get("msg", ""))
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, path[:-1], data)
        key = str(path[-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"unknown key '{key}'", hint
    if kind == "missing":
        return f"missing required key '{path[-1]}'", None
    if kind == "union_tag_invalid":
        context = item.get("ctx", {})
        expected = str(context.get("expected_tags", "")).replace("'", "")
        tag = str(context.get("tag", ""))
        options = [option.strip() for option in expected.split(",")]
        similar = difflib.get_close_matches(tag, options, n=1)
        return f"unknown type '{tag}'; expected one of: {expected}", (
            f"did you mean '{similar[0]}'?" if similar else None
        )
    if kind == "too_short":
        return f"needs at least {item.get('ctx', {}).get('min_length', 1)} entry", None
    if kind == "union_tag_not_found":
        return "missing required key 'type'", None
    if raw.startswith("Value error, "):
        raw = raw[len("Value error, ") :]
    given = item.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(given, dict | list):
        raw = f"{raw}; got {given!r}"
    return raw, None


def _allowed_keys(model: type[BaseModel], path: PathKey, data: Any) -> list[str]:
    current: Any = model
    node = data
    for part in path:
        if isinstance(part, int):
            current = _item_type(current)
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                return []
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = field.annotation
            node = node.get(part) if isinstance(node, dict) else None
        current = _resolve_union(current, node)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _item_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    return args[0] if args else annotation


def _resolve_union(annotation: Any, node: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _resolve_union(typing.get_args(annotation)[0], node)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if isinstance(node, dict) and "type" in node:
            for member in members:
                if isinstance(member, type) and issubclass(member, BaseModel):
                    tag = member.model_fields.get("type")
                    if tag is not None and node["type"] in typing.get_args(tag.annotation):
                        return member
        return members[0] if len(members) == 1 else annotation
    return annotation


# --------------------------------------------------------------------------- logical checks
def _logical_policy_checks(
    policy: Policy, document: LocatedDocument, check_secrets: bool
) -> list[ConfigIssue]:
    from backupctl.targets.base import is_blob_target
    from backupctl.targets.registry import KINDS, holds_blobs, traits_of

    issues: list[ConfigIssue] = []

    def add(path: PathKey, message: str, hint: str | None = None) -> None:
        issues.append(ConfigIssue(document.file, document.line_of(path), dotted(path), message, hint))

    for kind, items in (("source", policy.sources), ("target", policy.targets)):
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.name in seen:
                add(
                    (f"{kind}s", index, "name"),
                    f"duplicate {kind} name '{item.name}'",
                    f"first used at {kind}s[{seen[item.name]}]",
                )
            seen.setdefault(item.name, index)

    target_names = [target.name for target in policy.targets]
    for index, source in enumerate(policy.sources):
        for position, wanted in enumerate(source.targets or []):
            if wanted not in target_names:
                close = difflib.get_close_matches(wanted, target_names, n=1)
                add(
                    ("sources", index, "targets", position),
                    f"target '{wanted}' is not defined in this policy",
                    f"did you mean '{close[0]}'?" if close else f"targets: {', '.join(target_names)}",
                )
        if source.targets == []:
            add(
                ("sources", index, "targets"),
                "the source goes to no target",
                "remove the key to use all targets",
            )
        if source.type in ("files", "sqlite") and not source.path.startswith("/"):
            add(("sources", index, "path"), f"path must be absolute, got '{source.path}'")

    for index, target in enumerate(policy.targets):
        path = getattr(target, "path", "")  # a directory of this host must be absolute
        if target.type in KINDS and traits_of(target).local_directory and not path.startswith("/"):
            add(("targets", index, "path"), f"path must be absolute, got '{path}'")
        if target.type not in KINDS or (holds_blobs(target.type) and not is_blob_target(target.type)):
            add(("targets", index, "type"), f"target type '{target.type}' is not available in this version")

    from backupctl.policy.rpo_check import pitr_issues  # PITR blocks (docs/pitr.md)

    for path, message in pitr_issues(policy):
        add(path, message)

    if policy.drill_file is not None:
        drill = Path(document.file).absolute().parent / Path(policy.drill_file).expanduser()
        if not drill.is_file():
            state = "is not a file" if drill.exists() else "does not exist"
            add(("drill_file",), f"drill file {drill} {state}",
                "relative paths start at the policy file's directory")  # fmt: skip

    for index, recipient in enumerate(policy.encryption.recipients):
        problem = recipient_problem(recipient)
        if problem:
            add(("encryption", "recipients", index), problem)
    for index, key in enumerate(policy.signing.trusted_keys):
        if not _is_ed25519_public(key):
            add(("signing", "trusted_keys", index), "not an Ed25519 public key (base64 of 32 bytes)")

    if check_secrets:
        for path, ref in _secret_refs(policy):
            try:
                ref.check()
            except SecretError as error:
                add(path, f"secret {ref}: {error}")
    return issues


def _secret_refs(policy: Policy) -> list[tuple[PathKey, SecretRef]]:
    """Secrets the *backup* needs (the age identity is only needed to restore: not checked)."""
    found: list[tuple[PathKey, SecretRef]] = []
    for kind, items in (("sources", policy.sources), ("targets", policy.targets)):
        for index, item in enumerate(items):
            for field_name in type(item).model_fields:
                value = getattr(item, field_name)
                if isinstance(value, SecretRef):
                    found.append(((kind, index, field_name), value))
                elif isinstance(value, dict):
                    for key, inner in value.items():
                        if isinstance(inner, SecretRef):
                            found.append(((kind, index, field_name, key), inner))
    return found


def recipient_problem(text: str) -> str | None:
    """None when `text` is a valid age recipient or a readable recipients file reference."""
    from backupctl.core.crypto import parse_recipients

    try:
        parse_recipients([text])
    except ConfigError as error:
        return str(error)
    return None


def _is_ed25519_public(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


# --------------------------------------------------------------------------- discovery
def policy_files(directory: Path) -> list[Path]:
    """Every policy file in a directory (or the file itself), sorted."""
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise ConfigError(
            f"policy directory {directory} does not exist (set --policies or BACKUPCTL_POLICIES)"
        )
    return sorted(path for path in directory.iterdir() if path.suffix in POLICY_SUFFIXES and path.is_file())


def find_policy(name: str, directory: Path, *, check_secrets: bool = True) -> LoadedPolicy:
    """Find the policy called `name`: `<dir>/<name>.yaml` first, else any file whose `name:` matches."""
    files = policy_files(directory)
    preferred = [path for path in files if path.stem == name]
    for path in preferred + [path for path in files if path not in preferred]:
        declared = _declared_name(path)
        if declared is None and path.stem == name:
            return load_policy(path, check_secrets=check_secrets)  # raises with the located error
        if declared == name:
            return load_policy(path, check_secrets=check_secrets)
    known = [declared for path in files if (declared := _declared_name(path))]
    hint = f"; known policies: {', '.join(sorted(known))}" if known else ""
    raise ConfigError(f"no policy named '{name}' in {directory}{hint}")


def _declared_name(path: Path) -> str | None:
    """The top-level `name:` of a policy file, or None if it is unreadable, too large or not YAML.

    safe_load builds each anchored node once (aliases share it), so an alias bomb stays cheap."""
    text = read_text(path, [])
    if text is None:
        return None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return raw["name"] if isinstance(raw, dict) and isinstance(raw.get("name"), str) else None


def validate_paths(
    paths: list[Path], *, check_secrets: bool = True
) -> tuple[list[LoadedPolicy], list[ConfigIssue]]:
    """Validate every policy file under `paths`; return the good ones and every issue."""
    loaded: list[LoadedPolicy] = []
    issues: list[ConfigIssue] = []
    names: dict[str, Path] = {}
    for base in paths:
        try:
            files = policy_files(base)
        except ConfigError as error:
            issues.append(ConfigIssue(str(base), None, "", str(error)))
            continue
        for path in files:
            try:
                result = load_policy(path, check_secrets=check_secrets)
            except PolicyInvalid as error:
                issues.extend(error.issues)
                continue
            if result.policy.name in names:
                issues.append(
                    ConfigIssue(
                        str(path),
                        1,
                        "name",
                        f"policy name '{result.policy.name}' is also used by {names[result.policy.name]}",
                    )
                )
                continue
            names[result.policy.name] = path
            loaded.append(result)
    return loaded, issues
