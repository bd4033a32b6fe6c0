"""heimdall.jobs.train: the typed outcome is report.json, and the CLI prints it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from jobs_support import model_errors_one_by_one, rmse_and_median

from heimdall.cli.summary import km
from heimdall.cli.train_commands import _print
from heimdall.errors import UserError
from heimdall.jobs.train import TrainRequest, train
from heimdall.services import open_services
from heimdall.storage.queries import list_sessions
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


def test_split_partitions_the_stored_sessions_and_the_snapshot_digests_it(pipeline) -> None:
    """split.json is a partition of the 40 stored sessions; each snapshot is its split's size and digest
    (sha256 of the sorted ids, one per line, first 16 hex digits), computed here from the ids."""
    out = pipeline.trained
    split = json.loads((out.output_dir / "split.json").read_text())
    services = open_services(pipeline.settings)
    try:
        stored = {str(s.id) for s in list_sessions(services.db, out.report.datasets)}
    finally:
        services.close()
    assert len(stored) == 40
    parts = [set(split[name]) for name in ("train", "val", "test")]
    assert sum(map(len, parts)) == 40 and set.union(*parts) == stored  # disjoint and complete
    for name, ids in split.items():
        snap = out.report.data_snapshot[name]
        digest = hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()[:16]
        assert (snap.n, snap.ids_sha256_16) == (len(ids), digest), name
    assert (out.report.n_train, out.report.n_val, out.report.n_test) == tuple(map(len, parts))


def test_test_metrics_match_a_recomputation_session_by_session(pipeline) -> None:
    """The report's test RMSE/median against model.onnx run on each test session alone, truth from the
    database: within 1 m (PyTorch against ONNX Runtime, float32), and the stated parity within that too."""
    out = pipeline.trained
    errors = model_errors_one_by_one(pipeline.settings, out.output_dir)
    assert len(errors) == out.report.n_test >= 2
    rmse, median = rmse_and_median(errors)
    slack = 1.0  # metres; not the report's own parity figure, which a broken run would inflate too
    assert out.report.onnx.max_position_diff_m < slack
    assert abs(out.report.test.rmse_m - rmse) <= slack, (out.report.test.rmse_m, rmse)
    assert abs(out.report.test.median_error_m - median) <= slack, (out.report.test.median_error_m, median)
    assert out.report.test.p95_error_m <= max(errors.values()) + slack
    assert np.isclose(out.report.test.mean_error_m, np.mean(list(errors.values())), atol=slack, rtol=0)


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
    # two epochs asked, patience far longer: both run; the best is the 1-based epoch of the lowest val_loss
    assert (r.epochs_run, r.stopped_early, len(r.history)) == (2, False, 2)
    val = [h["val_loss"] for h in r.history]
    assert [int(h["epoch"]) for h in r.history] == [0, 1]
    assert r.best_epoch == 1 + int(np.argmin(val))


def test_contradictory_requests_are_refused(pipeline) -> None:
    with pytest.raises(UserError, match="--promote"):
        train(TrainRequest(promote=True, tracking=False), pipeline.settings)
    with pytest.raises(UserError, match="--from-run"):
        train(TrainRequest(from_run="abc", config=pipeline.root / "c.yaml"), pipeline.settings)
