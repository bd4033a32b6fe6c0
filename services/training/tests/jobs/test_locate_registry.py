"""``heimdall locate --model models:/heimdall-localizer@champion``: the model fetched from an MLflow
registry (a real SQLite-backed one, filled here with plain MLflow calls) gives the position the same
model gives from its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_support import great_circle_m
from typer.testing import CliRunner

from heimdall.cli import app

runner = CliRunner()


def test_locate_from_the_champion_alias(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    model_dir = cli_env.root / "model"
    session_id = json.loads((model_dir / "split.json").read_text())["test"][0]
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("locate", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(model_dir / "model.onnx"), artifact_path="model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("heimdall-localizer")
    version = client.create_model_version(
        "heimdall-localizer", f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("heimdall-localizer", "champion", version.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    folder = tmp_path / "rec"
    exported = runner.invoke(app, ["export", "sigmf", session_id, str(folder)])
    assert exported.exit_code == 0, exported.output
    by_alias = runner.invoke(app, ["locate", str(folder), "--model", "models:/heimdall-localizer@champion"])
    by_folder = runner.invoke(app, ["locate", str(folder), "--model", str(model_dir)])
    assert by_alias.exit_code == 0 and by_folder.exit_code == 0, by_alias.output + by_folder.output
    (a,), (b,) = (json.loads(r.stdout)["estimates"] for r in (by_alias, by_folder))
    assert (
        great_circle_m(
            a["position"]["latitude"],
            a["position"]["longitude"],
            b["position"]["latitude"],
            b["position"]["longitude"],
        )
        < 1e-3
    )
    assert json.loads(by_alias.stdout)["model"]["ref"] == "models:/heimdall-localizer@champion"
