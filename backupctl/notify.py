"""Job notifications: generic JSON webhook, healthchecks.io pings, Slack-compatible webhook.

Every job kind (backup, drill, verify, prune, replicate, status) goes through the same channels;
a channel's `jobs:` says which kinds it hears (default: all for webhook and Slack, only backup
for healthchecks, whose check URL is one dead-man timer per backup schedule). A `recovered`
event (a job kind succeeding after it failed, or `status` regaining compliance) goes to the
channels that hear failures.

A notification is best effort: every failure (secret not resolvable, HTTP error, timeout, refused
connection) is logged on the `backupctl.notify` logger and swallowed, so a broken notification
channel never fails a backup. URLs and header values may be secret references (`env:`, `file:`,
`cmd:`), resolved at send time; payloads are masked so no resolved secret ever leaves in them.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backupctl import __version__
from backupctl.core.secrets import SCHEMES, SecretRef, mask

log = logging.getLogger("backupctl.notify")

Event = Literal["start", "success", "failure", "recovered"]
Job = Literal["backup", "drill", "verify", "prune", "replicate", "status"]
JOBS: tuple[Job, ...] = ("backup", "drill", "verify", "prune", "replicate", "status")
TIMEOUT_SECONDS = 10.0
RETRIES = 2
HEALTHCHECKS_BODY_LIMIT = 10_000  # healthchecks.io keeps at most 10 KB of a ping body
_DEFAULT_ON: dict[str, list[Event]] = {
    "webhook": ["failure"],
    "slack": ["failure"],
    "healthchecks": ["start", "success", "failure"],
}


def _is_ref(value: str) -> bool:
    scheme, sep, _ = value.partition(":")
    return bool(sep) and scheme in SCHEMES


class NotificationChannel(BaseModel):
    """One notification channel of a policy (`notifications:` list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook", "healthchecks", "slack"] = Field(
        description="webhook: JSON POST; healthchecks: start/success/fail pings; slack: {text} POST."
    )
    url: str = Field(
        description="http(s) URL, or a secret reference (env:NAME, file:/path, cmd:program) holding it.",
        examples=["env:SLACK_WEBHOOK_URL", "https://hc-ping.com/0e6f4c1a-uuid"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers; values may be secret references (use one for any credential).",
        examples=[{"Authorization": "env:WEBHOOK_AUTH"}],
    )
    on: list[Event] | None = Field(
        default=None,
        description="Events sent: start, success, failure. Default: failure (webhook, slack), "
        "all three (healthchecks).",
    )
    name: str | None = Field(default=None, description="Name used in log messages (default: the type).")
    jobs: list[Job] | None = Field(
        default=None,
        description="Job kinds sent: backup, drill, verify, prune, replicate, status. Default: all "
        "(webhook, slack); backup only (healthchecks: one check per backup schedule).",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if _is_ref(value):
            SecretRef.parse(value)
        elif not value.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL or a secret reference (env:, file:, cmd:)")
        return value

    @model_validator(mode="after")
    def _default_on(self) -> NotificationChannel:
        if self.on is None:
            object.__setattr__(self, "on", list(_DEFAULT_ON[self.type]))
        return self

    @property
    def label(self) -> str:
        return self.name or self.type

    def events(self) -> list[Event]:
        return list(self.on or _DEFAULT_ON[self.type])

    def hears(self, event: Event, job: Job) -> bool:
        """Whether this channel is sent `event` of a `job` run (`recovered` rides on `failure`)."""
        jobs = self.jobs if self.jobs is not None else (["backup"] if self.type == "healthchecks" else JOBS)
        wanted = "failure" if event == "recovered" else event
        return job in jobs and wanted in self.events() and not (
            self.type == "healthchecks" and event == "recovered"  # healthchecks has no such ping
        )


def _resolve(value: str) -> str:
    return SecretRef.parse(value).resolve() if _is_ref(value) else value


def _masked(value: Any) -> Any:
    """Mask every string inside a JSON-like structure."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {mask(str(key)): _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


class Notifier:
    """Sends run events to every configured channel. Its public methods never raise."""

    def __init__(
        self,
        channels: list[NotificationChannel],
        *,
        timeout: float = TIMEOUT_SECONDS,
        retries: int = RETRIES,
        backoff: float = 1.0,
    ) -> None:
        self.channels = channels
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.host = socket.gethostname()

    def start(self, policy: str, job: Job = "backup") -> None:
        """A run of `policy` begins (healthchecks `/start`; other channels only if asked)."""
        self._emit("start", policy, None, {}, job)

    def success(self, policy: str, summary: Mapping[str, Any], job: Job = "backup") -> None:
        """A run of `policy` completed; `summary` is e.g. `BackupResult.as_dict()`."""
        self._emit("success", policy, None, summary, job)

    def failure(self, policy: str, error: str, summary: Mapping[str, Any], job: Job = "backup") -> None:
        """A run of `policy` failed (or was partial) with `error`."""
        self._emit("failure", policy, error, summary, job)

    def recovered(self, policy: str, summary: Mapping[str, Any], job: Job) -> None:
        """A `job` of `policy` succeeded after it had failed (status: compliance regained)."""
        self._emit("recovered", policy, None, summary, job)

    # ------------------------------------------------------------------ internals
    def _emit(
        self, event: Event, policy: str, error: str | None, summary: Mapping[str, Any], job: Job = "backup"
    ) -> None:
        for channel in self.channels:
            try:
                if channel.hears(event, job):
                    self._send(channel, event, policy, error, summary, job)
            except Exception as problem:  # a notification must never fail the backup
                log.warning(
                    "notification %s (%s) for %s of policy %s failed: %s",
                    channel.label,
                    channel.type,
                    event,
                    policy,
                    mask(str(problem)) or type(problem).__name__,
                )

    def _send(
        self,
        channel: NotificationChannel,
        event: Event,
        policy: str,
        error: str | None,
        summary: Mapping[str, Any],
        job: Job = "backup",
    ) -> None:
        url = _resolve(channel.url).rstrip("/")
        headers = {key: _resolve(value) for key, value in channel.headers.items()}
        text = self._text(event, policy, error, job)
        body: bytes | None
        if channel.type == "healthchecks":
            url = {"start": f"{url}/start", "success": url, "failure": f"{url}/fail", "recovered": url}[event]
            body = None if event == "start" else text.encode()[:HEALTHCHECKS_BODY_LIMIT]
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            payload: dict[str, Any]
            if channel.type == "slack":
                payload = {"text": text}
            else:
                payload = {
                    "event": event,
                    "job": job,
                    "policy": policy,
                    "host": self.host,
                    "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # docs/json.md
                    "error": error,
                    "summary": dict(summary),
                    "backupctl_version": __version__,
                }
            body = json.dumps(_masked(payload), default=str).encode()
            headers.setdefault("Content-Type", "application/json")
        self._post(url, body, headers)

    def _text(self, event: Event, policy: str, error: str | None, job: Job = "backup") -> str:
        if event == "start":
            return f"backupctl: {job} {policy} started on {self.host}"
        if event == "success":
            return f"backupctl: {job} {policy} succeeded on {self.host}"
        if event == "recovered":
            what = "is compliant again" if job == "status" else "succeeded again"
            return f"backupctl: {job} {policy} {what} on {self.host}"
        if job == "status":
            return mask(f"backupctl: policy {policy} is OUT OF COMPLIANCE on {self.host}: {error or '?'}")
        return mask(f"backupctl: {job} {policy} FAILED on {self.host}: {error or 'unknown error'}")

    def _post(self, url: str, body: bytes | None, headers: dict[str, str]) -> None:
        """GET (no body) or POST; retries 5xx and connection errors with exponential backoff."""
        import urllib.error  # here: the policy schema imports this module, few runs notify
        import urllib.request

        attempt = 0
        while True:
            request = urllib.request.Request(
                url, data=body, headers=headers, method="GET" if body is None else "POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                return
            except urllib.error.HTTPError as problem:
                if problem.code < 500 or attempt >= self.retries:
                    raise RuntimeError(f"HTTP {problem.code} {problem.reason}") from None
            except (urllib.error.URLError, OSError) as problem:
                if attempt >= self.retries:
                    reason = getattr(problem, "reason", problem)
                    raise RuntimeError(f"cannot reach the endpoint: {reason}") from None
            time.sleep(self.backoff * (2**attempt))
            attempt += 1


def notifier_from_config(
    channels: Sequence[Mapping[str, Any] | NotificationChannel] | None, **options: Any
) -> Notifier:
    """Build a `Notifier` from channel dicts (or models); raises ConfigError on an invalid channel."""
    from backupctl.errors import ConfigError

    parsed: list[NotificationChannel] = []
    for index, channel in enumerate(channels or []):
        try:
            parsed.append(
                channel if isinstance(channel, NotificationChannel) else NotificationChannel(**channel)
            )
        except ValidationError as problem:
            details = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'channel'}: {item['msg']}"
                for item in problem.errors()
            )
            raise ConfigError(f"notifications[{index}]: {details}") from None
    return Notifier(parsed, **options)
