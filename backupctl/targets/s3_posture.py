"""The bucket side of the `s3` target: client, error translation, posture and `target setup`.

`backupctl.targets.s3` (the objects: write, read, list, delete) builds on this module.

- `make_client` and `translate_error` are shared by both modules: every failure reaching a
  caller is a TargetError whose `transient` flag says whether a retry can help.
- `read_posture` reads what the bucket really does (versioning, object lock, lifecycle), never
  the YAML, and lists each problem with its fix; `check_posture` turns problems into an error
  before a backup writes anything.
- `plan_setup` compares the bucket with the target's declaration and returns the changes;
  `apply_setup` makes them (or only plans with `dry_run`). Both return data and print nothing:
  the CLI renders. A second run plans nothing. Setup creates a missing bucket (with object lock
  when declared), enables versioning, sets the object lock default retention and installs the
  backupctl lifecycle rules next to any other rules the bucket has.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import urllib3.exceptions
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from backupctl.errors import ConfigError, TargetError
from backupctl.policy.schema import S3Target
from backupctl.targets.base import BlobTarget, Posture

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
ROLE_TAG = "backupctl-role"  # objects are tagged artifact|manifest when a transition is declared
TRANSITION_RULE = "backupctl-transition"
CLEANUP_RULE = "backupctl-cleanup"
ABORT_INCOMPLETE_DAYS = 7
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable",
}  # fmt: skip
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId",
}  # fmt: skip
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
_OUR_RULES = {TRANSITION_RULE, CLEANUP_RULE}
_MISSING = {"NoSuchBucket", "404", "NotFound"}  # HeadBucket/HeadObject have no body: bare 404
_sessions: dict[str | None, boto3.session.Session] = {}
_sessions_lock = threading.Lock()


# --------------------------------------------------------------------------- client and errors
def make_client(config: S3Target) -> S3Client:
    """A boto3 S3 client for `config`: explicit key references, else `profile`, else the
    standard AWS chain (environment, shared files, instance role). Raises ConfigError.

    Sessions are kept per profile for the life of the process: building the first client of a
    session loads the service model (~0.3 s), later ones take ~30 ms. Credentials from the AWS
    chain are therefore resolved once per process (refreshable ones still refresh).
    """
    if (config.access_key_id is None) != (config.secret_access_key is None):
        raise ConfigError(f"target {config.name}: set both access_key_id and secret_access_key, or neither")
    access_key = secret_key = None
    if config.access_key_id is not None and config.secret_access_key is not None:
        access_key, secret_key = config.access_key_id.resolve(), config.secret_access_key.resolve()
    settings = botocore.config.Config(
        # "standard" retries timeouts, connection errors, 5xx and throttling with jittered
        # exponential backoff, and never a 4xx: a permanent error fails at once.
        # Bounded by the target's deadlines (docs/targets.md): a frozen endpoint fails a request
        # after max_attempts x (connect_timeout + read_timeout) plus backoff, not after 10 minutes.
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        connect_timeout=config.connect_timeout.total_seconds(),
        read_timeout=config.read_timeout.total_seconds(),
        max_pool_connections=max(10, config.max_concurrency + 4),
    )
    with _sessions_lock:  # a boto3 Session is not thread-safe (its clients are)
        try:
            session = _sessions.get(config.profile) or boto3.session.Session(profile_name=config.profile)
        except ProfileNotFound:
            raise ConfigError(
                f"target {config.name}: AWS profile '{config.profile}' is not configured"
            ) from None
        _sessions[config.profile] = session
        return session.client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=settings,
        )


def error_code(error: BaseException) -> str:
    """The S3 error code of a ClientError ('NoSuchKey', 'AccessDenied', '404', ...), else ''."""
    if not isinstance(error, ClientError):
        return ""
    return str(error.response.get("Error", {}).get("Code", ""))


def translate_error(
    error: BaseException, *, target: str, doing: str, bucket: str, key: str | None = None, permission: str
) -> TargetError:
    """Turn a boto3/botocore exception into a TargetError an operator can act on.

    `doing` completes "could not ...", `key` is the full object key (None for the bucket),
    `permission` the IAM action the call needs.
    """
    if isinstance(error, TargetError):
        return error
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    prefix = f"target {target}: could not {doing} {where}"
    code = error_code(error)
    if code == "NoSuchBucket" or (code in _MISSING and key is None):
        return TargetError(
            f"{prefix}: bucket '{bucket}' does not exist (check `bucket:`, `region:`, `endpoint_url:`; "
            f"or create it with `backupctl target setup <policy> {target}`)"
        )
    if code in ("NoSuchKey", *_MISSING):
        return TargetError(f"{prefix}: no such object")
    if code in _BAD_CREDENTIALS:
        return TargetError(
            f"{prefix}: the credentials were rejected ({code}); check access_key_id/secret_access_key, "
            "`profile:` or the AWS environment variables"
        )
    if code in _DENIED:
        return TargetError(
            f"{prefix}: access denied; check that these are the intended credentials and that their "
            f"IAM and bucket policies allow {permission} on {where}"
        )
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        message = error.response.get("Error", {}).get("Message", "")
        transient = status >= 500 or code in _TRANSIENT_CODES
        return TargetError(f"{prefix}: {code} {message}".rstrip(), transient=transient)
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return TargetError(
            f"{prefix}: no AWS credentials found (set the access_key_id/secret_access_key references "
            "or `profile:`, or configure the standard AWS environment)"
        )
    if isinstance(error, BotoConnectionError | HTTPClientError | urllib3.exceptions.HTTPError | OSError):
        # botocore has already retried these with backoff; a later run may well succeed.
        return TargetError(f"{prefix}: endpoint unreachable ({error})", transient=True)
    return TargetError(f"{prefix}: {type(error).__name__}: {error}")


def setup_hint(config: S3Target) -> str:
    """The command that fixes a bucket's posture (a target does not know its policy's name)."""
    return f"run `backupctl target setup <policy> {config.name}`"


# --------------------------------------------------------------------------- reading the bucket
@dataclass
class BucketState:
    """What the bucket says about itself; `unreadable` lists settings we may not read."""

    exists: bool
    versioning: str = "never enabled"  # Enabled, Suspended or never enabled
    lock_enabled: bool = False
    lock_mode: str | None = None
    lock_days: int | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def lock_text(self) -> str:
        if not self.lock_enabled:
            return "disabled"
        if self.lock_mode is None:
            return "enabled without default retention"
        return f"{self.lock_mode}, {self.lock_days} days"


def read_state(client: S3Client, config: S3Target) -> BucketState:
    """Read versioning, object lock and lifecycle. Raises TargetError when the bucket cannot
    be reached at all (a missing bucket is `exists=False`, not an error)."""
    try:
        client.head_bucket(Bucket=config.bucket)
    except Exception as error:
        if error_code(error) in _MISSING:
            return BucketState(exists=False)
        raise _bucket_error(error, config, "reach", "s3:ListBucket") from error
    state = BucketState(exists=True)

    def read(method: Any, absent: str | None, what: str, permission: str) -> Any:
        try:
            return method(Bucket=config.bucket)
        except Exception as error:
            if absent is None or error_code(error) != absent:  # "not configured" is an answer
                state.unreadable.append(str(_bucket_error(error, config, f"read the {what} of", permission)))
            return {}

    versioning = read(client.get_bucket_versioning, None, "versioning", "s3:GetBucketVersioning")
    state.versioning = versioning.get("Status", "never enabled")
    lock = read(
        client.get_object_lock_configuration,
        "ObjectLockConfigurationNotFoundError",
        "object lock",
        "s3:GetBucketObjectLockConfiguration",
    ).get("ObjectLockConfiguration", {})
    state.lock_enabled = lock.get("ObjectLockEnabled") == "Enabled"
    retention = lock.get("Rule", {}).get("DefaultRetention")
    if retention:
        state.lock_mode = retention.get("Mode")
        state.lock_days = retention.get("Days") or 365 * retention.get("Years", 0)
    lifecycle = read(
        client.get_bucket_lifecycle_configuration,
        "NoSuchLifecycleConfiguration",
        "lifecycle",
        "s3:GetLifecycleConfiguration",
    )
    state.rules = list(lifecycle.get("Rules", []))
    return state


def read_posture(client: S3Client, config: S3Target) -> Posture:
    """The target's posture as the bucket reports it, with every problem and its fix."""
    posture = Posture(reachable=False, medium=config.medium, offsite=config.offsite)
    posture.details = {"bucket": config.bucket, "prefix": config.prefix, "endpoint": client.meta.endpoint_url}
    try:
        state = read_state(client, config)
    except TargetError as error:
        posture.problems.append(str(error))
        posture.details["transient"] = error.transient
        return posture
    if not state.exists:
        posture.problems.append(f"bucket {config.bucket} does not exist: {setup_hint(config)}")
        return posture
    posture.reachable = True
    posture.versioned = state.versioning == "Enabled"
    posture.immutable = state.lock_enabled and state.lock_mode is not None
    archiving = any(_archives(rule, config) for rule in state.rules)
    posture.cold = config.storage_class in ARCHIVE_CLASSES or archiving
    posture.details.update(
        versioning=state.versioning,
        object_lock={"enabled": state.lock_enabled, "mode": state.lock_mode, "days": state.lock_days},
        lifecycle_rules=json.loads(json.dumps(state.rules, default=str)),  # JSON-safe (dates)
        storage_class=config.storage_class,
    )
    posture.problems.extend(state.unreadable)
    posture.problems.extend(_problems(config, state))
    return posture


def check_posture(target: BlobTarget) -> None:
    """Raise TargetError when the target's posture lists problems (each with its fix).

    Permanent, except when the target was unreachable for a transient reason (a timeout).
    """
    posture = target.posture()
    if posture.reachable and not posture.problems:
        return
    problems = posture.problems or ["the target is unreachable"]
    raise TargetError(
        f"target {target.name} is not ready for backups:\n" + "\n".join(f"  - {text}" for text in problems),
        transient=not posture.reachable and bool(posture.details.get("transient")),
    )


def _problems(config: S3Target, state: BucketState) -> list[str]:
    problems: list[str] = []
    if config.versioning == "required" and state.versioning != "Enabled":
        problems.append(
            f"bucket {config.bucket} has versioning {state.versioning.lower()}: {setup_hint(config)}"
        )
    wanted = config.object_lock
    if wanted is not None and not state.lock_enabled:
        problems.append(
            f"bucket {config.bucket} has no object lock but the target declares {wanted.mode} for "
            f"{wanted.days} days: object lock can only be enabled on a new bucket created with lock "
            f"enabled: point `bucket:` at a new name and {setup_hint(config)}, which creates it "
            "(on AWS, setup can also enable it on this bucket once versioning is on)"
        )
    elif wanted is not None and _weaker(state, wanted.mode, wanted.days):
        problems.append(
            f"bucket {config.bucket} object lock default retention is {state.lock_text()}, the target "
            f"declares {wanted.mode} for {wanted.days} days: {setup_hint(config)}"
        )
    return problems


def _weaker(state: BucketState, mode: str, days: int) -> bool:
    """True when the bucket's default retention protects less than declared (longer is fine)."""
    if state.lock_mode is None or (state.lock_days or 0) < days:
        return True
    return mode == "COMPLIANCE" and state.lock_mode != "COMPLIANCE"


def _archives(rule: dict[str, Any], config: S3Target) -> bool:
    """True for an enabled lifecycle rule that moves this target's objects to an archive class."""
    if rule.get("Status") != "Enabled":
        return False
    if not any(step.get("StorageClass") in ARCHIVE_CLASSES for step in rule.get("Transitions", [])):
        return False
    rule_filter = rule.get("Filter", {})
    prefix = rule_filter.get("Prefix", rule_filter.get("And", {}).get("Prefix", rule.get("Prefix", "")))
    root = _root(config)
    return root.startswith(prefix) or prefix.startswith(root)


# --------------------------------------------------------------------------- setup
@dataclass(frozen=True)
class SetupChange:
    """One difference between the bucket and the target's declaration."""

    what: str  # "bucket", "versioning", "object lock" or "lifecycle"
    current: str
    desired: str

    def as_dict(self) -> dict[str, str]:
        return {"what": self.what, "current": self.current, "desired": self.desired}


def plan_setup(config: S3Target, client: S3Client | None = None) -> list[SetupChange]:
    """The changes `apply_setup` would make; empty when the bucket already matches.

    Raises TargetError when the bucket cannot be reached or its settings cannot be read.
    """
    return apply_setup(config, dry_run=True, client=client)


def apply_setup(config: S3Target, dry_run: bool = False, client: S3Client | None = None) -> list[SetupChange]:
    """Make the bucket match the declaration; return the changes made (only planned with dry_run).

    Applied in order: bucket, versioning, object lock, lifecycle. Raises TargetError (changes
    made before the failure stay made), e.g. when object lock cannot be enabled on an existing
    bucket.
    """
    client = client if client is not None else make_client(config)
    state = read_state(client, config)
    if state.unreadable:
        raise TargetError("; ".join(state.unreadable))
    changes = _plan(config, state)
    for change in [] if dry_run else changes:
        if change.what == "bucket":
            _create_bucket(client, config)
        elif change.what == "versioning":
            _put(
                client,
                config,
                "versioning",
                "s3:PutBucketVersioning",
                client.put_bucket_versioning,
                VersioningConfiguration={"Status": "Enabled"},
            )
        elif change.what == "object lock":
            _put_object_lock(client, config, state)
        elif change.what == "lifecycle":
            others = [rule for rule in state.rules if rule.get("ID") not in _OUR_RULES]
            _put(
                client,
                config,
                "lifecycle",
                "s3:PutLifecycleConfiguration",
                client.put_bucket_lifecycle_configuration,
                LifecycleConfiguration={"Rules": others + lifecycle_rules(config)},
            )
    return changes


def lifecycle_rules(config: S3Target) -> list[dict[str, Any]]:
    """The backupctl lifecycle rules for the target's declaration (none without `lifecycle`)."""
    lifecycle = config.lifecycle
    if lifecycle is None:
        return []
    root = _root(config)
    rules: list[dict[str, Any]] = []
    if lifecycle.transition_days is not None:
        # Only artifacts move to an archive class (they are tagged): manifests must stay
        # instantly readable for listing, verifying and rebuilding the catalog.
        tag = {"Key": ROLE_TAG, "Value": "artifact"}
        transition = {"Days": lifecycle.transition_days, "StorageClass": lifecycle.transition_class}
        rules.append(
            {
                "ID": TRANSITION_RULE,
                "Status": "Enabled",
                "Transitions": [transition],
                "Filter": {"And": {"Prefix": root, "Tags": [tag]}} if root else {"Tag": tag},
            }
        )
    # A killed run leaves an invisible incomplete multipart upload, billed until aborted.
    cleanup: dict[str, Any] = {
        "ID": CLEANUP_RULE,
        "Status": "Enabled",
        "Filter": {"Prefix": root},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_DAYS},
    }
    if lifecycle.noncurrent_expire_days is not None:
        cleanup["NoncurrentVersionExpiration"] = {"NoncurrentDays": lifecycle.noncurrent_expire_days}
    rules.append(cleanup)
    return rules


def _plan(config: S3Target, state: BucketState) -> list[SetupChange]:
    changes: list[SetupChange] = []
    wanted = config.object_lock
    new = "(new bucket)"
    if not state.exists:
        changes.append(SetupChange("bucket", "missing", "created with object lock" if wanted else "created"))
    if (config.versioning == "required" or wanted is not None) and state.versioning != "Enabled":
        changes.append(SetupChange("versioning", state.versioning if state.exists else new, "Enabled"))
    if wanted is not None and (state.lock_mode, state.lock_days) != (wanted.mode, wanted.days):
        current = state.lock_text() if state.exists else new
        changes.append(SetupChange("object lock", current, f"{wanted.mode}, {wanted.days} days"))
    desired = [_normalized(rule) for rule in lifecycle_rules(config)]
    ours = [_normalized(rule) for rule in state.rules if rule.get("ID") in _OUR_RULES]
    if desired and sorted(desired, key=str) != sorted(ours, key=str):  # services may reorder rules
        current = _describe_rules(ours) if state.exists else new
        changes.append(SetupChange("lifecycle", current, _describe_rules(desired)))
    return changes


def _create_bucket(client: S3Client, config: S3Target) -> None:
    arguments: dict[str, Any] = {}
    region = config.region or client.meta.region_name
    if region and region != "us-east-1":  # us-east-1 refuses an explicit location constraint
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if config.object_lock is not None:
        arguments["ObjectLockEnabledForBucket"] = True
    try:
        client.create_bucket(Bucket=config.bucket, **arguments)
    except Exception as error:
        if error_code(error) == "BucketAlreadyExists":
            raise TargetError(
                f"target {config.name}: the bucket name {config.bucket} is taken by another account; "
                "bucket names are global: choose another"
            ) from error
        if error_code(error) != "BucketAlreadyOwnedByYou":
            raise _bucket_error(error, config, "create", "s3:CreateBucket") from error


def _put_object_lock(client: S3Client, config: S3Target, state: BucketState) -> None:
    assert config.object_lock is not None
    retention = {"Mode": config.object_lock.mode, "Days": config.object_lock.days}
    lock = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}}
    try:
        client.put_object_lock_configuration(Bucket=config.bucket, ObjectLockConfiguration=lock)  # type: ignore[arg-type]
    except Exception as error:
        code = error_code(error)
        if state.exists and not state.lock_enabled and code and code not in _DENIED | _BAD_CREDENTIALS:
            raise TargetError(
                f"target {config.name}: bucket {config.bucket} has no object lock and the service refuses "
                f"to enable it ({code}): object lock can only be enabled on a new bucket created with "
                "lock enabled; point `bucket:` at a new name and run setup again"
            ) from error
        raise _bucket_error(
            error, config, "set the object lock of", "s3:PutBucketObjectLockConfiguration"
        ) from error


def _normalized(rule: dict[str, Any]) -> dict[str, Any]:
    """The parts of a lifecycle rule we set, in a form that compares equal across services."""
    keys = (
        "ID",
        "Status",
        "Filter",
        "Transitions",
        "NoncurrentVersionExpiration",
        "AbortIncompleteMultipartUpload",
    )
    normalized = {key: rule[key] for key in keys if key in rule}
    if normalized.get("Filter") == {"Prefix": ""}:
        normalized["Filter"] = {}
    return normalized


def _describe_rules(rules: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for rule in rules:
        parts += [
            f"artifacts to {step['StorageClass']} after {step['Days']} days"
            for step in rule.get("Transitions", [])
        ]
        if expire := rule.get("NoncurrentVersionExpiration"):
            parts.append(f"noncurrent versions expire after {expire['NoncurrentDays']} days")
        if abort := rule.get("AbortIncompleteMultipartUpload"):
            parts.append(f"incomplete uploads aborted after {abort['DaysAfterInitiation']} days")
    return "; ".join(parts) or "none"


def _put(
    client: S3Client, config: S3Target, what: str, permission: str, method: Any, **arguments: Any
) -> None:
    try:
        method(Bucket=config.bucket, **arguments)
    except Exception as error:
        raise _bucket_error(error, config, f"set the {what} of", permission) from error


def _bucket_error(error: BaseException, config: S3Target, doing: str, permission: str) -> TargetError:
    return translate_error(
        error, target=config.name, doing=doing, bucket=config.bucket, permission=permission
    )


def _root(config: S3Target) -> str:
    stripped = config.prefix.strip("/")
    return stripped + "/" if stripped else ""
