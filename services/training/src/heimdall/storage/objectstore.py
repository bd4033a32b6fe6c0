"""Object storage with one interface over a local folder (`file://`) and S3/MinIO (`s3://`).

Keys are validated before any I/O (no `..`, no absolute paths) because they are built from
database values; writes are atomic so a reader never sees half an object.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from heimdall.errors import DataError, ServiceUnavailableError, UserError
from heimdall.settings import redact_text, redact_url

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-=/]*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
DEFAULT_REGION = "us-east-1"


class ObjectStoreError(ServiceUnavailableError):
    """The object store failed or was asked for something invalid; the message names bucket and key."""


class ObjectNotFoundError(DataError, ObjectStoreError):
    """The object a database row points to does not exist."""


class ObjectStoreURLError(UserError, ObjectStoreError):
    """The object store is misconfigured: an unsupported store URL or an invalid bucket name (exit 2)."""


def validate_key(key: str) -> str:
    """Reject keys that could escape the bucket or do not round-trip on every backend."""
    if not key or key.startswith("/") or "\\" in key or not _KEY_RE.match(key):
        raise ObjectStoreError(f"invalid object key {key!r}: must be a relative path of [A-Za-z0-9._-=/]")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ObjectStoreError(f"invalid object key {key!r}: empty, '.' or '..' path segment")
    return key


def validate_bucket(bucket: str) -> str:
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ObjectStoreURLError(
            f"invalid bucket name {bucket!r}: 3 to 63 of [a-z0-9.-], starting and ending alphanumeric"
        )
    return bucket


class ObjectStore(Protocol):
    """What the pipeline needs from object storage."""

    url: str

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None: ...

    def get_bytes(self, bucket: str, key: str) -> bytes: ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def delete(self, bucket: str, key: str) -> None: ...

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]: ...


class FileObjectStore:
    """Buckets are folders under a root; writes go to a temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri()
        self._dirs: set[Path] = set()

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / validate_bucket(bucket) / validate_key(key)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        path = self._path(bucket, key)
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
        try:
            if path.parent not in self._dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(path.parent)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {bucket}/{key} under {self.url}: {exc.strerror}") from None

    def get_bytes(self, bucket: str, key: str) -> bytes:
        path = self._path(bucket, key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"object {bucket}/{key} not found under {self.url}") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {bucket}/{key} under {self.url}: {exc.strerror}") from None

    def exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).is_file()

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._path(bucket, key).unlink(missing_ok=True)
        except OSError as exc:  # a folder in its place, no permission, a read-only file system
            raise ObjectStoreError(
                f"cannot delete {bucket}/{key} under {self.url}: {exc.strerror or exc}"
            ) from None

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        base = self.root / validate_bucket(bucket)
        if not base.is_dir():
            return []
        keys = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(
            k for k in keys if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith(".tmp-")
        )


def s3_client_config(connect_timeout_s: float, attempts: int = 2, **kwargs: Any) -> Any:
    """The botocore Config of every Heimdall S3 client: the fail-fast bound, checksums only when required.

    Each attempt waits at most ``connect_timeout_s`` to connect and at most ``connect_timeout_s`` for
    each read, and there are at most ``attempts`` (default 2: one retry). botocore's ``retries``
    ``max_attempts`` counts *retries* in a client Config (``total_max_attempts = max_attempts + 1``,
    see botocore/args.py), so the total is set explicitly. Standard-mode backoff between attempts
    is at most 50 ms for non-throttling errors, so a silent or unreachable endpoint fails an
    operation within ``attempts × connect_timeout_s`` + 0.1 s.

    Request checksums are computed, and response checksums validated, only where the S3 API requires
    them (botocore ≥ 1.36 defaults to always, which MinIO and other S3-compatible stores may reject);
    set here per client rather than through ``AWS_*_CHECKSUM_*`` variables of the whole process.
    """
    from botocore.config import Config

    return Config(
        connect_timeout=connect_timeout_s,
        read_timeout=connect_timeout_s,
        retries={"total_max_attempts": max(1, attempts), "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        **kwargs,
    )


class S3ObjectStore:
    """S3 or MinIO through boto3, with explicit timeouts and bounded retries so outages fail fast.

    Fail-fast bound (see :func:`s3_client_config`): against a silent or unreachable endpoint every
    operation raises ObjectStoreError within ``max_attempts × connect_timeout_s`` (+ 0.1 s backoff);
    ``max_attempts`` counts the first try (default 2: at most one retry). The region comes from the
    caller (Settings.aws_region, ``AWS_DEFAULT_REGION``), never from the process environment.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        connect_timeout_s: float = 5.0,
        max_attempts: int = 2,
        region_name: str | None = None,
    ) -> None:
        import boto3

        self.endpoint_url = endpoint_url
        self.url = f"s3:// ({redact_url(endpoint_url)})" if endpoint_url else "s3://"
        config = s3_client_config(connect_timeout_s, max_attempts, s3={"addressing_style": "path"})
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=config,
            region_name=region_name or DEFAULT_REGION,
        )
        self._known_buckets: set[str] = set()

    def _fail(self, what: str, bucket: str, key: str, exc: Exception) -> ObjectStoreError:
        return ObjectStoreError(
            f"cannot {what} {bucket}/{key} at {self.url}: {type(exc).__name__}: {redact_text(str(exc))}"
        )

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it is missing (MinIO starts empty)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if bucket in self._known_buckets:
            return
        try:
            self._client.head_bucket(Bucket=validate_bucket(bucket))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail("reach bucket", bucket, "", exc) from None
            try:
                self._client.create_bucket(Bucket=bucket)
            except (ClientError, BotoCoreError) as exc2:
                raise self._fail("create bucket", bucket, "", exc2) from None
        except BotoCoreError as exc:
            raise self._fail("reach bucket", bucket, "", exc) from None
        self._known_buckets.add(bucket)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        validate_key(key)
        self.ensure_bucket(bucket)
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", bucket, key, exc) from None

    def get_bytes(self, bucket: str, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        validate_key(key)
        validate_bucket(bucket)
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise ObjectNotFoundError(f"object {bucket}/{key} not found at {self.url}") from None
            raise self._fail("read", bucket, key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("read", bucket, key, exc) from None

    def exists(self, bucket: str, key: str) -> bool:
        """HEAD the object (nothing is downloaded): a 404 is False, any other failure raises."""
        from botocore.exceptions import BotoCoreError, ClientError

        validate_key(key)
        validate_bucket(bucket)
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                return False
            raise self._fail("check", bucket, key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("check", bucket, key, exc) from None
        return True

    def delete(self, bucket: str, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        validate_key(key)
        try:
            self._client.delete_object(Bucket=validate_bucket(bucket), Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", bucket, key, exc) from None

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=validate_bucket(bucket), Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return []
            raise self._fail("list", bucket, prefix, exc) from None
        except BotoCoreError as exc:
            raise self._fail("list", bucket, prefix, exc) from None
        return sorted(keys)


def open_object_store(
    url: str,
    endpoint_url: str | None = None,
    connect_timeout_s: float = 5.0,
    region_name: str | None = None,
) -> ObjectStore:
    """`file:///dir` → a folder store; `s3://` → S3/MinIO at `endpoint_url` (AWS_ENDPOINT_URL) in
    `region_name` (AWS_DEFAULT_REGION, default us-east-1)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileObjectStore(Path(url2pathname(parts.path)))
    if parts.scheme == "s3":
        return S3ObjectStore(
            endpoint_url=endpoint_url, connect_timeout_s=connect_timeout_s, region_name=region_name
        )
    raise ObjectStoreURLError(f"unsupported object store {redact_url(url)!r}: use file:///dir or s3://")
