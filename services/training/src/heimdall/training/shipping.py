"""What a finished run ships: the calibration fitted on validation, test figures, the ONNX file and parity.

Order matters and is the point of this module:

1. the covariance scale is fitted on the **validation** split (:func:`fit_calibration`, the same
   :func:`~heimdall.evaluate.localizers.calibration_scale` that ``heimdall evaluate`` uses for its
   diagnostic), before the test split is looked at;
2. the test figures of report.json use the calibrated covariance, i.e. the model as it ships;
3. the scale is baked into the exported graph, so ``predict``, the inference service and
   ``examples/infer_sample.py`` return the covariance that was evaluated;
4. parity compares ONNX Runtime on raw inputs (IQ from the object store, built by
   :mod:`heimdall.inference.inputs`) with the very predictions behind report.json (cached numpy
   features → PyTorch network, calibrated) on the whole test split.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from heimdall.atomic import atomic_write_text
from heimdall.data.arrays import SessionArrays
from heimdall.data.dataset import HeimdallDataModule
from heimdall.data.splits import ids_digest
from heimdall.evaluate.classical import WeightedCentroid, observations_from_arrays
from heimdall.evaluate.localizers import calibration_scale
from heimdall.evaluate.metrics import error_summary, errors_m, uncertainty_summary
from heimdall.evaluate.plots import plot_error_cdf, plot_prediction_map
from heimdall.features import FeatureConfig
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.onnx_export import export_onnx
from heimdall.inference.publish import upload_model
from heimdall.inference.verify import measure_latency, onnx_parity, parity_with_reference
from heimdall.model import LocalizationNet, predict_arrays
from heimdall.services import Services
from heimdall.training.config import TrainConfig

__all__ = ["PARITY_REFERENCE", "PARITY_TOLERANCE_M", "finish_run", "fit_calibration"]

log = logging.getLogger("heimdall.training")

#: What ONNX parity is measured against (report.json says it beside the figure).
PARITY_REFERENCE = "training path: cached numpy features -> PyTorch network (report.json's test predictions)"
#: Largest position difference (m) between the ONNX file and the training path accepted as "the same
#: model"; beyond it the run warns and ``onnx.parity_ok`` is false. Float32 features differ from the
#: float64 numpy ones by ~1e-3 dB, which moves a position by centimetres, not metres.
PARITY_TOLERANCE_M = 1.0


def fit_calibration(net: LocalizationNet, dm: HeimdallDataModule, arrays: SessionArrays) -> dict[str, Any]:
    """The covariance scale fitted on validation (:func:`calibration_scale`), as it ships."""
    val, vidx = dm.datasets["val"], arrays.indices("val")
    pos, cov = predict_arrays(net, val.spectrogram, val.scalars, val.mask, val.frequency_hz)
    fitted = calibration_scale(pos, cov, arrays.target_enu_m[vidx], arrays.target_sigma_m[vidx])
    if fitted["on_grid_edge"]:
        log.warning(
            "covariance calibration chose %g, an edge of its grid [%g, %g]: the best scale may lie outside",
            fitted["chosen"],
            fitted["grid"][0],
            fitted["grid"][-1],
        )
    return {
        "covariance_scale": float(fitted["chosen"]),
        "fitted_on": "val",
        "applied_in_graph": True,
        "method": "covariance multiplier whose validation 1σ/2σ coverage is closest to 39.3 %/86.5 % "
        "(ties by NLL), over a log grid",
        **fitted,
    }


def finish_run(
    config: TrainConfig,
    services: Services,
    arrays: SessionArrays,
    dm: HeimdallDataModule,
    net: LocalizationNet,
    out: Path,
    model_id: str,
) -> dict[str, Any]:
    """Calibrate on validation, measure on test, export, check parity, write the run's files.

    Returns the report's figures that come from here (test metrics, baseline, calibration, ONNX).
    """
    calibration = fit_calibration(net, dm, arrays)
    scale = calibration["covariance_scale"]
    test = dm.datasets["test"]
    frame = arrays.network.frame
    pos, raw_cov = predict_arrays(net, test.spectrogram, test.scalars, test.mask, test.frequency_hz)
    cov = raw_cov * scale
    idx = arrays.indices("test")
    lat, lon = frame.to_latlon(pos)
    err = errors_m(np.stack([lat, lon], axis=1), arrays.truth_latlon[idx])
    truth, sigma = arrays.target_enu_m[idx], arrays.target_sigma_m[idx]
    test_metrics = {**error_summary(err), **uncertainty_summary(pos, cov, truth, sigma)}
    vidx = arrays.indices("val")
    validation_metrics = _split_metrics(net, dm.datasets["val"], arrays, vidx, scale)
    wc = WeightedCentroid()
    tuning = wc.tune(observations_from_arrays(arrays, vidx), arrays.target_enu_m[vidx])
    wc_pos, _ = wc.predict(observations_from_arrays(arrays, idx))
    wlat, wlon = frame.to_latlon(wc_pos)
    wc_err = errors_m(np.stack([wlat, wlon], axis=1), arrays.truth_latlon[idx])
    baseline = {**error_summary(wc_err), "tuning": tuning, "chosen": tuning["chosen"]}
    plot_error_cdf({"model": err, "weighted centroid": wc_err}, out / "error_cdf.png")
    receivers = arrays.network.positions_enu_m()
    plot_prediction_map(truth, pos, cov, receivers, arrays.network.names, out / "prediction_map.png")
    onnx_report = _export(config, services, arrays, dm, net, out, model_id, calibration, (pos, cov))
    raw = uncertainty_summary(pos, raw_cov, truth, sigma)  # what the scale changed, for the reader
    keys = ("coverage_1sigma", "coverage_2sigma", "nll", "mean_ellipse_area_km2")
    calibration["test_uncalibrated"] = {k: raw[k] for k in keys}
    split_ids = {s: [str(arrays.session_ids[i]) for i in arrays.indices(s)] for s in ("train", "val", "test")}
    _write_json(out / "split.json", split_ids)
    _write_json(out / "normalization.json", dm.stats.to_dict())
    _write_json(out / "network.json", arrays.network.to_dict())
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.resolved(), sort_keys=True))
    return {
        "model_id": model_id,
        "datasets": list(arrays.datasets),
        "feature_config_hash": arrays.feature_hash,
        "data_snapshot": {s: {"n": len(v), "ids_sha256_16": ids_digest(v)} for s, v in split_ids.items()},
        "validation": validation_metrics,
        "test": test_metrics,
        "calibration": calibration,
        "baselines": {"weighted_centroid": baseline},
        "onnx": onnx_report,
        "frame_origin": {"latitude": frame.origin_lat, "longitude": frame.origin_lon},
        "network": arrays.network.to_dict(),
        "config": config.resolved(),
    }


def _split_metrics(
    net: LocalizationNet, data: Any, arrays: SessionArrays, idx: np.ndarray, scale: float
) -> dict[str, float]:
    """The shipped (calibrated) model's figures on one split: validation is what model choices read."""
    pos, cov = predict_arrays(net, data.spectrogram, data.scalars, data.mask, data.frequency_hz)
    lat, lon = arrays.network.frame.to_latlon(pos)
    err = errors_m(np.stack([lat, lon], axis=1), arrays.truth_latlon[idx])
    truth, sigma = arrays.target_enu_m[idx], arrays.target_sigma_m[idx]
    return {**error_summary(err), **uncertainty_summary(pos, cov * scale, truth, sigma)}


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def _raw_inputs(
    services: Services,
    arrays: SessionArrays,
    indices: np.ndarray,
    from_iq: bool,
    feature_config: FeatureConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sessions' inputs as the inference service builds them (:func:`heimdall.inference.inputs`),
    with each session's carrier (NaN = unknown) as the third input of the ONNX contract."""
    from heimdall.data.recordings import arrays_frequencies, arrays_power, arrays_recordings
    from heimdall.inference.inputs import InputSpec, batch_inputs

    spec = InputSpec(
        station_ids=arrays.network.station_ids,
        input_kind="iq" if from_iq else "scalars",
        n_scalars=int(arrays.scalars.shape[-1]),
        feature_config=feature_config,
    )
    if from_iq:
        recordings = arrays_recordings(services.db, services.store, arrays, indices)
        x, mask = batch_inputs(spec, recordings=recordings)
    else:
        x, mask = batch_inputs(spec, power=arrays_power(arrays, indices))
    frequency = arrays_frequencies(arrays, indices)
    return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(frequency)


class _TestInputs:
    """The test split's raw inputs built chunk by chunk (:class:`heimdall.inference.verify.InputChunks`):
    its IQ is read from the store per chunk, never all at once."""

    def __init__(
        self,
        services: Services,
        arrays: SessionArrays,
        indices: np.ndarray,
        from_iq: bool,
        feature_config: FeatureConfig,
    ) -> None:
        self.services, self.arrays, self.indices = services, arrays, indices
        self.from_iq, self.feature_config, self.n = from_iq, feature_config, int(indices.size)

    def chunk(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.indices[start:stop]
        return _raw_inputs(self.services, self.arrays, rows, self.from_iq, self.feature_config)


def _export(
    config: TrainConfig,
    services: Services,
    arrays: SessionArrays,
    dm: HeimdallDataModule,
    net: LocalizationNet,
    out: Path,
    model_id: str,
    calibration: dict[str, Any],
    reference: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """ONNX with features (IQ models) and the calibration inside the graph; parity on the whole test split."""
    from_iq = arrays.has_spectrogram  # IQ data: features are computed inside the graph either way
    feature_config = config.features.to_feature_config()
    scale = float(calibration["covariance_scale"])
    graph = InferenceGraph(net, dm.stats, feature_config, from_iq=from_iq, covariance_scale=scale).eval()
    inputs = _TestInputs(services, arrays, arrays.indices("test"), from_iq, feature_config)
    example = tuple(t if t.shape[0] >= 2 else torch.cat([t, t]) for t in inputs.chunk(0, 2))
    metadata = model_metadata(
        arrays.network,
        feature_config,
        model_id,
        calibration=calibration,
        feature_config_hash=arrays.feature_hash,
        datasets=json.dumps(list(arrays.datasets)),
    )
    path = export_onnx(graph, example, out / "model.onnx", metadata)
    parity = parity_with_reference(path, inputs, *reference)
    vs_torch = onnx_parity(path, graph, inputs)
    parity_ok = parity["max_position_diff_m"] <= PARITY_TOLERANCE_M
    if not parity_ok:
        log.warning(
            "ONNX model differs from the training path by up to %.3g m (session %d of the test split): "
            "the exported model is not the one report.json measured",
            parity["max_position_diff_m"],
            int(parity["worst_session"]),
        )
    if vs_torch["max_trust_diff"] > 0.5:  # float32 rounding flipped a set-aside decision somewhere
        log.warning("ONNX Runtime sets a different receiver aside than the torch graph on the test split")
    latency = measure_latency(path, tuple(inputs.chunk(0, 1)))
    key = upload_model(services.store, services.settings.models_bucket, model_id, path)
    return {
        "path": str(path),
        "object_key": f"{services.settings.models_bucket}/{key}",
        "inputs": "iq (B,R,2,T) float32 + receiver_mask (B,R) + frequency_hz (B,)"
        if from_iq
        else "scalars (B,R,4) + receiver_mask (B,R) + frequency_hz (B,)",
        "max_position_diff_m": parity["max_position_diff_m"],
        "median_position_diff_m": parity["median_position_diff_m"],
        "max_covariance_rel_diff": parity["max_covariance_rel_diff"],
        "parity_n_sessions": int(parity["n_sessions"]),
        "parity_reference": PARITY_REFERENCE,
        "parity_tolerance_m": PARITY_TOLERANCE_M,
        "parity_ok": parity_ok,
        "max_position_diff_vs_torch_graph_m": vs_torch["max_position_diff_m"],
        "max_trust_diff_vs_torch_graph": vs_torch["max_trust_diff"],
        "covariance_scale_in_graph": scale,
        "size_bytes": path.stat().st_size,
        "latency_ms_p50": float(latency["p50_ms"]),
        "latency_ms_p90": float(latency["p90_ms"]),
    }
