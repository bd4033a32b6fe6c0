"""Tracking on real services: (a) a real `mlflow server` (PostgreSQL backend store, S3 artifacts) over
HTTP, (b) MLflow's SQLAlchemy store in-process on PostgreSQL with an S3 artifact root. Both train on the
production layout (sessions in PostgreSQL, IQ in S3) with secrets in the environment, then serve the
champion from the registry and search everything the run left behind for those secrets."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from tracking_support import (
    AWS_SECRET,
    DB_SECRET,
    assert_no_secret,
    download,
    invoke,
    run_texts,
    use_pg_s3,
    with_password,
)

from heimdall.inference.localizer import OnnxLocalizer
from heimdall.tracking.registry import CHAMPION, CHAMPION_URI, MODEL_NAME

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def _train(out: Path) -> str:
    r = invoke(
        [
            "train",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--seed",
            "5",
            "--output-dir",
            str(out),
            "--no-progress",
        ]
    )
    assert r.exit_code == 0, r.output
    return r.output


def _check_champion_serves_the_export(tracking_uri: str, out: Path, tmp_path: Path) -> str:
    """Load models:/heimdall-localizer@champion and compare it with the exported file on the test split."""
    from mlflow import MlflowClient

    from heimdall.jobs.predict import session_inputs
    from heimdall.services import open_services

    report = json.loads((out / "report.json").read_text())
    run_id = report["model_id"]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert mv.run_id == run_id
    local = download(CHAMPION_URI, tracking_uri, tmp_path / "champion")
    served, exported = OnnxLocalizer(local / "model.onnx"), OnnxLocalizer(out / "model.onnx")
    assert served.model_id == run_id
    services = open_services()
    try:
        test_ids = json.loads((out / "split.json").read_text())["test"]
        assert len(test_ids) >= 2
        for sid in test_ids:
            x = session_inputs(services, sid, exported)
            for a, b in zip(
                served.predict(x.inputs, x.receiver_mask),
                exported.predict(x.inputs, x.receiver_mask),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b)
        # the object store holds the same model under the MLflow run id
        key = f"{run_id}/model.onnx"
        assert (
            services.store.get_bytes(services.settings.models_bucket, key)
            == (out / "model.onnx").read_bytes()
        )
    finally:
        services.close()
    return run_id


def _captured(
    output: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> dict[str, bytes]:
    fd = capfd.readouterr()
    assert caplog.records, "no log records were captured: the secret search would be vacuous"
    assert (
        DB_SECRET in os.environ["HEIMDALL_DATABASE_URL"] and os.environ["AWS_SECRET_ACCESS_KEY"] == AWS_SECRET
    )
    return {
        "cli output": output.encode(),
        "log records": "\n".join(r.getMessage() for r in caplog.records).encode(),
        "captured stdout": fd.out.encode(),
        "captured stderr": fd.err.encode(),
    }


def test_mlflow_server_with_postgres_backend_and_s3_artifacts(
    mlflow_server, pg_s3_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capfd
) -> None:
    caplog.set_level(logging.INFO)
    use_pg_s3(pg_s3_data, tmp_path, monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    out = tmp_path / "models"
    output = _train(out)
    assert f"at {mlflow_server.url}" in output and "champion moved to version 1" in output
    run_id = _check_champion_serves_the_export(mlflow_server.url, out, tmp_path)
    # artifacts went through the server into its S3 bucket
    import boto3

    s3 = boto3.client("s3", endpoint_url=pg_s3_data.s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_server.bucket).get("Contents", [])]
    assert any(k.endswith(f"{run_id}/artifacts/report.json") for k in keys)
    assert any(k.endswith("artifacts/model.onnx") and "/models/" in k for k in keys)
    # predict through the registry, from the production layout
    sid = json.loads((out / "split.json").read_text())["test"][0]
    g = invoke(["predict", "--session", sid, "--format", "geojson"])
    assert g.exit_code == 0, g.output
    geo = json.loads(g.stdout)
    assert geo["features"][0]["properties"]["model"]["model_id"] == run_id
    texts = run_texts(mlflow_server.url, run_id, tmp_path / "download")
    texts.update(_captured(output + g.output, caplog, capfd))
    assert any("report.json" in k for k in texts) and any(k.endswith("MLmodel") for k in texts)
    assert_no_secret(texts, DB_SECRET, AWS_SECRET)


def test_in_process_postgres_tracking_with_s3_artifact_root(
    pg_s3_data, make_postgres_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capfd
) -> None:
    caplog.set_level(logging.INFO)
    use_pg_s3(pg_s3_data, tmp_path, monkeypatch)
    tracking = with_password(make_postgres_database(), DB_SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("HEIMDALL_MLFLOW_ARTIFACT_ROOT", "s3://heimdall-mlflow/artifacts")
    out = tmp_path / "models"
    output = _train(out)
    assert DB_SECRET not in output and "champion moved to version 1" in output
    mlflow_uri = tracking.replace("postgresql://", "postgresql+psycopg://", 1)
    run_id = _check_champion_serves_the_export(mlflow_uri, out, tmp_path)
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=mlflow_uri).get_run(run_id)
    assert run.info.artifact_uri.startswith("s3://heimdall-mlflow/artifacts/")
    import boto3

    s3 = boto3.client("s3", endpoint_url=pg_s3_data.s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="heimdall-mlflow").get("Contents", [])]
    assert any(k.endswith("checkpoints/best.ckpt") for k in keys)
    assert any(k.endswith("model.onnx") for k in keys)
    texts = run_texts(mlflow_uri, run_id, tmp_path / "download")
    texts.update(_captured(output, caplog, capfd))
    assert_no_secret(texts, DB_SECRET, AWS_SECRET)
