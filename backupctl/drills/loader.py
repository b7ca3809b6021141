"""Load drill files (drills/*.yaml) with the policy loader's machinery: file:line errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backupctl.drills.schema import Drill
from backupctl.errors import ConfigError, ConfigIssue, PolicyInvalid
from backupctl.policy.loader import LoadedPolicy, load_model
from backupctl.policy.yamlsource import UPPERCASE_ONLY, LocatedDocument, PathKey, dotted, read_yaml


def load_drill(path: Path) -> Drill:
    """Parse and validate a drill file. Raises PolicyInvalid (exit 2) listing every problem."""
    drill: Drill = load_model(path, Drill, _logical_checks, variables=UPPERCASE_ONLY)
    return drill


def drill_file_issues(loaded: list[Any]) -> list[ConfigIssue]:
    """Problems of the `drill_file` of each loaded policy (for `policy validate`): the file is
    found, names the policy, and validates in full (file:line of the drill file)."""
    from backupctl.errors import ConfigError, PolicyInvalid
    from backupctl.scheduling import resolve_drill_file

    issues: list[ConfigIssue] = []
    for item in loaded:
        try:
            path = resolve_drill_file(item)
            if path is not None:
                load_drill_for_validation(path)
        except PolicyInvalid as error:
            issues += error.issues
        except ConfigError as error:
            issues.append(ConfigIssue(str(item.file), None, "drill_file", str(error)))
    return issues


def load_drill_for_validation(path: Path) -> Drill:
    """Validate a drill file outside a run: the per-run secret gets a stand-in value."""
    import os

    os.environ.setdefault("BACKUPCTL_DRILL_SECRET", "validation-only")
    return load_drill(path)


def _logical_checks(drill: Drill, document: LocatedDocument, check_secrets: bool) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []

    def add(path: PathKey, message: str, hint: str | None = None) -> None:
        issues.append(ConfigIssue(document.file, document.line_of(path), dotted(path), message, hint))

    names: dict[str, int] = {}
    for index, service in enumerate(drill.services):
        if service.name in names:
            add(("services", index, "name"), f"duplicate service name '{service.name}'")
        names.setdefault(service.name, index)
        if service.kind == "app" and (service.databases or not service.port):
            if service.databases:
                add(("services", index, "databases"), "app services cannot hold database restores")
            if not service.port:
                add(("services", index, "port"), "app services need the port they listen on")
        if service.kind != "app" and service.files:
            add(("services", index, "files"), "file trees go into app services")
        if service.ready.http is not None and service.ready.command is not None:
            add(("services", index, "ready", "command"), "give ready.http or ready.command, not both")
        if service.ready.http is not None and not service.ready.http.startswith("/"):
            add(("services", index, "ready", "http"), "a path on the service, starting with /",
                "absolute URLs are refused: the probe never leaves staging")
    seen_sources: dict[str, str] = {}
    for index, service in enumerate(drill.services):
        restores: list[tuple[str, str]] = [("databases", d.source) for d in service.databases]
        restores += [("files", f.source) for f in service.files]
        for key, source in restores:
            if source in seen_sources:
                add(("services", index, key), f"source '{source}' is restored twice")
            seen_sources[source] = service.name
    for index, check in enumerate(drill.checks):
        if check.service not in names:
            add(
                ("checks", index, "service"),
                f"service '{check.service}' is not defined in this drill",
                f"services: {', '.join(names) or 'none'}",
            )
        elif check.type == "http" and drill.services[names[check.service]].kind != "app":
            add(("checks", index, "service"), "http checks call an app service")
        elif check.type == "sql" and drill.services[names[check.service]].kind == "app":
            add(("checks", index, "service"), "sql checks run in a database service")
    for index, step in enumerate(drill.post_restore):
        where = ("post_restore", index)
        if step.service not in names:
            add((*where, "service"), f"service '{step.service}' is not defined in this drill",
                f"services: {', '.join(names) or 'none'}")  # fmt: skip
        if (step.sql is None) == (step.command is None):
            add(where, "a post-restore step needs `sql` or `command` (one of them)")
        if step.sql is not None:
            if step.database is None:
                add((*where, "sql"), "an sql step needs the `database` it runs in")
            if step.service in names and drill.services[names[step.service]].kind == "app":
                add((*where, "service"), "sql steps run in a database service")
        elif step.database is not None:
            add((*where, "database"), "`database` goes with `sql`")
    step_names = [step.name for step in drill.post_restore]
    for index, name in enumerate(step_names):
        if step_names.index(name) != index:
            add(("post_restore", index, "name"), f"duplicate post-restore step name '{name}'")
    check_names = [check.name for check in drill.checks]
    for index, name in enumerate(check_names):
        if check_names.index(name) != index:
            add(("checks", index, "name"), f"duplicate check name '{name}'")
    return issues


def policy_for_drill(path: Path, drill: Drill, find: Callable[[str], LoadedPolicy]) -> LoadedPolicy:
    """The policy a drill file names, checked against the drill: `find(name)` looks it up.

    Raises PolicyInvalid (exit 2) located in the drill file when the policy does not exist
    (`policy:`), or when a service restores a source the policy does not have, or the drill's
    `target:` is not one of the policy's targets."""
    document = read_yaml(path, UPPERCASE_ONLY)

    def issue(where: PathKey, message: str, hint: str | None = None) -> ConfigIssue:
        return ConfigIssue(str(path), document.line_of(where), dotted(where), message, hint)

    try:
        loaded = find(drill.policy)
    except PolicyInvalid:
        raise  # the policy file itself is bad: its own file:line issues say why
    except ConfigError as error:
        raise PolicyInvalid([issue(("policy",), str(error))]) from None
    sources = [source.name for source in loaded.policy.sources]
    issues: list[ConfigIssue] = []
    for index, service in enumerate(drill.services):
        restores = [("databases", n, d.source) for n, d in enumerate(service.databases)]
        restores += [("files", n, f.source) for n, f in enumerate(service.files)]
        for key, position, source in restores:
            if source not in sources:
                close = difflib.get_close_matches(source, sources, n=1)
                issues.append(
                    issue(
                        ("services", index, key, position, "source"),
                        f"policy '{drill.policy}' has no source '{source}'",
                        f"did you mean '{close[0]}'?" if close else f"sources: {', '.join(sources)}",
                    )
                )
    targets = [target.name for target in loaded.policy.targets]
    if drill.target is not None and drill.target not in targets:
        message = f"policy '{drill.policy}' has no target '{drill.target}'"
        issues.append(issue(("target",), message, f"targets: {', '.join(targets)}"))
    if issues:
        raise PolicyInvalid(issues)
    return loaded
