"""Field types shared by the policy and drill schemas."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from backupctl.core.cron import validate_cron
from backupctl.core.durations import format_duration, parse_duration
from backupctl.core.secrets import SecretRef

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _name(value: Any) -> Any:
    if isinstance(value, str) and not _NAME.match(value):
        raise ValueError(
            f"'{value}' is not a valid name: use lowercase letters, digits, '-' and '_' "
            "(start with a letter or digit, at most 63 characters)"
        )
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"{value} has no unit: write e.g. {int(value)}m or {int(value)}h")
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 15m, 4h or 7d")
    return parse_duration(value)


def _secret(value: Any) -> Any:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a secret reference: env:NAME, file:/path/to/secret or cmd:program args")
    return SecretRef.parse(value)


def _cron(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("expected a cron expression such as '15 2 * * *'")
    return validate_cron(value)


Name = Annotated[str, BeforeValidator(_name)]
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[smhdw])+$", "examples": ["15m", "4h", "7d"]}),
]
Secret = Annotated[
    SecretRef,
    BeforeValidator(_secret),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(env|file|cmd):.+$", "examples": ["env:DB_PASSWORD"]}),
]
Cron = Annotated[str, BeforeValidator(_cron)]
