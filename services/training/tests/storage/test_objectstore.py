"""Object store behaviour, identical on a local folder and on S3 over HTTP."""

from __future__ import annotations

import time
import uuid

import pytest

from heimdall.errors import UserError
from heimdall.storage.objectstore import (
    FileObjectStore,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreURLError,
    S3ObjectStore,
    open_object_store,
    validate_key,
)


def _bucket() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def test_round_trip_list_delete(store) -> None:
    bucket = _bucket()
    store.put_bytes(bucket, "sessions/a/websdr_1.npy", b"one")
    store.put_bytes(bucket, "sessions/a/websdr_2.npy", b"two")
    store.put_bytes(bucket, "other/x", b"x")
    assert store.get_bytes(bucket, "sessions/a/websdr_1.npy") == b"one"
    assert store.list_keys(bucket, "sessions/") == ["sessions/a/websdr_1.npy", "sessions/a/websdr_2.npy"]
    assert store.exists(bucket, "other/x")
    store.delete(bucket, "other/x")
    assert not store.exists(bucket, "other/x")
    store.put_bytes(bucket, "sessions/a/websdr_1.npy", b"replaced")
    assert store.get_bytes(bucket, "sessions/a/websdr_1.npy") == b"replaced"


def test_missing_object_is_reported(store) -> None:
    bucket = _bucket()
    store.put_bytes(bucket, "k", b"v")
    with pytest.raises(ObjectNotFoundError, match=f"{bucket}/nope"):
        store.get_bytes(bucket, "nope")
    assert store.list_keys(_bucket()) == []


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "/abs/key", "a/../../b", "a//b", "a/./b", "", "a\\b", "sessions/x y/1.npy"]
)
def test_invalid_keys_are_rejected_before_io(store, key: str) -> None:
    with pytest.raises(ObjectStoreError, match="invalid object key"):
        store.put_bytes("heimdall-raw-iq", key, b"x")
    with pytest.raises(ObjectStoreError, match="invalid object key"):
        store.get_bytes("heimdall-raw-iq", key)


def test_invalid_bucket_is_rejected(tmp_path) -> None:
    with pytest.raises(ObjectStoreError, match="invalid bucket"):
        FileObjectStore(tmp_path).put_bytes("../up", "k", b"x")


def test_valid_key_passes() -> None:
    assert validate_key("sessions/5b0e/websdr_3.npy") == "sessions/5b0e/websdr_3.npy"


def test_file_store_write_is_atomic(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileObjectStore(tmp_path)
    store.put_bytes("bkt", "k/v.npy", b"old")

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("heimdall.storage.objectstore.os.replace", boom)
    with pytest.raises(ObjectStoreError, match="No space left"):
        store.put_bytes("bkt", "k/v.npy", b"new")
    assert store.get_bytes("bkt", "k/v.npy") == b"old"
    assert [p.name for p in (tmp_path / "bkt" / "k").iterdir()] == ["v.npy"]


def test_open_object_store_schemes(tmp_path) -> None:
    assert isinstance(open_object_store(tmp_path.as_uri()), FileObjectStore)
    assert isinstance(open_object_store("s3://", "http://127.0.0.1:9"), S3ObjectStore)
    with pytest.raises(ObjectStoreError, match="unsupported object store"):
        open_object_store("ftp://user:pw@host/x")


def test_unreachable_s3_fails_fast_without_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    store = S3ObjectStore(endpoint_url="http://minio:pw-in-url@127.0.0.1:1", connect_timeout_s=2)
    start = time.monotonic()
    with pytest.raises(ObjectStoreError) as err:
        store.put_bytes("heimdall-raw-iq", "k", b"x")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "127.0.0.1:1" in msg and "very-secret-key" not in msg and "pw-in-url" not in msg


def test_silent_s3_endpoint_times_out(silent_tcp_server: int) -> None:
    store = S3ObjectStore(endpoint_url=f"http://127.0.0.1:{silent_tcp_server}", connect_timeout_s=1)
    start = time.monotonic()
    with pytest.raises(ObjectStoreError):
        store.get_bytes("heimdall-raw-iq", "k")
    assert time.monotonic() - start < 10


def test_configuration_mistakes_are_user_errors(tmp_path) -> None:
    """A bad bucket name or store URL is the user's to fix (exit 2 as a UserError), not an outage."""
    with pytest.raises(ObjectStoreURLError, match="invalid bucket name 'Bad_Bucket'") as err:
        FileObjectStore(tmp_path).put_bytes("Bad_Bucket", "k", b"x")
    assert isinstance(err.value, UserError) and isinstance(err.value, ObjectStoreError)
    with pytest.raises(ObjectStoreURLError, match="unsupported object store") as err:
        open_object_store("ftp://user:pw@host/x")
    assert isinstance(err.value, UserError) and "pw" not in str(err.value)


def test_file_store_delete_failure_is_an_object_store_error(tmp_path) -> None:
    store = FileObjectStore(tmp_path)
    (tmp_path / "bkt" / "k" / "v.npy").mkdir(parents=True)  # a folder where the object should be
    with pytest.raises(ObjectStoreError, match=r"cannot delete bkt/k/v\.npy under"):
        store.delete("bkt", "k/v.npy")
    store.delete("bkt", "k/absent.npy")  # a missing object is still no error


def test_cli_unsupported_store_url_exits_2(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from heimdall.cli import app

    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HEIMDALL_OBJECT_STORE", "ftp://user:pw@host/x")
    r = CliRunner().invoke(app, ["simulate", "--sessions", "1", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "ObjectStoreURLError: unsupported object store" in r.output and ":pw@" not in r.output
    assert "Traceback" not in r.output
