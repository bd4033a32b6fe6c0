"""What ships is chosen on validation: the network, the radio map or their fusion; forcing one works."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from heimdall.training.champion import FUSION_WEIGHTS, localizer_line
from heimdall.training.config import load_config
from heimdall.training.runner import run_training


def _train(sim_services, tmp_path_factory, localizer: str):
    out = tmp_path_factory.mktemp(f"champion-{localizer}") / "model"
    cfg = load_config(
        None, {"epochs": 2, "batch_size": 64, "output_dir": out, "seed": 5, "model": {"localizer": localizer}}
    )
    run_training(cfg, sim_services, progress=False)
    return json.loads((out / "report.json").read_text()), out


@pytest.fixture(scope="module")
def auto(sim_services, tmp_path_factory):
    return _train(sim_services, tmp_path_factory, "auto")


def test_auto_ships_the_lowest_validation_rmse(auto) -> None:
    report, out = auto
    loc = report["localizer"]
    scores = loc["val_rmse_m"]
    assert set(scores) == {"network", "radiomap", *(f"fusion_{w:g}" for w in FUSION_WEIGHTS)}
    best = min(scores.values())
    name = loc["localizer"] if loc["localizer"] != "fusion" else f"fusion_{loc['fusion_weight']:g}"
    assert scores[name] == pytest.approx(best)
    # the radio map's own choice (field settings) was made on validation too, physics-only included
    cands = loc["radio_map"]["candidates"]
    assert cands[0]["field"] == "none" and all(np.isfinite(c["val_rmse_m"]) for c in cands)
    assert loc["chosen_by"] == "validation RMSE"
    # what ships is what the report measured: the exported graph's parity with the training path
    assert report["onnx"]["parity_ok"] is True
    # (the report measures great-circle errors, the choice ENU distances: equal to a few 0.1 %)
    assert report["validation"]["rmse_m"] == pytest.approx(best, rel=5e-3)
    # report.md names what shipped and why
    md = (out / "report.md").read_text()
    assert f"| model ({loc['localizer']}) |" in md and "chosen on validation RMSE (" in md
    assert all(f"{name} {score:,.0f} m" in md for name, score in loc["val_rmse_m"].items())


def test_forced_radio_map_ships_and_serves(sim_services, tmp_path_factory) -> None:
    report, out = _train(sim_services, tmp_path_factory, "radiomap")
    assert report["localizer"]["localizer"] == "radiomap" and report["onnx"]["parity_ok"] is True
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()][-1] == "frequency_hz"
    assert report["onnx"]["size_bytes"] <= 5_000_000


def test_forced_network_skips_the_map(sim_services, tmp_path_factory) -> None:
    report, _ = _train(sim_services, tmp_path_factory, "network")
    assert report["localizer"] == {"localizer": "network", "chosen_by": "configuration"}


def test_console_line_names_every_candidate() -> None:
    line = localizer_line(
        {
            "localizer": "fusion",
            "fusion_weight": 0.5,
            "chosen_by": "validation RMSE",
            "val_rmse_m": {"a": 1.0},
        }
    )
    assert "radio-map weight 0.5" in line and "a 1 m" in line
    assert localizer_line({"localizer": "network", "chosen_by": "configuration"}) == (
        "localizer: network (configuration)"
    )
