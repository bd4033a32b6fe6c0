"""Fail fast means fast: every client gives up on a server that accepts connections and never answers
within the documented bound, with a clear error naming the URL without its password.

The bound (heimdall.tracking.connection module docstring, docs/RELIABILITY.md), with
T = HEIMDALL_CONNECT_TIMEOUT_S: at most 2 attempts of at most max(2, ⌈T⌉) seconds each plus under 1 s of
backoff, i.e. 2·max(2, ⌈T⌉) + 1 s.
Each layer is also checked against its own, tighter budget.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heimdall.settings import Settings
from heimdall.storage.database import DatabaseError, open_database
from heimdall.storage.objectstore import ObjectStoreError, open_object_store

T = 1.0  # HEIMDALL_CONNECT_TIMEOUT_S for these tests
SLACK = 1.0
BOUND = 2 * max(2, math.ceil(T)) + 1  # the documented rule
SECRET = "secret"


class SilentServer:
    """A loopback listener that accepts every connection, holds it open and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # read nothing, answer nothing, close nothing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for c in self._held:
            c.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    srv = SilentServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


def _timed(fn, exc_type):  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    with pytest.raises(exc_type) as err:
        fn()
    return time.monotonic() - t0, str(err.value)


@pytest.mark.parametrize("op", ["get_bytes", "put_bytes", "exists"])
def test_s3_store_gives_up_on_a_silent_endpoint(op: str, silent: SilentServer, aws_env: None) -> None:
    endpoint = f"http://minio:{SECRET}@127.0.0.1:{silent.port}"
    store = open_object_store("s3://", endpoint, connect_timeout_s=T)
    call = {
        "get_bytes": lambda: store.get_bytes("heimdall-raw-iq", "a/b.npy"),
        "put_bytes": lambda: store.put_bytes("heimdall-raw-iq", "a/b.npy", b"x"),
        "exists": lambda: store.exists("heimdall-raw-iq", "a/b.npy"),
    }[op]
    elapsed, msg = _timed(call, ObjectStoreError)
    assert elapsed <= 2 * T + 0.1 + SLACK, elapsed  # 2 attempts × (connect|read) timeout T
    assert elapsed >= 2 * T - 0.2, f"{elapsed}: expected exactly one retry"
    assert silent.accepted == 2, silent.accepted
    assert elapsed <= BOUND + SLACK
    assert f"127.0.0.1:{silent.port}" in msg and "heimdall-raw-iq" in msg
    assert SECRET not in msg and "***" in msg


def test_s3_store_config_has_one_retry_and_equal_timeouts() -> None:
    store = open_object_store("s3://", "http://127.0.0.1:9", connect_timeout_s=2.5)
    cfg = store._client.meta.config  # type: ignore[attr-defined]
    assert cfg.connect_timeout == cfg.read_timeout == 2.5
    assert cfg.retries["total_max_attempts"] == 2
    # checksums only where S3 requires them, per client (no AWS_*_CHECKSUM_* process variables)
    assert cfg.request_checksum_calculation == cfg.response_checksum_validation == "when_required"
    assert store._client.meta.region_name == "us-east-1"  # type: ignore[attr-defined]
    other = open_object_store("s3://", "http://127.0.0.1:9", connect_timeout_s=2.5, region_name="eu-south-1")
    assert other._client.meta.region_name == "eu-south-1"  # type: ignore[attr-defined]


def test_postgres_gives_up_on_a_silent_listener(silent: SilentServer) -> None:
    url = f"postgresql://u:{SECRET}@127.0.0.1:{silent.port}/db"
    elapsed, msg = _timed(lambda: open_database(url, connect_timeout_s=T), DatabaseError)
    assert elapsed <= max(2, math.ceil(T)) + SLACK, elapsed  # one attempt, libpq whole seconds ≥ 2
    assert elapsed <= BOUND + SLACK
    assert silent.accepted >= 1
    assert f"127.0.0.1:{silent.port}" in msg and "u:***@" in msg and SECRET not in msg


def _http_settings(port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    from heimdall.tracking.connection import PROCESS_ENV_KEYS

    for var in (*PROCESS_ENV_KEYS, "HEIMDALL_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)  # restored by monkeypatch: the process keys stay put
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{port}")
    monkeypatch.setenv("HEIMDALL_CONNECT_TIMEOUT_S", str(T))
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(tmp_path / "hd"))
    return Settings()


def test_mlflow_connect_gives_up_on_a_silent_http_server(
    silent: SilentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heimdall.tracking.connection import TrackingError, connect

    settings = _http_settings(silent.port, tmp_path, monkeypatch)
    elapsed, msg = _timed(lambda: connect(settings), TrackingError)
    assert elapsed <= 2 * T + 0.5 + SLACK, elapsed  # preflight: 2 GETs /health, 0.5 s apart
    assert elapsed <= BOUND + SLACK
    assert silent.accepted == 2
    assert f"127.0.0.1:{silent.port}" in msg and "unreachable" in msg and SECRET not in msg


def test_mlflow_own_http_client_is_bounded_after_connect(
    silent: SilentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the preflight (a server that goes silent later), MLflow's own client obeys the bound too:
    connect() gives MLflow's environment-only HTTP options their process-wide fail-fast values."""
    import os

    import mlflow  # noqa: F401  (imported up front: the first import alone takes about a second)

    from heimdall.tracking.connection import TrackingError, connect, whole_seconds

    settings = _http_settings(silent.port, tmp_path, monkeypatch)
    monkeypatch.setattr("heimdall.tracking.connection.preflight", lambda target: None)
    elapsed, msg = _timed(lambda: connect(settings), TrackingError)  # MLflow's search_experiments times out
    # set once for the process (not per call, not restored): every thread sees the same values
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(whole_seconds(T))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert elapsed <= 2 * whole_seconds(T) + SLACK, elapsed  # 2 attempts, no backoff
    assert elapsed <= BOUND + SLACK
    assert silent.accepted == 2, silent.accepted
    assert f"127.0.0.1:{silent.port}" in msg and SECRET not in msg


def test_a_users_own_mlflow_timeout_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from heimdall.tracking.connection import configure_mlflow_process

    settings = _http_settings(9, tmp_path, monkeypatch)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")
    configure_mlflow_process(settings)
    configure_mlflow_process(settings.model_copy(update={"connect_timeout_s": 7.0}))
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"


def test_process_options_follow_settings_but_never_a_users_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key Heimdall set itself follows later Settings (a test's second endpoint works); one the
    user exported is never overwritten or removed."""
    import os

    from heimdall.tracking.connection import configure_mlflow_process

    settings = _http_settings(9, tmp_path, monkeypatch)
    first = settings.model_copy(
        update={"s3_endpoint_url": "http://first:9000", "mlflow_s3_endpoint_url": None}
    )
    configure_mlflow_process(first)
    configure_mlflow_process(first)  # idempotent
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://first:9000"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(max(2, math.ceil(T)))
    second = first.model_copy(update={"s3_endpoint_url": "http://second:9000", "connect_timeout_s": 5.0})
    configure_mlflow_process(second)
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://second:9000"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"
    configure_mlflow_process(second.model_copy(update={"s3_endpoint_url": None}))
    assert "MLFLOW_S3_ENDPOINT_URL" not in os.environ  # no stale endpoint of earlier Settings
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://users-own:9000")
    configure_mlflow_process(second)
    configure_mlflow_process(second.model_copy(update={"s3_endpoint_url": None}))
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://users-own:9000"


def test_mlflow_postgres_store_gets_the_connect_timeout(silent: SilentServer, tmp_path: Path) -> None:
    from heimdall.tracking.connection import TrackingError, TrackingTarget, preflight

    s = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=f"postgresql://u:{SECRET}@127.0.0.1:{silent.port}/mlflow",
        mlflow_artifact_root="",
        connect_timeout_s=T,
    )
    target = TrackingTarget.from_settings(s)
    assert target.uri.endswith(f"/mlflow?connect_timeout={max(2, math.ceil(T))}")
    elapsed, msg = _timed(lambda: preflight(target), TrackingError)
    assert elapsed <= max(2, math.ceil(T)) + SLACK, elapsed
    assert f"127.0.0.1:{silent.port}" in msg and SECRET not in msg


def test_mlflow_s3_artifact_root_gives_up_on_a_silent_endpoint(
    silent: SilentServer, tmp_path: Path, aws_env: None
) -> None:
    from heimdall.tracking.connection import TrackingError, TrackingTarget, preflight

    s = Settings(
        data_dir=tmp_path,
        s3_endpoint_url=f"http://minio:{SECRET}@127.0.0.1:{silent.port}",
        mlflow_s3_endpoint_url=None,
        mlflow_artifact_root="s3://mlflow/art",
        connect_timeout_s=T,
    )
    target = TrackingTarget.from_settings(s)
    elapsed, msg = _timed(lambda: preflight(target), TrackingError)
    assert elapsed <= 2 * T + 0.1 + SLACK, elapsed
    assert silent.accepted == 2
    assert f"127.0.0.1:{silent.port}" in msg and SECRET not in msg


def test_services_give_the_s3_store_the_region_of_the_settings(tmp_path: Path) -> None:
    from heimdall.services import open_services

    s = Settings(
        data_dir=tmp_path, object_store="s3://", s3_endpoint_url="http://127.0.0.1:9", aws_region="eu-south-1"
    )
    services = open_services(s)
    try:
        assert services.store._client.meta.region_name == "eu-south-1"  # type: ignore[attr-defined]
    finally:
        services.close()
