"""Object storage with one interface over a local folder (`file://`) and S3/MinIO (`s3://`).

Keys are validated before any I/O (no `..`, no absolute paths) because they are built from
database values; writes are atomic so a reader never sees half an object.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from heimdall.settings import redact_text, redact_url

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-=/]*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class ObjectStoreError(RuntimeError):
    """The object store failed or was asked for something invalid; the message names bucket and key."""


class ObjectNotFoundError(ObjectStoreError):
    """The object a database row points to does not exist."""


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
        raise ObjectStoreError(f"invalid bucket name {bucket!r}")
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
        self._path(bucket, key).unlink(missing_ok=True)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        base = self.root / validate_bucket(bucket)
        if not base.is_dir():
            return []
        keys = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(
            k for k in keys if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith(".tmp-")
        )


class S3ObjectStore:
    """S3 or MinIO through boto3, with explicit timeouts and bounded retries so outages fail fast."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        connect_timeout_s: float = 5.0,
        max_attempts: int = 2,
        region_name: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
        os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED")
        self.endpoint_url = endpoint_url
        self.url = f"s3:// ({redact_url(endpoint_url)})" if endpoint_url else "s3://"
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=2.0 * connect_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=config,
            region_name=region_name or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
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
        try:
            self.get_bytes(bucket, key)
        except ObjectNotFoundError:
            return False
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
    url: str, endpoint_url: str | None = None, connect_timeout_s: float = 5.0
) -> ObjectStore:
    """`file:///dir` → a folder store; `s3://` → S3/MinIO at `endpoint_url` (AWS_ENDPOINT_URL)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileObjectStore(Path(url2pathname(parts.path)))
    if parts.scheme == "s3":
        return S3ObjectStore(endpoint_url=endpoint_url, connect_timeout_s=connect_timeout_s)
    raise ObjectStoreError(f"unsupported object store {redact_url(url)!r}: use file:///dir or s3://")
