"""`heimdall evaluate`: the model against classical baselines and the Bayes oracle on one split.

Every method sees the same held-out sessions. Baselines are fitted on train and tuned on
validation only; the model's covariance scale is fitted on validation too (so test coverage is
honest); the oracle is available for simulated scenarios only. Outage removes each receiver in
turn at test time, for every method, without retraining.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.data.arrays import SessionArrays, load_session_arrays
from heimdall.data.network import ReceiverNetwork
from heimdall.data.onnx_inputs import onnx_inputs_for
from heimdall.data.splits import split_score
from heimdall.errors import UserError
from heimdall.evaluate.classical import (
    KNNFingerprint,
    LogDistanceNLS,
    WeightedCentroid,
    observations_from_arrays,
)
from heimdall.evaluate.intervals import paired_bootstrap
from heimdall.evaluate.metrics import error_summary, errors_m, mahalanobis_sq, uncertainty_summary
from heimdall.evaluate.plots import plot_calibration, plot_error_cdf, plot_prediction_map
from heimdall.export import OnnxLocalizer
from heimdall.features import FeatureConfig
from heimdall.services import Services

log = logging.getLogger("heimdall.evaluate")

MODEL = "model"
ORACLE = "bayes_oracle"
PREDICT_CHUNK = 128
CALIBRATION_GRID = tuple(float(x) for x in np.round(np.geomspace(0.25, 16.0, 49), 4))


class EvaluationError(UserError):
    """The model and the data cannot be evaluated together (empty split, mismatched receivers...)."""


@dataclass
class Method:
    """Positions (world-independent: the model's ENU frame) and optional covariances for the split."""

    pos: np.ndarray
    cov: np.ndarray | None
    info: dict[str, Any]


def _model_files(model: str, services: Services, workdir: Path) -> tuple[Path, Path, Path]:
    """model.onnx plus the split.json and network.json of the run that made it."""
    from heimdall.predict import is_mlflow_uri, resolve_model

    onnx_path = resolve_model(model, services.settings, dst=workdir / "model")
    split, network = onnx_path.parent / "split.json", onnx_path.parent / "network.json"
    if (not split.is_file() or not network.is_file()) and is_mlflow_uri(model):
        split, network = _run_artifacts(services, OnnxLocalizer(onnx_path).model_id, workdir)
    for f in (split, network):
        if not f.is_file():
            raise EvaluationError(f"{f.name} of model {model} not found beside {onnx_path}")
    return onnx_path, split, network


def _read_json(path: Path, what: str) -> Any:
    """A JSON file of the model's run folder; a missing or malformed one is an EvaluationError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{what} {path} is not valid JSON: {exc}") from None


def _network(path: Path) -> ReceiverNetwork:
    data = _read_json(path, "network.json")
    try:
        return ReceiverNetwork.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(f"network.json {path} is malformed ({type(exc).__name__}: {exc})") from None


def _run_artifacts(services: Services, run_id: str, workdir: Path) -> tuple[Path, Path]:
    """split.json and network.json logged by the training run `run_id` (the model id)."""
    from heimdall.tracking.models import download_run_artifacts

    got = download_run_artifacts(services.settings, run_id, ("split.json", "network.json"), workdir / "run")
    return got[0], got[1]


def _calibration_scale(
    pos: np.ndarray, cov: np.ndarray, truth: np.ndarray, sigma: np.ndarray
) -> dict[str, Any]:
    """The covariance multiplier with the lowest validation NLL (grid printed with the result)."""
    nll = [uncertainty_summary(pos, cov * s, truth, sigma)["nll"] for s in CALIBRATION_GRID]
    best = int(np.argmin(nll))
    return {
        "grid": list(CALIBRATION_GRID),
        "val_nll": [round(x, 5) for x in nll],
        "chosen": CALIBRATION_GRID[best],
    }


def _oracle_for(arrays: SessionArrays) -> Callable[[np.ndarray, int | None], Method] | None:
    """A Bayes-oracle runner when every dataset is a simulation of one shipped/known scenario."""
    labels = {str(d) for d in arrays.datasets}
    names = {d.split(":")[1] for d in labels if d.startswith("sim:") and d.count(":") >= 1}
    if len(names) != 1 or not all(d.startswith("sim:") for d in labels):
        return None
    from heimdall.evaluate.oracle import bayes_oracle
    from heimdall.simulate.propagation import measurement_model
    from heimdall.simulate.scenario import load_scenario
    from heimdall.simulate.world import build_world

    mm = measurement_model(build_world(load_scenario(names.pop())))
    order = [arrays.network.index()[sid] for sid in mm.receiver_ids]
    frame = arrays.network.frame

    def run(idx: np.ndarray, drop: int | None) -> Method:
        power = arrays.row_power_db[idx][:, order].copy()
        snr = arrays.row_snr_db[idx][:, order].copy()
        if drop is not None:
            k = order.index(drop)
            power[:, k] = snr[:, k] = np.nan
        band = np.array([mm.band_index(f) for f in arrays.frequency_hz[idx]])
        mean_w, cov_w = bayes_oracle(mm, band, power, snr)
        lat, lon = mm.world.frame.to_latlon(mean_w)
        pos = frame.to_enu(lat, lon)  # both frames are east/north-aligned tangent planes a few km apart
        return Method(pos, cov_w, {"frame": "scenario world, converted via lat/lon"})

    return run


def evaluate(
    model: str,
    services: Services,
    output_dir: Path,
    split: str = "test",
    outage: bool = True,
    oracle: bool = True,
    progress: Callable[[str], None] | None = None,
    outage_sessions: int | None = None,
) -> dict[str, Any]:
    """Run every method on `split`, write evaluation.json/.md and plots, return the evaluation.

    `outage_sessions` limits the receiver-outage study to a deterministic subset of the split (the
    first N by session-id hash) because it reruns every method, the oracle included, once per receiver.
    """
    say = progress or (lambda _msg: None)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --output-dir {output_dir}: {exc.strerror or exc}") from None
    onnx_path, split_file, network_file = _model_files(model, services, output_dir)
    loc = OnnxLocalizer(onnx_path)
    network = _network(network_file)
    if list(network.station_ids) != list(loc.station_ids):
        raise EvaluationError(
            f"network.json stations {network.station_ids} differ from the model's {loc.station_ids}"
        )
    datasets = json.loads(loc.metadata.get("datasets", "[]"))
    recorded = _read_json(split_file, "split.json")
    if not isinstance(recorded, dict) or not all(isinstance(v, list) for v in recorded.values()):
        raise EvaluationError(f"split.json {split_file} is not {{split: [session ids]}}")
    if split not in recorded:
        raise EvaluationError(f"split {split!r} not recorded for this model (have {sorted(recorded)})")
    if not recorded[split]:
        raise EvaluationError(f"the {split} split of this model is empty: nothing to evaluate")
    say("loading sessions")
    arrays = load_session_arrays(
        services.db,
        services.store,
        datasets,
        FeatureConfig(),
        services.settings.data_dir / "feature-cache",
        network=network,
    )
    from heimdall.training.runner import apply_split_override

    arrays = apply_split_override(arrays, recorded)
    idx, val, train = arrays.indices(split), arrays.indices("val"), arrays.indices("train")
    truth = arrays.target_enu_m[idx]
    from_iq = loc.input_kind == "iq"

    def model_run(ix: np.ndarray, drop: int | None = None) -> Method:
        """ONNX Runtime on raw inputs, in chunks: a whole split of IQ at once needs many GB in the graph."""
        pos, cov = [], []
        for s in range(0, ix.size, PREDICT_CHUNK):
            x, mask = onnx_inputs_for(services, arrays, ix[s : s + PREDICT_CHUNK], from_iq)
            x, mask = x.numpy(), mask.numpy()
            if drop is not None:
                mask[:, drop] = 0.0
                x[:, drop] = 0.0
            p, c = loc.predict(x, mask)
            pos.append(p)
            cov.append(c)
        return Method(np.concatenate(pos), np.concatenate(cov), {})

    say("model")
    on_val = model_run(val)
    scale = _calibration_scale(on_val.pos, on_val.cov, arrays.target_enu_m[val], arrays.target_sigma_m[val])
    methods: dict[str, Method] = {}
    m = model_run(idx)
    methods[MODEL] = Method(m.pos, m.cov * scale["chosen"], {"covariance_scale": scale})
    say("baselines")
    baselines = {
        "weighted_centroid": WeightedCentroid(),
        "log_distance_nls": LogDistanceNLS(),
        "knn_fingerprint": KNNFingerprint(),
    }
    for name, b in baselines.items():
        b.fit(observations_from_arrays(arrays, train), arrays.target_enu_m[train])
        tuning = b.tune(observations_from_arrays(arrays, val), arrays.target_enu_m[val])
        pos, cov = b.predict(observations_from_arrays(arrays, idx))
        methods[name] = Method(pos, cov, {"tuning": tuning})
    oracle_run = _oracle_for(arrays) if oracle else None
    if oracle_run is not None:
        say("Bayes oracle")
        methods[ORACLE] = oracle_run(idx, None)
    result = _table(methods, arrays, idx)
    if outage:
        say("receiver outage")
        sub = idx
        if outage_sessions is not None and outage_sessions < idx.size:
            scores = np.array([split_score(arrays.session_ids[i]) for i in idx])
            sub = np.sort(idx[np.argsort(scores, kind="stable")[:outage_sessions]])
        result["outage"] = _outage(arrays, sub, model_run, baselines, oracle_run)
        result["outage_n_sessions"] = int(sub.size)
    result.update(
        {
            "model": model,
            "model_id": loc.model_id,
            "split": split,
            "n_sessions": int(idx.size),
            "datasets": datasets,
            "n_train": int(train.size),
            "n_val": int(val.size),
        }
    )
    _write(output_dir, result, methods, arrays, idx, truth)
    return result


def _latlon_errors(arrays: SessionArrays, idx: np.ndarray, pos: np.ndarray) -> np.ndarray:
    lat, lon = arrays.network.frame.to_latlon(pos)
    return errors_m(np.stack([lat, lon], axis=1), arrays.truth_latlon[idx])


def _table(methods: dict[str, Method], arrays: SessionArrays, idx: np.ndarray) -> dict[str, Any]:
    errors = {name: _latlon_errors(arrays, idx, m.pos) for name, m in methods.items()}
    boot = paired_bootstrap(errors, reference=MODEL, seed=0)
    out: dict[str, Any] = {"methods": {}}
    for name, m in methods.items():
        entry: dict[str, Any] = {**error_summary(errors[name]), "bootstrap": boot[name], **m.info}
        if m.cov is not None:
            entry.update(
                uncertainty_summary(m.pos, m.cov, arrays.target_enu_m[idx], arrays.target_sigma_m[idx])
            )
        out["methods"][name] = entry
    out["_errors"] = errors
    return out


def _outage(
    arrays: SessionArrays,
    idx: np.ndarray,
    model_run: Callable[..., Method],
    baselines: dict[str, Any],
    oracle_run: Callable[[np.ndarray, int | None], Method] | None,
) -> dict[str, Any]:
    rows = {}
    for k, sid in enumerate(arrays.network.station_ids):
        row: dict[str, Any] = {"station_name": arrays.network.names[k]}
        runs = {MODEL: model_run(idx, k)}
        for name, b in baselines.items():
            runs[name] = Method(*b.predict(observations_from_arrays(arrays, idx, drop=k)), {})
        if oracle_run is not None:
            runs[ORACLE] = oracle_run(idx, k)
        for name, m in runs.items():
            err = _latlon_errors(arrays, idx, m.pos)
            row[name] = {"rmse_m": float(np.sqrt(np.mean(err**2))), "median_error_m": float(np.median(err))}
        if oracle_run is not None:
            row["model_rmse_over_oracle"] = row[MODEL]["rmse_m"] / row[ORACLE]["rmse_m"]
        rows[str(sid)] = row
    return rows


def _write(
    out: Path,
    result: dict[str, Any],
    methods: dict[str, Method],
    arrays: SessionArrays,
    idx: np.ndarray,
    truth,
) -> None:
    errors = result.pop("_errors")
    plot_error_cdf(errors, out / "error_cdf.png")
    d2 = {
        name: mahalanobis_sq(m.pos, m.cov, truth, arrays.target_sigma_m[idx])
        for name, m in methods.items()
        if m.cov is not None
    }
    plot_calibration(d2, out / "calibration.png")
    best = ORACLE if ORACLE in methods else MODEL
    plot_prediction_map(
        truth,
        methods[MODEL].pos,
        methods[MODEL].cov,
        arrays.network.positions_enu_m(),
        arrays.network.names,
        out / "prediction_map.png",
    )
    result["plots"] = ["error_cdf.png", "calibration.png", "prediction_map.png"]
    result["reference_for_ratios"] = best
    tmp = out / "evaluation.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
    tmp.replace(out / "evaluation.json")
    (out / "evaluation.md").write_text(render_markdown(result))


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def render_markdown(result: dict[str, Any]) -> str:
    """The evaluation as a table a person reads: methods × metrics, intervals, calibration, outage."""
    methods = result["methods"]
    lines = [
        f"# Evaluation of model `{result['model_id']}` on the {result['split']} split",
        "",
        f"{result['n_sessions']} sessions of {', '.join(result['datasets'])} "
        f"(baselines fitted on {result['n_train']} train sessions, "
        f"tuned on {result['n_val']} validation sessions).",
        "",
        "| method | RMSE (m) [95 % CI] | median (m) | mean (m) | p68 (m) | p90 (m) | p95 (m) "
        "| 1σ cov. | 2σ cov. | 95 % cov. | NLL | 95 % area (km²) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        ci = m["bootstrap"]["rmse_m"]
        cov = [
            f"{m[k]:.3f}" if k in m else "–" for k in ("coverage_1sigma", "coverage_2sigma", "coverage_95")
        ]
        extra = [
            f"{m['nll']:.2f}" if "nll" in m else "–",
            _fmt(m["mean_ellipse_area_km2"]) if "nll" in m else "–",
        ]
        lines.append(
            f"| {name} | {_fmt(m['rmse_m'])} [{_fmt(ci['ci95_low'])}–{_fmt(ci['ci95_high'])}] | "
            + " | ".join(
                _fmt(m[k])
                for k in ("median_error_m", "mean_error_m", "p68_error_m", "p90_error_m", "p95_error_m")
            )
            + " | "
            + " | ".join(cov + extra)
            + " |"
        )
    lines += ["", "Calibrated 2-D Gaussian: 1σ 0.393, 2σ 0.865, 95 % 0.950.", ""]
    if "covariance_scale" in methods.get(MODEL, {}):
        lines.append(
            f"Model covariance scale fitted on validation: {methods[MODEL]['covariance_scale']['chosen']}."
        )
    for name, m in methods.items():
        if "tuning" in m:
            lines.append(f"- {name}: chosen {m['tuning'].get('chosen')} from grid {m['tuning'].get('grid')}")
    if ORACLE in methods:
        o = methods[ORACLE]
        lines += [
            "",
            f"Model / oracle: RMSE ×{methods[MODEL]['rmse_m'] / o['rmse_m']:.3f}, "
            f"median ×{methods[MODEL]['median_error_m'] / o['median_error_m']:.3f}.",
        ]
    if "outage" in result:
        names = [n for n in methods]
        n_out = result.get("outage_n_sessions", result["n_sessions"])
        lines += [
            "",
            f"## Receiver outage (RMSE in m, {n_out} sessions, receiver removed at test time, no retraining)",
            "",
        ]
        lines.append(
            "| removed | " + " | ".join(names) + (" | model / oracle |" if ORACLE in methods else " |")
        )
        lines.append("|---|" + "---|" * (len(names) + (1 if ORACLE in methods else 0)))
        for sid, row in result["outage"].items():
            cells = [_fmt(row[n]["rmse_m"]) for n in names]
            ratio = [f"{row['model_rmse_over_oracle']:.3f}"] if ORACLE in methods else []
            lines.append(f"| {sid} {row['station_name']} | " + " | ".join(cells + ratio) + " |")
    lines.append("")
    return "\n".join(lines)
