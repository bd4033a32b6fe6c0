"""The embedded store moved: train (tracked), evaluate into the run, move ``heimdall-data/``, then the
registry, ``models:/`` downloads, predictions and a second evaluation still work, and nothing is
written back to the old place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tracking_support import embedded_copy, invoke

from heimdall.inference.localizer import OnnxLocalizer
from heimdall.tracking.registry import CHAMPION_URI


def _client(data_dir: Path):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    uri = f"sqlite:///{(data_dir / 'mlflow.db').as_posix()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _evaluate(out: Path, model: str = CHAMPION_URI):  # type: ignore[no-untyped-def]
    return invoke(["evaluate", "--model", model, "--output-dir", str(out), "--no-outage", "--no-oracle"])


def test_evaluate_attaches_and_the_data_folder_can_move(
    sim_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = embedded_copy(sim_template, tmp_path, monkeypatch)
    models = tmp_path / "models"
    r = invoke(["train", "--epochs", "2", "--batch-size", "64", "--seed", "3", "--output-dir", str(models)])
    assert r.exit_code == 0, r.output
    run_id = json.loads((models / "report.json").read_text())["model_id"]
    sid = json.loads((models / "split.json").read_text())["test"][0]

    # evaluate a registered model: its files and figures land in the training run
    e = _evaluate(tmp_path / "eval1")
    assert e.exit_code == 0, e.output
    on_disk = json.loads((tmp_path / "eval1" / "evaluation.json").read_text())
    client = _client(data_dir)
    metrics = client.get_run(run_id).data.metrics
    for method, m in on_disk["methods"].items():
        assert metrics[f"eval_test_{method}_rmse_m"] == pytest.approx(m["rmse_m"], rel=1e-12), method
        assert metrics[f"eval_test_{method}_median_error_m"] == pytest.approx(m["median_error_m"], rel=1e-12)
    assert (
        metrics["eval_test_n_sessions"]
        == on_disk["n_sessions"]
        == len(json.loads((models / "split.json").read_text())["test"])
    )
    names = {a.path for a in client.list_artifacts(run_id, "evaluation/test")}
    expected = {"evaluation.json", "evaluation.md", *on_disk["plots"]}
    assert {f"evaluation/test/{n}" for n in expected} <= names
    got = Path(client.download_artifacts(run_id, "evaluation/test/evaluation.json", str(tmp_path / "dl")))
    assert got.read_bytes() == (tmp_path / "eval1" / "evaluation.json").read_bytes()

    before = invoke(["predict", "--model", CHAMPION_URI, "--session", sid])
    assert before.exit_code == 0, before.output

    # move the whole data folder; the database still records the old absolute artifact paths
    moved = tmp_path / "elsewhere" / "renamed-data"
    moved.parent.mkdir()
    shutil.move(str(data_dir), str(moved))
    assert not data_dir.exists()
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(moved))

    listed = invoke(["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    versions = json.loads(listed.stdout)
    versions = versions["versions"] if isinstance(versions, dict) else versions
    assert [v["run_id"] for v in versions] == [run_id]

    after = invoke(["predict", "--model", CHAMPION_URI, "--session", sid])
    assert after.exit_code == 0, after.output
    a, b = json.loads(before.stdout), json.loads(after.stdout)
    assert a["model"]["model_id"] == b["model"]["model_id"] == run_id
    assert b["position"] == a["position"]
    # the served model is the file training exported (not merely a model that loads)
    served = OnnxLocalizer(models / "model.onnx")
    assert served.model_id == run_id

    # evaluating again writes into the moved folder, never re-creating the old one
    e2 = _evaluate(tmp_path / "eval2")
    assert e2.exit_code == 0, e2.output
    assert not data_dir.exists()
    client = _client(moved)
    assert client.get_run(run_id).data.metrics["eval_test_model_rmse_m"] == pytest.approx(
        on_disk["methods"]["model"]["rmse_m"], rel=1e-12
    )
    stored = list((moved / "mlartifacts").rglob("evaluation/test/evaluation.json"))
    assert (
        len(stored) == 1 and stored[0].read_bytes() == (tmp_path / "eval2" / "evaluation.json").read_bytes()
    )

    # a new tracked run in the moved store also writes its artifacts there
    r2 = invoke(
        ["train", "--epochs", "1", "--batch-size", "64", "--seed", "4", "--output-dir", str(tmp_path / "m2")]
    )
    assert r2.exit_code == 0, r2.output
    assert not data_dir.exists()
    run2 = json.loads((tmp_path / "m2" / "report.json").read_text())["model_id"]
    assert any((moved / "mlartifacts").rglob(f"{run2}/artifacts/split.json"))


def test_untracked_model_folder_is_evaluated_without_mlflow(
    sim_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = embedded_copy(sim_template, tmp_path, monkeypatch)
    models = tmp_path / "models"
    r = invoke(["train", "--epochs", "1", "--batch-size", "64", "--output-dir", str(models), "--no-tracking"])
    assert r.exit_code == 0, r.output
    from heimdall.jobs.evaluate import EvaluateRequest, evaluate
    from heimdall.settings import Settings

    out = evaluate(
        EvaluateRequest(model=str(models), output_dir=tmp_path / "e", outage=False, oracle=False),
        Settings(data_dir=data_dir),
    )
    assert not out.mlflow.attached and out.mlflow.run_id is None
    assert not (data_dir / "mlflow.db").exists()  # no empty tracking store was created for nothing
