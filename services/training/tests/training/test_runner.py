"""A short real training run end to end: report, files, ONNX parity, resume and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.training.config import load_config
from heimdall.training.runner import run_training

REQUIRED_TEST_KEYS = {
    "rmse_m",
    "median_error_m",
    "mean_error_m",
    "p90_error_m",
    "coverage_1sigma",
    "coverage_2sigma",
    "nll",
}


@pytest.fixture(scope="module")
def trained(sim_services, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "models"
    cfg = load_config(None, {"epochs": 3, "batch_size": 64, "output_dir": out, "seed": 3})
    result = run_training(cfg, sim_services, progress=False)
    return cfg, result


def test_report_has_the_contract(trained) -> None:
    _, result = trained
    report = json.loads((result.output_dir / "report.json").read_text())
    assert report["model_id"] == result.model_id
    assert report["n_train"] + report["n_val"] + report["n_test"] == 40
    assert set(report["test"]) >= REQUIRED_TEST_KEYS
    assert {"rmse_m", "median_error_m"} <= set(report["baselines"]["weighted_centroid"])
    assert report["timing"]["seconds_per_epoch"] > 0 and report["effective_batch_size"] <= 64
    onnx = report["onnx"]
    assert (
        onnx["max_position_diff_m"] < 1.0 and onnx["size_bytes"] <= 5_000_000 and onnx["latency_ms_p50"] > 0
    )
    # parity is against the training path (numpy features) on every test session
    assert onnx["parity_n_sessions"] == report["n_test"] and onnx["parity_ok"] is True
    assert "numpy features" in onnx["parity_reference"]
    cal = report["calibration"]
    assert cal["fitted_on"] == "val" and cal["n_sessions"] == report["n_val"]
    assert cal["covariance_scale"] == cal["chosen"] == onnx["covariance_scale_in_graph"]
    # the choice: 1σ/2σ coverage closest to a calibrated Gaussian's, ties by the lower NLL
    best = min(range(len(cal["grid"])), key=lambda i: (cal["val_coverage_miss"][i], cal["val_nll"][i]))
    assert cal["chosen"] == cal["grid"][best]
    assert cal["on_grid_edge"] == (cal["chosen"] in (cal["grid"][0], cal["grid"][-1]))
    # the test figures are the calibrated ones: scaling Σ by s changes the 95 % ellipse area by exactly s
    raw = cal["test_uncalibrated"]
    assert report["test"]["mean_ellipse_area_km2"] == pytest.approx(
        cal["chosen"] * raw["mean_ellipse_area_km2"]
    )
    assert "Covariance scale" in (result.output_dir / "report.md").read_text()
    for name in ("report.md", "config.yaml", "split.json", "normalization.json", "network.json"):
        assert (result.output_dir / name).is_file(), name
    for name in ("loss_curves.png", "error_cdf.png", "prediction_map.png"):
        assert (result.output_dir / name).read_bytes()[:4] == b"\x89PNG"
    split = json.loads((result.output_dir / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    assert (result.output_dir / "checkpoints" / "last.ckpt").is_file()


def test_onnx_is_loadable_and_uploaded(trained, sim_services) -> None:
    _, result = trained
    sess = ort.InferenceSession(str(result.output_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["position_enu_m", "covariance_enu_m2", "receiver_trust"]
    key = f"{result.model_id}/model.onnx"
    stored = sim_services.store.get_bytes(sim_services.settings.models_bucket, key)
    assert stored == (result.output_dir / "model.onnx").read_bytes()


def test_resume_continues_from_last_checkpoint(trained, sim_services) -> None:
    cfg, first = trained
    assert first.report.resumed is False and first.report.resumed_from_epoch is None
    more = cfg.model_copy(update={"epochs": 4})
    result = run_training(more, sim_services, resume=True, progress=False)
    report = json.loads((result.output_dir / "report.json").read_text())
    assert report["resumed"] is True and report["resumed_from_epoch"] == 3  # epochs 0-2 from the checkpoint
    assert [int(h["epoch"]) for h in report["history"]] == [0, 1, 2, 3]  # complete across the resume
    assert report["history"][:3] == first.report.history
    assert report["epochs_run"] == 4


def test_checkpoints_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new checkpoint is complete before it replaces the old one (a kill -9 mid-save leaves the
    previous last.ckpt whole), and a failed save leaves no temporary file behind."""
    import os

    import torch

    from heimdall.training.runner import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)
    real_replace = os.replace
    seen: list[tuple[int, int]] = []

    def replace(src, dst):  # type: ignore[no-untyped-def]
        seen.append(
            (torch.load(src, weights_only=True)["epoch"], torch.load(dst, weights_only=True)["epoch"])
        )
        real_replace(src, dst)

    monkeypatch.setattr("heimdall.training.runner.os.replace", replace)
    io.save_checkpoint({"epoch": 2}, path)
    assert seen == [(2, 1)] and torch.load(path, weights_only=True)["epoch"] == 2

    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError, match="mid-save"):
        io.save_checkpoint({"epoch": 2, "x": Boom()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_without_a_checkpoint_starts_fresh(sim_services, tmp_path: Path) -> None:
    cfg = load_config(None, {"epochs": 1, "batch_size": 64, "output_dir": tmp_path / "m", "seed": 3})
    result = run_training(cfg, sim_services, resume=True, progress=False)
    assert result.report.resumed is False and result.report.resumed_from_epoch is None


def test_same_seed_same_result(trained, sim_services, tmp_path: Path) -> None:
    cfg, first = trained
    again = run_training(
        cfg.model_copy(update={"output_dir": tmp_path / "again"}), sim_services, progress=False
    )
    assert again.report.test.rmse_m == pytest.approx(first.report.test.rmse_m, rel=1e-6)


def test_too_few_sessions_is_a_clear_error(tmp_path: Path) -> None:
    from simdata import simulate_into

    services = open_services(Settings(data_dir=tmp_path / "hd"))
    simulate_into(services, 2, seed=5)
    cfg = load_config(None, {"epochs": 1, "output_dir": tmp_path / "m"})
    with pytest.raises(ValueError, match="split"):
        run_training(cfg, services, progress=False)
    assert not (tmp_path / "m" / "model.onnx").exists()
    services.close()
