"""`heimdall evaluate` end to end on a small simulated dataset, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.evaluate.job import EvaluationError, evaluate
from heimdall.evaluate.report import EvaluationReport
from heimdall.training.config import load_config
from heimdall.training.runner import run_training

METRICS = {"rmse_m", "median_error_m", "mean_error_m", "p68_error_m", "p90_error_m", "p95_error_m"}
UNCERTAINTY = {"coverage_1sigma", "coverage_2sigma", "coverage_95", "nll", "mean_ellipse_area_km2"}


@pytest.fixture(scope="module")
def model_dir(sim_services, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evalrun") / "models"
    cfg = load_config(None, {"epochs": 2, "batch_size": 16, "output_dir": out, "seed": 5})
    run_training(cfg, sim_services, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluated(model_dir, sim_services, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return out, evaluate(str(model_dir), sim_services, out, split="test")


def test_one_table_of_methods(evaluated) -> None:
    out, result = evaluated
    on_disk = json.loads((out / "evaluation.json").read_text())
    methods = on_disk["methods"]
    assert {"model", "weighted_centroid", "log_distance_nls", "knn_fingerprint", "bayes_oracle"} <= set(
        methods
    )
    for name, m in methods.items():
        assert set(m) >= METRICS, name
        assert set(m["bootstrap"]["rmse_m"]) >= {"ci95_low", "ci95_high"}
    for name in ("model", "bayes_oracle"):
        assert set(methods[name]) >= UNCERTAINTY, name
    assert methods["model"]["covariance_scale"]["chosen"] in methods["model"]["covariance_scale"]["grid"]
    for name in ("weighted_centroid", "log_distance_nls", "knn_fingerprint"):
        assert "chosen" in methods[name]["tuning"] and "grid" in methods[name]["tuning"]
    assert on_disk["n_sessions"] == result.n_sessions >= 1
    assert len(on_disk["outage"]) == 7 and "model_rmse_over_oracle" in on_disk["outage"]["1"]
    text = (out / "evaluation.md").read_text()
    assert "| model |" in text and "Receiver outage" in text
    n_maps = min(4, result.n_sessions)  # one map per session, the first four of the split
    maps = [f"session_map_{k}.png" for k in range(1, n_maps + 1)]
    assert on_disk["plots"] == ["error_cdf.png", "calibration.png", *maps]
    for plot in on_disk["plots"]:
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"


def test_report_is_evaluation_json(evaluated) -> None:
    out, report = evaluated
    assert isinstance(report, EvaluationReport)
    text = (out / "evaluation.json").read_text()
    on_disk = json.loads(text)
    assert report.as_json() == on_disk
    assert json.dumps(report.as_json(), indent=2, sort_keys=True) == text
    again = EvaluationReport.model_validate(on_disk)
    assert again.as_json() == on_disk and again == report
    model, centroid = report.methods["model"], report.methods["weighted_centroid"]
    assert model.covariance_scale is not None and centroid.nll is None and centroid.tuning is not None
    row = report.outage["1"]
    assert row.methods["model"].rmse_m == on_disk["outage"]["1"]["model"]["rmse_m"]
    assert row.model_rmse_over_oracle == on_disk["outage"]["1"]["model_rmse_over_oracle"]


def test_empty_split_is_refused(model_dir, sim_services, tmp_path) -> None:
    split = json.loads((model_dir / "split.json").read_text())
    other = tmp_path / "m"
    other.mkdir()
    for name in ("model.onnx", "network.json"):
        (other / name).write_bytes((model_dir / name).read_bytes())
    (other / "split.json").write_text(json.dumps({**split, "test": []}))
    with pytest.raises(EvaluationError, match="empty"):
        evaluate(str(other), sim_services, tmp_path / "out", split="test")
    with pytest.raises(EvaluationError, match="not recorded"):
        evaluate(str(other), sim_services, tmp_path / "out", split="holdout")


def test_receiver_set_mismatch_is_refused(model_dir, sim_services, tmp_path) -> None:
    other = tmp_path / "m"
    other.mkdir()
    for name in ("model.onnx", "split.json"):
        (other / name).write_bytes((model_dir / name).read_bytes())
    net = json.loads((model_dir / "network.json").read_text())
    net = {k: (v[:-1] if isinstance(v, list) and len(v) == 7 else v) for k, v in net.items()}
    (other / "network.json").write_text(json.dumps(net))
    with pytest.raises(EvaluationError, match="differ from the model"):
        evaluate(str(other), sim_services, tmp_path / "out")


def test_cli_evaluate(model_dir, sim_services, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(sim_services.settings.data_dir))
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--output-dir",
            str(tmp_path / "e"),
            "--no-outage",
            "--no-oracle",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "knn_fingerprint" in r.output and (tmp_path / "e" / "evaluation.md").is_file()


def test_cli_outage_sessions_reach_the_study(model_dir, sim_services, tmp_path, monkeypatch) -> None:
    """--outage-sessions N through the CLI: the study runs on N sessions, each row says how many it kept."""
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(sim_services.settings.data_dir))
    out = tmp_path / "e"
    args = ["evaluate", "--model", str(model_dir), "--output-dir", str(out), "--no-oracle"]
    r = CliRunner().invoke(app, [*args, "--outage-sessions", "2"])
    assert r.exit_code == 0, r.output
    on_disk = json.loads((out / "evaluation.json").read_text())
    assert on_disk["n_sessions"] > 2 and on_disk["outage_n_sessions"] == 2
    used = on_disk["outage_sessions_used"]
    assert set(used) == set(on_disk["outage"]) and all(0 <= n <= 2 for n in used.values())
    assert on_disk["outage_min_receivers_heard"] == 3
    assert "| sessions |" in (out / "evaluation.md").read_text()


def test_cli_scenario_file_must_be_the_sessions(model_dir, sim_services, tmp_path, monkeypatch) -> None:
    """--scenario FILE whose content hash the sessions did not record: one line, exit 2, no folder left."""
    from importlib import resources

    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(sim_services.settings.data_dir))
    v2 = resources.files("heimdall").joinpath("scenarios", "nw-italy-v2.yaml")
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--output-dir",
            str(tmp_path / "e"),
            "--no-outage",
            "--scenario",
            str(v2),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "is not the scenario these sessions were simulated from" in r.output
    assert not (tmp_path / "e").exists()
