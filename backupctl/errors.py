"""Exception hierarchy. Every error a user can see carries the exit code it maps to.

Exit codes (documented in `backupctl --help` and the README):
  0 success, 1 a job failed, 2 bad usage or configuration, 3 partial (complete on some targets only).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3


class BackupctlError(Exception):
    """Base class: a failure with a message written for an operator."""

    exit_code = EXIT_FAILED


class JobFailed(BackupctlError):
    """A backup, restore, verify or drill step failed."""


class ConfigError(BackupctlError):
    """Bad usage or configuration (exit 2). Nothing has been written."""

    exit_code = EXIT_CONFIG


class SecretError(ConfigError):
    """A secret reference could not be resolved (missing variable, file, unsafe permissions)."""


class SourceError(JobFailed):
    """A source's dump or restore tool failed."""


class TargetError(JobFailed):
    """A target could not store or return data.

    `transient` marks errors worth retrying (timeouts, 5xx, throttling); permanent errors
    (access denied, missing bucket) are not retried.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RetainedByLock(TargetError):
    """The object version is protected by object lock / retention and was not deleted."""


class IntegrityError(JobFailed):
    """A stored artifact or manifest does not match what was recorded."""


class PartialFailure(BackupctlError):
    """The snapshot is complete on some targets and failed on others (exit 3).

    `result` carries what was done (a backup's BackupResult), so metrics and notifications
    still report sizes and the targets that worked."""

    exit_code = EXIT_PARTIAL

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located precisely."""

    file: str
    line: int | None
    path: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        at = f" at '{self.path}'" if self.path else ""
        text = f"{where}:{at} {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class PolicyInvalid(ConfigError):
    """One or more configuration files are invalid; carries every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(issue.render() for issue in issues))
