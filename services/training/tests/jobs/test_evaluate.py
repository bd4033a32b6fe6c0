"""heimdall.jobs.evaluate: a local model folder resolved and evaluated; the CLI prints the same figures."""

from __future__ import annotations

import json

from jobs_support import model_errors_one_by_one, rmse_and_median
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.cli.summary import km


def test_outcome_matches_evaluation_json(pipeline) -> None:
    out = pipeline.evaluated
    on_disk = json.loads((out.output_dir / "evaluation.json").read_text())
    assert out.model_id == pipeline.trained.model_id == on_disk["model_id"]
    assert out.report == out.output_dir / "evaluation.md" and out.report.is_file()
    assert set(out.methods) == set(on_disk["methods"]) >= {"model", "weighted_centroid", "knn_fingerprint"}
    for name, m in out.methods.items():
        assert m.rmse_m == on_disk["methods"][name]["rmse_m"]
    assert "outage" not in on_disk and "bayes_oracle" not in on_disk["methods"]
    assert out.evaluation.as_json() == on_disk and out.evaluation.outage is None


def test_model_figures_match_a_recomputation_session_by_session(pipeline) -> None:
    """The model's row against model.onnx run on each test session alone, truth from the database."""
    out = pipeline.evaluated
    errors = model_errors_one_by_one(pipeline.settings, pipeline.root / "model")
    on_disk = json.loads((out.output_dir / "evaluation.json").read_text())
    assert on_disk["n_sessions"] == len(errors) == pipeline.trained.report.n_test >= 2
    assert (on_disk["split"], on_disk["n_train"], on_disk["n_val"]) == (
        "test",
        pipeline.trained.report.n_train,
        pipeline.trained.report.n_val,
    )
    rmse, median = rmse_and_median(errors)
    model = out.methods["model"]
    # the same ONNX model on the same inputs, batched there and one by one here: within a centimetre
    assert abs(model.rmse_m - rmse) < 0.01, (model.rmse_m, rmse)
    assert abs(model.median_error_m - median) < 0.01, (model.median_error_m, median)
    assert on_disk["methods"]["model"]["p95_error_m"] <= max(errors.values()) + 0.01


def test_cli_prints_the_outcome(cli_env, tmp_path) -> None:
    model = str(cli_env.root / "model")
    r = CliRunner().invoke(
        app, ["evaluate", "--model", model, "--output-dir", str(tmp_path / "e"), "--no-outage", "--no-oracle"]
    )
    assert r.exit_code == 0, r.output
    expected = [
        f"{name:>20}: RMSE {km(m.rmse_m):>10}  median {km(m.median_error_m):>10}"
        for name, m in cli_env.evaluated.methods.items()
    ]
    printed = [line for line in r.output.splitlines() if ": RMSE " in line]
    assert printed == expected
    assert f"evaluation: {tmp_path / 'e' / 'evaluation.md'}" in r.output
    assert "mlflow: " in r.output  # attached to the training run, or the reason it was not
    args = ["evaluate", "--model", model, "--output-dir", str(tmp_path / "f"), "--no-outage", "--no-oracle"]
    off = CliRunner().invoke(app, [*args, "--no-tracking"])
    assert off.exit_code == 0 and "mlflow: not attached (tracking off)" in off.output, off.output
    mine = cli_env.evaluated.methods["model"]
    wc = cli_env.evaluated.methods["weighted_centroid"]
    assert f"model RMSE {km(mine.rmse_m)} vs weighted centroid {km(wc.rmse_m)}: " in r.output
    assert f"next: heimdall predict --model {cli_env.root / 'model' / 'model.onnx'} --session " in r.output
