"""heimdall.jobs.train: the typed outcome is report.json, and the CLI prints it."""

from __future__ import annotations

import json

import pytest

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
    t = out.report.test
    assert lines == [
        f"model {out.model_id}: test RMSE {t.rmse_m:.0f} m, median {t.median_error_m:.0f} m, "
        f"1σ coverage {t.coverage_1sigma:.2f}; ONNX parity {out.report.onnx.max_position_diff_m:.2g} m",
        f"report: {out.output_dir / 'report.md'}",
    ]


def test_contradictory_requests_are_refused(pipeline) -> None:
    with pytest.raises(UserError, match="--promote"):
        train(TrainRequest(promote=True, tracking=False), pipeline.settings)
    with pytest.raises(UserError, match="--from-run"):
        train(TrainRequest(from_run="abc", config=pipeline.root / "c.yaml"), pipeline.settings)
