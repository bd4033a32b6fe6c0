"""Helpers of the tracking tests (fixtures live in conftest.py): CLI runs, environments, secret searches."""

from __future__ import annotations

import math
import shutil
import socket
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

N_SESSIONS = 40
SIM_SEED = 11
DB_SECRET = "pg-Sup3rS3cret-9f1c"
AWS_SECRET = "aws-Sup3rS3cret-7d2e"
TRACKING_ENV = (
    "HEIMDALL_DATABASE_URL",
    "HEIMDALL_OBJECT_STORE",
    "HEIMDALL_MLFLOW_ARTIFACT_ROOT",
    "HEIMDALL_MLFLOW_EXPERIMENT",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
)

cli = CliRunner()


def invoke(args: list[str]):  # type: ignore[no-untyped-def]
    from heimdall.cli import app

    return cli.invoke(app, args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def embedded_copy(template: Path, root: Path, mp: pytest.MonkeyPatch) -> Path:
    """A private copy of the template as the embedded default (cwd = root, HEIMDALL_DATA_DIR set)."""
    data_dir = root / "heimdall-data"
    shutil.copytree(template, data_dir)
    for var in TRACKING_ENV:
        mp.delenv(var, raising=False)
    mp.setenv("HEIMDALL_DATA_DIR", str(data_dir))
    mp.chdir(root)
    return data_dir


@dataclass
class PgS3Data:
    database_url: str  # with DB_SECRET as password (the server trusts loopback, so any password works)
    s3_endpoint: str


def use_pg_s3(data: PgS3Data, root: Path, mp: pytest.MonkeyPatch) -> Path:
    for var in TRACKING_ENV:
        mp.delenv(var, raising=False)
    mp.setenv("HEIMDALL_DATABASE_URL", data.database_url)
    mp.setenv("HEIMDALL_OBJECT_STORE", "s3://")
    mp.setenv("AWS_ENDPOINT_URL", data.s3_endpoint)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("HEIMDALL_DATA_DIR", str(root / "heimdall-data"))
    mp.chdir(root)
    return root / "heimdall-data"


@dataclass
class MlflowServer:
    url: str
    backend_url: str
    bucket: str
    log: Path


def mlflow_command() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


# --------------------------------------------------------------------------------------------------------
# Inspecting a run
# --------------------------------------------------------------------------------------------------------


def download(uri: str, tracking_uri: str, dst: Path) -> Path:
    """Download an MLflow URI (``models:/…`` too) from the store at ``tracking_uri``.

    ``mlflow.artifacts.download_artifacts`` resolves ``models:/`` through MLflow's process-wide registry
    URI whatever it is given, and Heimdall never sets that URI, so the URI is resolved through an
    explicit client first (heimdall.tracking.models.resolve_uri) and the storage location downloaded.
    """
    import mlflow
    from mlflow import MlflowClient

    from heimdall.tracking.models import resolve_uri

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=resolve_uri(client, uri).uri,
            dst_path=str(dst),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    )


def run_texts(tracking_uri: str, run_id: str, dst: Path) -> dict[str, bytes]:
    """Every param, tag and metric name of the run, its registered versions' tags, and every artifact file
    (the run's and its logged model's), as {label: bytes}, for secret searches."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    texts: dict[str, bytes] = {
        "params": repr(sorted(run.data.params.items())).encode(),
        "tags": repr(sorted(run.data.tags.items())).encode(),
        "metrics": repr(sorted(run.data.metrics)).encode(),
        "run_info": repr(run.info).encode(),
    }
    for mv in client.search_model_versions(f"run_id = '{run_id}'"):
        texts[f"version {mv.version}"] = repr((mv.source, sorted(mv.tags.items()))).encode()
    run_dir = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, dst_path=str(dst / "run"), tracking_uri=tracking_uri
        )
    )
    model_dir = download(f"models:/{_logged_model_id(client, run_id)}", tracking_uri, dst / "model")
    for base in (run_dir, model_dir):
        for f in base.rglob("*"):
            if f.is_file():
                texts[str(f.relative_to(dst))] = f.read_bytes()
    return texts


def _logged_model_id(client, run_id: str) -> str:  # type: ignore[no-untyped-def]
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    assert outputs, "the run has no logged model"
    return outputs[-1].model_id


def assert_no_secret(texts: dict[str, bytes], *secrets: str) -> None:
    for label, data in texts.items():
        for secret in secrets:
            assert secret.encode() not in data, f"secret found in {label}"


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine on a 6371008.8 m sphere, written out so no distance is checked against itself."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, a)))


def truth_of(data_dir: Path, session_id: str) -> tuple[float, float]:
    """The transmitter (lat, lon) of a stored session, read with sqlite3 from the embedded database."""
    with closing(sqlite3.connect(data_dir / "heimdall.db")) as conn:
        rows = conn.execute(
            "SELECT k.latitude, k.longitude FROM recording_sessions r JOIN known_sources k "
            "ON k.id = r.known_source_id WHERE replace(r.id, '-', '') = ?",
            (session_id.replace("-", ""),),
        ).fetchall()
    assert len(rows) == 1, (session_id, rows)
    return float(rows[0][0]), float(rows[0][1])
