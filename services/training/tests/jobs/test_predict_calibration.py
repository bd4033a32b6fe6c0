"""The calibration that training fits on validation is the one every consumer returns.

For the same sessions, report.json's calibration, ``heimdall evaluate``'s model covariance, ``heimdall
predict``'s covariance and ``examples/infer_sample.py``'s covariance agree. The network's own
(uncalibrated) covariance is read independently, by setting the graph's ``covariance_scale`` constant
to 1 in a copy of the file, so a consumer that skipped the scale, or applied it twice, fails here.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from heimdall.data.recordings import stored_recordings
from heimdall.inference.localizer import OnnxLocalizer, ort_session
from heimdall.jobs.predict import predict
from heimdall.services import open_services

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "infer_sample.py"
CHI2_95 = -2.0 * math.log(0.05)  # 95 % of a 2-D Gaussian lies within Mahalanobis² 5.991


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infer_sample", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unscaled_copy(model: Path, dst: Path) -> Path:
    """The same model with its covariance_scale initializer set to 1 (the network's own covariance)."""
    proto = onnx.load(str(model))
    (init,) = [i for i in proto.graph.initializer if i.name == "covariance_scale"]
    init.CopyFrom(onnx.numpy_helper.from_array(np.ones_like(onnx.numpy_helper.to_array(init)), init.name))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def consumers(pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Per test session: predict's and the example's covariance, the raw network's, truth and position."""
    model = pipeline.root / "model" / "model.onnx"
    tmp = tmp_path_factory.mktemp("consumers")
    raw_session = ort_session(_unscaled_copy(model, tmp / "unscaled.onnx"))
    loc = OnnxLocalizer(model)
    locate = _example().locate
    test_ids = json.loads((pipeline.root / "model" / "split.json").read_text())["test"]
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("predict", "example", "raw", "pos", "truth")}
    services = open_services(pipeline.settings)
    try:
        for sid in test_ids:
            got = predict(services, sid, str(model))
            out["predict"].append(np.array(got["covariance_enu_m2"]))
            out["pos"].append(np.array([got["position"]["east_m"], got["position"]["north_m"]]))
            lat, lon = got["truth"]["latitude"], got["truth"]["longitude"]
            stored = stored_recordings(services.db, services.store, sid)
            ids = sorted(stored.recordings)
            npz = tmp / f"{sid}.npz"
            np.savez(
                npz,
                session_id=np.array(sid),
                station_ids=np.array(ids, np.int64),
                iq=np.stack([stored.recordings[s] for s in ids]),
                frequency_hz=np.array(got["carrier"]["frequency_hz"]),  # the session's, as predict read it
                truth_latitude=np.array(lat),
                truth_longitude=np.array(lon),
            )
            sample = locate(str(model), npz)
            out["example"].append(np.array(sample["covariance_enu_m2"]))
            # the raw network on the same IQ, built by hand (model order, absent receivers masked)
            x = np.zeros((1, loc.n_receivers, 2, int(loc.n_samples or 0)), np.float32)
            mask = np.zeros((1, loc.n_receivers), np.float32)
            for k, station in enumerate(loc.station_ids):
                if station in stored.recordings:
                    iq = stored.recordings[station]
                    x[0, k] = np.stack([iq.real, iq.imag])
                    mask[0, k] = 1.0
            carrier = np.array([stored.frequency_hz], np.float32)
            out["raw"].append(
                raw_session.run(None, {"iq": x, "receiver_mask": mask, "frequency_hz": carrier})[1][0].astype(
                    np.float64
                )
            )
            out["truth"].append(np.asarray(loc.frame.to_enu(lat, lon), np.float64))
    finally:
        services.close()
    return {k: np.stack(v) for k, v in out.items()}


def test_the_scale_fitted_on_validation_ships_in_the_graph(pipeline) -> None:
    report = pipeline.trained.report
    cal = report.calibration
    assert cal is not None and cal.fitted_on == "val" and cal.applied_in_graph
    assert cal.covariance_scale == cal.chosen and cal.chosen in cal.grid and not cal.on_grid_edge
    assert cal.n_sessions == report.n_val
    assert (
        cal.covariance_scale != 1.0
    )  # otherwise this file could not tell a skipped scale from an applied one
    proto = onnx.load(str(pipeline.root / "model" / "model.onnx"))
    (init,) = [i for i in proto.graph.initializer if i.name == "covariance_scale"]
    (in_graph,) = onnx.numpy_helper.to_array(init).reshape(-1)
    assert float(in_graph) == pytest.approx(cal.covariance_scale, rel=1e-6)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["calibration"])
    assert meta["covariance_scale"] == cal.covariance_scale and meta["applied_in_graph"] is True


def test_predict_and_the_example_return_the_scaled_network_covariance(pipeline, consumers) -> None:
    scale = pipeline.trained.report.calibration.covariance_scale
    np.testing.assert_allclose(consumers["predict"], consumers["example"], rtol=1e-6)
    np.testing.assert_allclose(consumers["predict"], scale * consumers["raw"], rtol=1e-5)


def test_evaluate_and_report_measure_the_covariance_predict_returns(pipeline, consumers) -> None:
    """evaluation.json's model row and report.json's test row are the figures of predict's covariances."""
    cov, pos, truth = consumers["predict"], consumers["pos"], consumers["truth"]
    area_km2 = float(np.mean(math.pi * CHI2_95 * np.sqrt(np.linalg.det(cov)) / 1e6))
    err = pos - truth
    d2 = np.einsum("ni,nij,nj->n", err, np.linalg.inv(cov), err)
    nll = float(np.mean(0.5 * d2 + 0.5 * np.log(np.linalg.det(cov)) + math.log(2 * math.pi)))
    on_disk = json.loads((pipeline.evaluated.output_dir / "evaluation.json").read_text())
    model = on_disk["methods"]["model"]
    assert on_disk["n_sessions"] == len(cov)
    assert model["covariance_scale"]["chosen"] == pipeline.trained.report.calibration.covariance_scale
    assert "not applied" in model["covariance_scale"]["retuned_diagnostic"]["note"]
    assert model["mean_ellipse_area_km2"] == pytest.approx(area_km2, rel=1e-5)
    assert model["nll"] == pytest.approx(nll, rel=1e-5)
    # report.json's figures come from the numpy features through PyTorch: the same up to parity
    test = pipeline.trained.report.test
    assert test.mean_ellipse_area_km2 == pytest.approx(area_km2, rel=1e-3)
    assert test.nll == pytest.approx(nll, rel=1e-3)


def test_report_validation_figures_are_the_shipped_model_on_validation(pipeline) -> None:
    """report.json's validation row (what model choices read) is the shipped model on split.json's val."""
    model = pipeline.root / "model" / "model.onnx"
    val_ids = json.loads((pipeline.root / "model" / "split.json").read_text())["val"]
    services = open_services(pipeline.settings)
    err2, nll = [], []
    try:
        for sid in val_ids:
            got = predict(services, sid, str(model))
            east, north = got["position"]["east_m"], got["position"]["north_m"]
            loc = OnnxLocalizer(model)
            truth = np.asarray(loc.frame.to_enu(got["truth"]["latitude"], got["truth"]["longitude"]), float)
            e = np.array([east, north]) - truth
            cov = np.array(got["covariance_enu_m2"])
            err2.append(float(e @ e))
            d2 = float(e @ np.linalg.solve(cov, e))
            nll.append(0.5 * d2 + 0.5 * math.log(np.linalg.det(cov)) + math.log(2 * math.pi))
    finally:
        services.close()
    validation = pipeline.trained.report.validation
    assert validation is not None and len(val_ids) == pipeline.trained.report.n_val > 0
    # metric-frame distance vs haversine differ by < 0.1 % over a few tens of km
    assert validation.rmse_m == pytest.approx(math.sqrt(np.mean(err2)), rel=2e-3)
    assert validation.nll == pytest.approx(float(np.mean(nll)), rel=1e-3)
