"""The S3 target against a real S3 endpoint (moto's server, see tests/fixtures/s3.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from backupctl.errors import RetainedByLock, TargetError
from backupctl.policy.schema import S3Target
from backupctl.targets.base import ReadTiming, build_target
from backupctl.targets.s3 import RESTORE_POLL_ENV, S3BlobTarget
from backupctl.targets.s3_posture import apply_setup, check_posture, plan_setup
from tests.fixtures.s3 import MotoServer, empty_and_delete_bucket, free_port, new_bucket_name
from tests.integration.targets.contract import BlobTargetContract, MiB, payload, read, write

TargetConfig = Callable[..., S3Target]


def s3_target(config: S3Target) -> S3BlobTarget:
    target = build_target(config)
    assert isinstance(target, S3BlobTarget)
    return target


@pytest.fixture
def fresh_bucket(s3_client: Any) -> Iterator[str]:
    """A bucket name nobody has created yet (for setup tests); cleaned up best effort."""
    name = new_bucket_name("setup")
    yield name
    empty_and_delete_bucket(s3_client, name)


# --------------------------------------------------------------------------- the contract
class TestS3Contract(BlobTargetContract):
    """5 MiB parts: the 40 MiB object is an 8-part upload, 2 parts in flight at most."""

    times_reported = False  # moto lists every multipart upload as initiated on 2010-11-10

    @pytest.fixture
    def target(self, s3_target_config: TargetConfig) -> Iterator[S3BlobTarget]:
        target = s3_target(s3_target_config(prefix="backups/host1/", part_size_mb=5, max_concurrency=2))
        yield target
        target.close()


def test_keys_live_under_the_prefix(s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str) -> None:
    target = s3_target(s3_target_config(prefix="/backups/host1/"))
    write(target, "shop/s1/manifest.json", b"{}")
    s3_client.put_object(Bucket=s3_bucket, Key="elsewhere/x", Body=b"not ours")
    stored = [item["Key"] for item in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sorted(stored) == ["backups/host1/shop/s1/manifest.json", "elsewhere/x"]
    assert [info.key for info in target.list_keys("")] == ["shop/s1/manifest.json"]


# --------------------------------------------------------------------------- writes
class CallCounter:
    """Counts S3 operations of one client and the most UploadPart calls seen at once."""

    def __init__(self, client: Any, part_delay: float = 0.0) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._delay = part_delay
        client.meta.events.register("before-call.s3", self._before)
        client.meta.events.register("after-call.s3", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] = self.calls.get(model.name, 0) + 1
            if model.name == "UploadPart":
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if model.name == "UploadPart":
            time.sleep(self._delay)  # keep parts in flight long enough to overlap

    def _after(self, model: Any, **_: Any) -> None:
        if model.name == "UploadPart":
            with self._lock:
                self.in_flight -= 1


def test_multipart_upload_in_parallel_with_bounded_concurrency(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str
) -> None:
    target = s3_target(s3_target_config(part_size_mb=5, max_concurrency=2))
    counter = CallCounter(target.client, part_delay=0.2)
    data = payload(23 * MiB, seed=7)  # 4 full parts of 5 MiB and a last one of 3 MiB
    write(target, "shop/s1/db.pgdump.zst.age", data)
    assert counter.calls.get("CreateMultipartUpload") == 1
    assert counter.calls.get("UploadPart") == 5
    assert counter.calls.get("CompleteMultipartUpload") == 1
    assert "PutObject" not in counter.calls
    assert counter.max_in_flight == 2, "parts must overlap, and never more than max_concurrency"
    head = s3_client.head_object(Bucket=s3_bucket, Key="shop/s1/db.pgdump.zst.age")
    assert head["ETag"].strip('"').endswith("-5")
    assert read(target, "shop/s1/db.pgdump.zst.age") == data


@pytest.mark.parametrize("size", [MiB, MiB + 1, 5 * MiB - 1], ids=["in-memory", "spooled", "spooled-full"])
def test_small_object_is_one_put(s3_target_config: TargetConfig, size: int) -> None:
    """Up to 1 MiB the object stays in memory; beyond, up to one part, it is one PutObject of
    the spooled slot."""
    target = s3_target(s3_target_config(part_size_mb=5))
    counter = CallCounter(target.client)
    data = payload(size, seed=size)
    write(target, "shop/s1/manifest.json", data)
    assert counter.calls == {"PutObject": 1}
    assert read(target, "shop/s1/manifest.json") == data


def test_failed_multipart_upload_is_aborted(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str
) -> None:
    target = s3_target(s3_target_config(part_size_mb=5, max_concurrency=2))
    with pytest.raises(KeyboardInterrupt), target.writer("shop/s1/db.age") as out:
        out.write(payload(12 * MiB))
        assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
        raise KeyboardInterrupt  # Ctrl-C aborts as well
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert target.list_keys("") == []


def test_storage_class_for_artifacts_but_never_manifests(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str
) -> None:
    config = s3_target_config(storage_class="STANDARD_IA", sse="AES256", part_size_mb=5,
                              lifecycle={"transition_days": 30})  # fmt: skip
    target = s3_target(config)
    write(target, "shop/s1/db.pgdump.zst.age", b"small artifact")
    write(target, "shop/s1/files.tar.zst.age", payload(6 * MiB))  # multipart
    write(target, "shop/s1/manifest.json", b"{}")
    write(target, "shop/s1/manifest.json.sig", b"sig")
    classes = {info.key.rpartition("/")[2]: info.storage_class for info in target.list_keys("shop/s1/")}
    assert classes == {
        "db.pgdump.zst.age": "STANDARD_IA", "files.tar.zst.age": "STANDARD_IA",
        "manifest.json": "STANDARD", "manifest.json.sig": "STANDARD",
    }  # fmt: skip
    for name, role in [("db.pgdump.zst.age", "artifact"), ("files.tar.zst.age", "artifact"),
                       ("manifest.json", "manifest")]:  # fmt: skip
        key = f"shop/s1/{name}"
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
        tags = s3_client.get_object_tagging(Bucket=s3_bucket, Key=key)["TagSet"]
        assert tags == [{"Key": "backupctl-role", "Value": role}]


# --------------------------------------------------------------------------- cold reads
def test_glacier_read_restores_first_and_records_the_warmup(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv(RESTORE_POLL_ENV, "0.05")
    target = s3_target(s3_target_config(storage_class="GLACIER", restore_tier="Bulk", restore_days=2))
    data = payload(300_000, seed=3)
    write(target, "shop/s1/db.pgdump.zst.age", data)
    write(target, "shop/s1/manifest.json", b"{}")
    assert read(target, "shop/s1/manifest.json") == b"{}"  # manifests need no warm-up
    with pytest.raises(s3_client.exceptions.ClientError, match="InvalidObjectState"):
        s3_client.get_object(Bucket=s3_bucket, Key="shop/s1/db.pgdump.zst.age")
    timing = ReadTiming()
    caplog.set_level(logging.INFO, logger="backupctl.targets.s3")
    with target.reader("shop/s1/db.pgdump.zst.age", timing) as stream:
        assert stream.read() == data
    assert timing.warmup_seconds > 0
    assert (
        'ongoing-request="false"'
        in s3_client.head_object(Bucket=s3_bucket, Key="shop/s1/db.pgdump.zst.age")["Restore"]
    )
    assert any(
        "archive restore requested (tier Bulk, readable for 2 days)" in line for line in caplog.messages
    )
    assert any("archive restore done" in line for line in caplog.messages)
    again = ReadTiming(warmup_seconds=99)
    assert read(target, "shop/s1/db.pgdump.zst.age") == data  # restored copy: readable at once
    with target.reader("shop/s1/db.pgdump.zst.age", again):
        assert again.warmup_seconds == 0


def restore_still_running(target: S3BlobTarget, polls: int) -> None:
    """Make the first `polls` HeadObject answers say the restore is still running (moto restores
    at once; real Glacier takes hours)."""
    remaining = [polls]

    def rewrite(parsed: dict[str, Any], **_: Any) -> None:
        if "Restore" in parsed and remaining[0] != 0:
            remaining[0] -= 1
            parsed["Restore"] = 'ongoing-request="true"'

    target.client.meta.events.register("after-call.s3.HeadObject", rewrite)


def test_cold_read_polls_until_the_restore_is_done(
    s3_target_config: TargetConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(RESTORE_POLL_ENV, "0.2")
    target = s3_target(s3_target_config(storage_class="DEEP_ARCHIVE"))
    write(target, "shop/s1/db.age", b"deep")
    restore_still_running(target, polls=2)
    caplog.set_level(logging.INFO, logger="backupctl.targets.s3")
    timing = ReadTiming()
    with target.reader("shop/s1/db.age", timing) as stream:
        assert stream.read() == b"deep"
    waiting = [line for line in caplog.messages if "waiting for the DEEP_ARCHIVE archive restore" in line]
    assert len(waiting) == 2
    assert timing.warmup_seconds >= 0.4


def test_cold_read_gives_up_after_the_restore_timeout(
    s3_target_config: TargetConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RESTORE_POLL_ENV, "0.3")
    target = s3_target(s3_target_config(storage_class="GLACIER", restore_timeout="1s"))
    write(target, "shop/s1/db.age", b"cold")
    restore_still_running(target, polls=-1)
    started = time.monotonic()
    with (
        pytest.raises(TargetError, match=r"did not finish within 1s") as caught,
        target.reader("shop/s1/db.age"),
    ):
        pass
    assert 1 <= time.monotonic() - started < 3
    assert "run the same command again later" in str(caught.value)


# --------------------------------------------------------------------------- setup and posture
def test_setup_creates_a_locked_versioned_bucket_and_is_idempotent(
    s3_target_config: TargetConfig, s3_client: Any, fresh_bucket: str
) -> None:
    config = s3_target_config(
        bucket=fresh_bucket, prefix="backups", object_lock={"mode": "GOVERNANCE", "days": 3},
        lifecycle={"transition_days": 30, "transition_class": "DEEP_ARCHIVE", "noncurrent_expire_days": 90},
    )  # fmt: skip
    planned = plan_setup(config)
    assert [change.what for change in planned] == ["bucket", "versioning", "object lock", "lifecycle"]
    assert planned[0].desired == "created with object lock"
    assert apply_setup(config, dry_run=True) == planned
    with pytest.raises(s3_client.exceptions.ClientError):
        s3_client.head_bucket(Bucket=fresh_bucket)  # a dry run changes nothing

    assert apply_setup(config) == planned
    posture = s3_target(config).posture()
    assert posture.reachable and posture.versioned and posture.immutable and posture.cold
    assert posture.problems == []
    assert posture.details["object_lock"] == {"enabled": True, "mode": "GOVERNANCE", "days": 3}
    rules = {rule["ID"]: rule for rule in posture.details["lifecycle_rules"]}
    assert rules["backupctl-transition"]["Transitions"] == [{"Days": 30, "StorageClass": "DEEP_ARCHIVE"}]
    assert rules["backupctl-transition"]["Filter"] == {
        "And": {"Prefix": "backups/", "Tags": [{"Key": "backupctl-role", "Value": "artifact"}]}
    }
    assert rules["backupctl-cleanup"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert rules["backupctl-cleanup"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert plan_setup(config) == []
    assert s3_target(config).setup() == []


def test_setup_keeps_foreign_lifecycle_rules_and_updates_its_own(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str
) -> None:
    foreign = {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 9}}
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=s3_bucket, LifecycleConfiguration={"Rules": [foreign]}
    )
    apply_setup(s3_target_config(lifecycle={"noncurrent_expire_days": 30}))
    changed = apply_setup(s3_target_config(lifecycle={"noncurrent_expire_days": 60}))
    assert [(change.what, change.desired) for change in changed] == [
        ("lifecycle", "noncurrent versions expire after 60 days; incomplete uploads aborted after 7 days")
    ]
    rules = s3_client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert sorted(rule["ID"] for rule in rules) == ["backupctl-cleanup", "logs"]


def test_missing_versioning_fails_the_posture_check_with_the_fix(s3_target_config: TargetConfig) -> None:
    target = s3_target(s3_target_config())
    with pytest.raises(TargetError) as caught:
        target.check_posture()
    message = str(caught.value)
    assert "has versioning never enabled: run `backupctl target setup <policy> offsite`" in message
    assert not caught.value.transient
    apply_setup(target.config)
    check_posture(target)  # the module function works for any BlobTarget


def test_declared_object_lock_missing_on_the_bucket_is_a_problem(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    target = s3_target(s3_target_config(object_lock={"days": 7}))
    [problem] = target.posture().problems
    assert "has no object lock" in problem
    assert "can only be enabled on a new bucket created with lock enabled" in problem


def test_versioned_delete_removes_every_version(
    s3_target_config: TargetConfig, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    target = s3_target(s3_target_config())
    write(target, "shop/s1/db.age", b"one")
    write(target, "shop/s1/db.age", b"two")
    target.delete("shop/s1/db.age")
    listing = s3_client.list_object_versions(Bucket=s3_bucket)
    assert listing.get("Versions", []) == [] and listing.get("DeleteMarkers", []) == []


def test_delete_of_a_locked_version_raises_and_keeps_the_data(
    s3_target_config: TargetConfig, fresh_bucket: str
) -> None:
    config = s3_target_config(bucket=fresh_bucket, object_lock={"mode": "COMPLIANCE", "days": 1})
    apply_setup(config)
    target = s3_target(config)
    write(target, "shop/s1/db.age", b"protected")
    with pytest.raises(RetainedByLock) as caught:
        target.delete("shop/s1/db.age")
    message = str(caught.value)
    assert f"s3://{fresh_bucket}/shop/s1/db.age is retained by object lock (COMPLIANCE) until 20" in message
    assert read(target, "shop/s1/db.age") == b"protected"
    assert [info.key for info in target.list_keys("")] == ["shop/s1/db.age"]


# --------------------------------------------------------------------------- failures
def test_missing_bucket_is_a_fast_permanent_error(s3_target_config: TargetConfig) -> None:
    target = s3_target(s3_target_config(bucket="no-such-bucket-here"))
    started = time.monotonic()
    for attempt in (
        lambda: write(target, "a/b", b"x"),
        lambda: target.list_keys(""),
        lambda: read(target, "a/b"),
    ):
        with pytest.raises(TargetError, match="bucket 'no-such-bucket-here' does not exist") as caught:
            attempt()
        assert not caught.value.transient
    posture = target.posture()
    assert not posture.reachable
    assert posture.problems == [
        "bucket no-such-bucket-here does not exist: run `backupctl target setup <policy> offsite`"
    ]
    with pytest.raises(TargetError, match="not ready for backups") as caught:
        target.check_posture()
    assert not caught.value.transient
    assert time.monotonic() - started < 5, "permanent errors must not be retried"


def test_rejected_credentials_are_fast_permanent_errors(
    moto_server_factory: Callable[..., MotoServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks IAM after the first 3 requests: create the bucket and a user without rights.
    server = moto_server_factory(INITIAL_NO_AUTH_ACTION_COUNT="3")
    server.client().create_bucket(Bucket="auth-test")
    iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    cases = [
        ("AKIAUNKNOWNKEY000000", "whatever-secret", "the credentials were rejected (InvalidAccessKeyId)"),
        (key["AccessKeyId"], "wrong-secret-value", "the credentials were rejected (SignatureDoesNotMatch)"),
        (key["AccessKeyId"], key["SecretAccessKey"], "access denied; check that these are the intended"),
    ]
    for access_key, secret, expected in cases:
        monkeypatch.setenv("TEST_S3_KEY_ID", access_key)
        monkeypatch.setenv("TEST_S3_SECRET", secret)
        config = S3Target.model_validate({
            "name": "offsite", "type": "s3", "bucket": "auth-test", "endpoint_url": server.url,
            "access_key_id": "env:TEST_S3_KEY_ID", "secret_access_key": "env:TEST_S3_SECRET",
        })  # fmt: skip
        target = s3_target(config)
        started = time.monotonic()
        with pytest.raises(TargetError) as caught:
            write(target, "shop/s1/manifest.json", b"{}")
        assert time.monotonic() - started < 3
        assert expected in str(caught.value) and not caught.value.transient
        assert secret not in str(caught.value)
        assert "s3:PutObject" in str(caught.value) or "rejected" in str(caught.value)


def test_unreachable_endpoint_is_transient(s3_target_config: TargetConfig) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    target = s3_target(s3_target_config(endpoint_url=endpoint))
    # One attempt: botocore's backoff between retries would only slow the test down.
    single_try = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1)
    target.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=single_try)
    with pytest.raises(TargetError, match="endpoint unreachable") as caught:
        target.list_keys("")
    assert caught.value.transient
    posture = target.posture()
    assert not posture.reachable and posture.details["transient"]
    with pytest.raises(TargetError) as failed:
        target.check_posture()
    assert failed.value.transient


def test_frozen_server_times_out_transiently_and_recovers(
    moto_server_factory: Callable[..., MotoServer],
) -> None:
    server = moto_server_factory()
    server.client().create_bucket(Bucket="outage")
    config = S3Target.model_validate(
        {"name": "offsite", "type": "s3", "bucket": "outage", "endpoint_url": server.url}
    )
    target = s3_target(config)
    write(target, "shop/s1/manifest.json", b"{}")
    target.client = server.client(retries={"max_attempts": 1}, read_timeout=1, connect_timeout=1)
    server.pause()
    try:
        with pytest.raises(TargetError, match="endpoint unreachable") as caught:
            read(target, "shop/s1/manifest.json")
        assert caught.value.transient
    finally:
        server.resume()
    assert read(target, "shop/s1/manifest.json") == b"{}"


# --------------------------------------------------------------------------- memory
MEMORY_PROBE = """
import hashlib, json, os, sys, threading, time, tracemalloc
from backupctl.policy.schema import S3Target
from backupctl.targets.base import build_target

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

def spool_files():
    spool = os.environ["BACKUPCTL_SPOOL_DIR"]
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile (listdir's own descriptor, for one)
            pass
    return [link for link in links if link.startswith(spool)]

config = S3Target.model_validate(json.loads(sys.argv[1]))
target = build_target(config)
block = bytes(range(256)) * 4096  # 1 MiB, reused: the source itself allocates nothing
with target.writer("warm-up") as out:  # connections, threads, first-call imports
    out.write(block * (config.part_size_mb + 1))
target.delete("warm-up")
before, peak_rss, running, seen, listed = rss(), [0], True, set(), set()

def sample():
    while running:
        peak_rss[0] = max(peak_rss[0], rss())
        seen.update(spool_files())
        listed.update(os.listdir(os.environ["BACKUPCTL_SPOOL_DIR"]))
        time.sleep(0.005)

sampler = threading.Thread(target=sample)
sampler.start()
tracemalloc.start()
started = time.monotonic()
with target.writer("shop/s1/big.age") as out:
    for _ in range(int(sys.argv[2])):
        out.write(block)
seconds = time.monotonic() - started
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
running = False
sampler.join()
[info] = target.list_keys("shop/s1/")
digest = hashlib.sha256()
with target.reader("shop/s1/big.age") as stored:
    while chunk := stored.read(1 << 20):
        digest.update(chunk)
target.delete("shop/s1/big.age")
expected = hashlib.sha256(block * int(sys.argv[2])).hexdigest()
print(json.dumps({"size": info.size, "traced_peak": traced_peak, "rss_delta": peak_rss[0] - before,
                  "seconds": seconds, "content_ok": digest.hexdigest() == expected,
                  "spool_files": sorted(seen), "listed": sorted(listed), "left": spool_files()}))
"""


def test_streamed_upload_memory_stays_flat(s3_target_config: TargetConfig, tmp_path: Path) -> None:
    """200 MiB through 8 MiB parts, 3 in flight: the parts wait in a private unlinked spool
    file, so memory stays far below even one set of parts ((3 + 1) x 8 MiB = 32 MiB)."""
    config = s3_target_config(part_size_mb=8, max_concurrency=3)
    fields = {"name", "type", "bucket", "endpoint_url", "region", "part_size_mb", "max_concurrency"}
    config_fields = config.model_dump(mode="json", include=fields)
    spool = tmp_path / "spool"
    spool.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(config_fields), "200"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "BACKUPCTL_SPOOL_DIR": str(spool)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    print(
        f"\n200 MiB upload: traced peak {result['traced_peak'] / MiB:.1f} MiB, "
        f"RSS growth {result['rss_delta'] / MiB:.1f} MiB, {result['seconds']:.1f}s"
    )
    assert result["size"] == 200 * MiB and result["content_ok"]
    # The parts went through one file in the spool directory, already unlinked (never listed,
    # so never readable by name), and closed once the upload was done.
    assert len(result["spool_files"]) == 1 and result["spool_files"][0].endswith("(deleted)")
    assert result["listed"] == [] and result["left"] == []
    assert result["traced_peak"] <= 8 * MiB  # the first MiB kept for small objects, HTTP chunks
    assert result["rss_delta"] <= 16 * MiB  # plus allocator slack and HTTP buffers


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`tmpfs(options)`: a real tmpfs mounted under the test's temp dir (root is needed: skipped,
    saying so, when the mount is refused), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs at {point} (root is needed): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


@pytest.mark.parametrize(
    ("options", "why"),
    [("size=6m,mode=0700", "GiB free; spooling"), ("size=1g,ro", "cannot reserve them")],
    ids=["no-room", "read-only"],
)
def test_parts_fall_back_to_memory_when_the_spool_is_unusable(
    s3_target_config: TargetConfig,
    tmpfs: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    options: str,
    why: str,
) -> None:
    """A spool directory without room for the slots plus the reserve, or one that cannot be
    written: the parts are held in memory, and the object still round-trips."""
    spool = tmpfs(options)
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(spool))
    target = s3_target(s3_target_config(part_size_mb=5, max_concurrency=2))
    counter = CallCounter(target.client)
    data = payload(23 * MiB, seed=11)  # 4 full parts of 5 MiB and a last one of 3 MiB
    with caplog.at_level(logging.INFO, logger="backupctl.targets.s3"):
        write(target, "shop/s1/db.pgdump.zst.age", data)
    assert counter.calls.get("UploadPart") == 5
    assert read(target, "shop/s1/db.pgdump.zst.age") == data
    held = [record.getMessage() for record in caplog.records if "held in memory" in record.getMessage()]
    assert len(held) == 1 and str(spool) in held[0] and why in held[0], held
    assert list(spool.iterdir()) == []


def test_a_retried_part_resends_the_same_bytes(s3_target_config: TargetConfig) -> None:
    """The connection drops after part of a part's body was sent: botocore rewinds the body
    and sends the part again, whole, from the spool file."""
    target = s3_target(s3_target_config(part_size_mb=5, max_concurrency=2))
    dropped: list[int] = []

    def drop_first_attempt(request: Any, **_: Any) -> None:
        if len(dropped) < 2:  # the first attempts of two parts
            dropped.append(len(request.body.read(1 << 20)))  # a first MiB goes out, then the drop
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)

    target.client.meta.events.register("before-send.s3.UploadPart", drop_first_attempt)
    data = payload(12 * MiB, seed=5)
    write(target, "shop/s1/db.pgdump.zst.age", data)
    assert dropped == [MiB, MiB]
    assert read(target, "shop/s1/db.pgdump.zst.age") == data
