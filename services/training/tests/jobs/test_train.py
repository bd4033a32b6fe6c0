"""heimdall.jobs.train: the typed outcome is report.json, and the CLI prints it."""

from __future__ import annotations

import json

import pytest

from heimdall.cli.summary import km
from heimdall.cli.train_commands import _print
from heimdall.errors import UserError
from heimdall.jobs.train import TrainRequest, train
from heimdall.training.report import TrainReport


def test_outcome_is_the_report_on_disk(pipeline) -> None:
    out = pipeline.trained
    on_disk = json.loads((out.output_dir / "report.json").read_text())
    assert json.loads(json.dumps(out.report.model_dump(mode="json"), sort_keys=True, default=str)) == on_disk
    assert TrainReport.model_validate(on_disk) == out.report
    assert out.model_id == out.report.model_id == on_disk["model_id"]
    assert out.report.n_train + out.report.n_val + out.report.n_test == 40
    assert (
        out.mlflow is None and out.mlflow_run_id is None and out.registered is None and out.champion is None
    )


def test_cli_lines(pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    out = pipeline.trained
    _print(out)
    lines = capsys.readouterr().out.splitlines()
    t, wc = out.report.test, out.report.baselines.weighted_centroid
    diff = wc.rmse_m - t.rmse_m
    judged = "on par" if abs(diff) < 1 else f"{'better' if diff > 0 else 'worse'} by {km(abs(diff))}"
    assert lines == [
        f"model {out.model_id}: test RMSE {t.rmse_m / 1000:.1f} km, median {t.median_error_m / 1000:.1f} km, "
        f"1σ coverage {t.coverage_1sigma:.2f}; ONNX parity {out.report.onnx.max_position_diff_m:.2g} m",
        f"model RMSE {km(t.rmse_m)} vs weighted centroid {km(wc.rmse_m)}: {judged}",
        f"report: {out.output_dir / 'report.md'}",
        f"next: heimdall evaluate --model {out.output_dir} --split test "
        f"--output-dir {out.output_dir / 'evaluation'}",
    ]
    r = out.report
    assert r.best_epoch is not None and 1 <= r.best_epoch <= r.epochs_run
    assert isinstance(r.stopped_early, bool)


def test_contradictory_requests_are_refused(pipeline) -> None:
    with pytest.raises(UserError, match="--promote"):
        train(TrainRequest(promote=True, tracking=False), pipeline.settings)
    with pytest.raises(UserError, match="--from-run"):
        train(TrainRequest(from_run="abc", config=pipeline.root / "c.yaml"), pipeline.settings)
