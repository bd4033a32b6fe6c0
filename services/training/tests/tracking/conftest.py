"""Fixtures of the tracking tests: small simulated datasets (embedded and PostgreSQL + S3) and a real
`mlflow server` process (PostgreSQL backend store, S3 artifacts) in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tracking_support import (
    AWS_SECRET,
    DB_SECRET,
    N_SESSIONS,
    SIM_SEED,
    MlflowServer,
    PgS3Data,
    embedded_copy,
    free_port,
    mlflow_command,
    with_password,
)

from heimdall.services import open_services
from heimdall.settings import Settings


@pytest.fixture(scope="session")
def sim_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 simulated sessions (0.1 s) on the embedded default, copied by every test that trains on it."""
    from simdata import simulate_into

    data_dir = tmp_path_factory.mktemp("template") / "heimdall-data"
    services = open_services(Settings(data_dir=data_dir))
    simulate_into(services, N_SESSIONS, seed=SIM_SEED)
    services.close()
    return data_dir


@pytest.fixture
def embedded(sim_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return embedded_copy(sim_template, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def pg_s3_data(make_postgres_database, s3_endpoint: str) -> PgS3Data:
    """The production layout: sessions in PostgreSQL, IQ in S3 (moto), credentials in the environment."""
    from simdata import simulate_into

    url = with_password(make_postgres_database(), DB_SECRET)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        settings = Settings(
            database_url=url, object_store="s3://", s3_endpoint_url=s3_endpoint, data_dir=Path("unused")
        )
        services = open_services(settings)
        simulate_into(services, N_SESSIONS, seed=SIM_SEED)
        services.close()
    return PgS3Data(url, s3_endpoint)


@pytest.fixture(scope="session")
def mlflow_server(make_postgres_database, s3_endpoint: str, tmp_path_factory) -> Iterator[MlflowServer]:
    """A real `mlflow server`: PostgreSQL backend store, S3 (moto) artifacts, on a free loopback port."""
    import boto3

    backend = make_postgres_database().replace("postgresql://", "postgresql+psycopg://", 1)
    bucket = "mlflow-server-artifacts"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no huey workers on a 2-core machine
    }
    cmd = [
        *mlflow_command(),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        f"s3://{bucket}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # children (uvicorn, job runner) share the group
            os.killpg(proc.pid, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            stop()
            pytest.fail(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop()
            pytest.fail(f"mlflow server not healthy within 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield MlflowServer(url, backend, bucket, log)
    finally:
        stop()
