"""`heimdall evaluate`: the model against classical baselines and the Bayes oracle on one split.

Every method sees the same held-out sessions. Baselines are fitted on train and tuned on
validation only; the model's covariance scale is fitted on validation too (so test coverage is
honest); the oracle is available for simulated scenarios only (the scenario stored with the sessions,
or a user's file with the same content hash). Outage removes each receiver in turn at test time, for
every method, without retraining, on the sessions still heard by ≥ `min_receivers_heard` of the
remaining receivers (the simulator's keep rule): sessions kept only thanks to the removed receiver are
outside the distribution the oracle conditions on, so the oracle stays a floor there. Each row says how
many sessions it used and carries every method's paired-bootstrap RMSE difference to the oracle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.data.arrays import SessionArrays, load_session_arrays
from heimdall.data.network import ReceiverNetwork
from heimdall.data.recordings import arrays_frequencies, arrays_power, arrays_recordings
from heimdall.data.splits import apply_split_override, split_score
from heimdall.errors import PathNotFoundError, UserError
from heimdall.evaluate.intervals import paired_bootstrap
from heimdall.evaluate.localizers import (
    Localizer,
    OnnxModelLocalizer,
    classical_localizers,
)
from heimdall.evaluate.metrics import error_summary, errors_m, mahalanobis_sq, uncertainty_summary
from heimdall.evaluate.oracle_cache import OracleCache
from heimdall.evaluate.oracle_localizer import BayesOracleLocalizer
from heimdall.evaluate.outage import DEFAULT_MIN_HEARD, outage_study
from heimdall.evaluate.plots import plot_calibration, plot_error_cdf, plot_session_maps
from heimdall.evaluate.report import EvaluationReport
from heimdall.inference.inputs import batch_inputs
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.services import Services

if TYPE_CHECKING:
    from heimdall.simulate.scenario import Scenario

log = logging.getLogger("heimdall.evaluate")

MODEL = "model"
ORACLE = BayesOracleLocalizer.name
STAGES = {MODEL: "model", ORACLE: "Bayes oracle"}  # progress messages; every other method is a baseline


class EvaluationError(UserError):
    """The model and the data cannot be evaluated together (empty split, mismatched receivers...)."""


@dataclass
class Method:
    """Positions (world-independent: the model's ENU frame) and optional covariances for the split."""

    pos: np.ndarray
    cov: np.ndarray | None
    info: dict[str, Any]


@dataclass(frozen=True)
class ModelFiles:
    """A model resolved to local files: its model.onnx and the split.json/network.json of its run.

    ``label`` is how the model was named (a folder, a model.onnx path, ``models:/…``); it is recorded in
    the evaluation. Resolving an MLflow model to these files is the application's job
    (:mod:`heimdall.jobs.evaluate`); :meth:`local` handles a training output folder or its model.onnx.
    """

    onnx: Path
    split: Path
    network: Path
    label: str

    @classmethod
    def beside(cls, onnx_path: Path, label: str) -> ModelFiles:
        """model.onnx with the split.json and network.json next to it (EvaluationError if one is missing)."""
        split, network = onnx_path.parent / "split.json", onnx_path.parent / "network.json"
        for f in (split, network):
            if not f.is_file():
                raise EvaluationError(f"{f.name} of model {label} not found beside {onnx_path}")
        return cls(onnx_path, split, network, label)

    @classmethod
    def local(cls, model: str | Path) -> ModelFiles:
        """A training output folder (its model.onnx) or a model.onnx path on this machine."""
        path = Path(model).expanduser()
        onnx_path = path / "model.onnx" if path.is_dir() else path
        if not onnx_path.is_file():
            raise PathNotFoundError(f"model {model} does not exist (give a model.onnx or its folder)")
        return cls.beside(onnx_path, str(model))


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


def evaluate(
    model: ModelFiles | str | Path,
    services: Services,
    output_dir: Path,
    split: str = "test",
    outage: bool = True,
    oracle: bool = True,
    progress: Callable[[str], None] | None = None,
    outage_sessions: int | None = None,
    scenario: Scenario | None = None,
) -> EvaluationReport:
    """Run every method on `split`, write evaluation.json/.md and plots, return the evaluation.

    `model` is a resolved :class:`ModelFiles`, or a local training output folder / model.onnx path
    (:meth:`ModelFiles.local`); MLflow models are resolved by :func:`heimdall.jobs.evaluate.evaluate`.
    `outage_sessions` limits the receiver-outage study to a deterministic subset of the split (the
    first N by session-id hash) because it reruns every method, the oracle included, once per receiver.
    `scenario` (a user's scenario file) runs the oracle for it, refused unless the sessions recorded its
    content hash.
    """
    say = progress or (lambda _msg: None)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --output-dir {output_dir}: {exc.strerror or exc}") from None
    files = model if isinstance(model, ModelFiles) else ModelFiles.local(model)
    onnx_path, split_file, network_file = files.onnx, files.split, files.network
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
        loc.feature_config(),  # the model's own (a power-only model reads these scalars)
        services.settings.data_dir / "feature-cache",
        network=network,
        split_warnings=False,  # the recorded split replaces this one
        store_root=services.settings.data_dir / "array-store",
    )
    arrays = apply_split_override(arrays, recorded)
    idx, val, train = arrays.indices(split), arrays.indices("val"), arrays.indices("train")
    truth = arrays.target_enu_m[idx]
    from_iq = loc.input_kind == "iq"
    spec = loc.input_spec(features=False)  # power-only models read the arrays' own scalar rows

    def model_inputs(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's raw inputs for sessions `chunk` of the arrays (IQ from the store, or power rows),
        with each session's carrier (NaN = unknown), as training's parity check builds them."""
        if from_iq:
            recordings = arrays_recordings(services.db, services.store, arrays, chunk)
            x, mask = batch_inputs(spec, recordings=recordings)
        else:
            x, mask = batch_inputs(spec, power=arrays_power(arrays, chunk))
        return x, mask, arrays_frequencies(arrays, chunk)

    localizers: list[Localizer] = [OnnxModelLocalizer(loc, model_inputs, name=MODEL), *classical_localizers()]
    bayes = BayesOracleLocalizer.for_arrays(arrays, scenario) if oracle else None
    if bayes is not None:
        bayes.cache = OracleCache(services.settings.data_dir / "oracle-cache")
        localizers.append(bayes)
    methods: dict[str, Method] = {}
    said: set[str] = set()
    for method in localizers:
        stage = STAGES.get(method.name, "baselines")
        if stage not in said:
            say(stage)
            said.add(stage)
        method.fit(arrays, train)
        tuning = method.tune(arrays, val)
        pos, cov = method.predict(arrays, idx)
        methods[method.name] = Method(pos, cov, method.report(tuning))
    result = _table(methods, arrays, idx)
    if outage:
        say("receiver outage")
        sub = idx
        if outage_sessions is not None and outage_sessions < idx.size:
            scores = np.array([split_score(arrays.session_ids[i]) for i in idx])
            sub = np.sort(idx[np.argsort(scores, kind="stable")[:outage_sessions]])
        min_heard = bayes.mm.min_receivers_heard if bayes is not None else DEFAULT_MIN_HEARD
        result["outage"], result["outage_sessions_used"] = outage_study(
            arrays, sub, localizers, min_heard, _latlon_errors, MODEL, ORACLE
        )
        result["outage_n_sessions"] = int(sub.size)
        result["outage_min_receivers_heard"] = min_heard
    result.update(
        {
            "model": files.label,
            "model_id": loc.model_id,
            "split": split,
            "n_sessions": int(idx.size),
            "datasets": datasets,
            "n_train": int(train.size),
            "n_val": int(val.size),
        }
    )
    return _write(output_dir, result, methods, arrays, idx, truth)


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


def _write(
    out: Path,
    result: dict[str, Any],
    methods: dict[str, Method],
    arrays: SessionArrays,
    idx: np.ndarray,
    truth,
) -> EvaluationReport:
    errors = result.pop("_errors")
    plot_error_cdf(errors, out / "error_cdf.png")
    d2 = {
        name: mahalanobis_sq(m.pos, m.cov, truth, arrays.target_sigma_m[idx])
        for name, m in methods.items()
        if m.cov is not None
    }
    plot_calibration(d2, out / "calibration.png")
    best = ORACLE if ORACLE in methods else MODEL
    # one readable map per session (the first few of the split, every method on each), in lat/lon
    maps = plot_session_maps(out, arrays, idx, {name: (m.pos, m.cov) for name, m in methods.items()})
    result["plots"] = ["error_cdf.png", "calibration.png", *maps]
    result["reference_for_ratios"] = best
    # through JSON once so numpy scalars are plain numbers, exactly as evaluation.json holds them
    report = EvaluationReport.model_validate(json.loads(json.dumps(result, default=float)))
    tmp = out / "evaluation.json.tmp"
    tmp.write_text(json.dumps(report.as_json(), indent=2, sort_keys=True, default=float))
    tmp.replace(out / "evaluation.json")
    (out / "evaluation.md").write_text(render_markdown(report))
    return report


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def render_markdown(result: EvaluationReport) -> str:
    """The evaluation as a table a person reads: methods × metrics, intervals, calibration, outage."""
    methods = result.methods
    lines = [
        f"# Evaluation of model `{result.model_id}` on the {result.split} split",
        "",
        f"{result.n_sessions} sessions of {', '.join(result.datasets)} "
        f"(baselines fitted on {result.n_train} train sessions, "
        f"tuned on {result.n_val} validation sessions).",
        "",
        "| method | RMSE (m) [95 % CI] | median (m) | mean (m) | p68 (m) | p90 (m) | p95 (m) "
        "| 1σ cov. | 2σ cov. | 95 % cov. | NLL | 95 % area (km²) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        ci = m.bootstrap["rmse_m"]
        coverages = (m.coverage_1sigma, m.coverage_2sigma, m.coverage_95)
        cov = [f"{v:.3f}" if v is not None else "–" for v in coverages]
        area = m.mean_ellipse_area_km2
        extra = [
            f"{m.nll:.2f}" if m.nll is not None else "–",
            _fmt(area) if m.nll is not None and area is not None else "–",
        ]
        lines.append(
            f"| {name} | {_fmt(m.rmse_m)} [{_fmt(ci.ci95_low)}–{_fmt(ci.ci95_high)}] | "
            + " | ".join(
                _fmt(v)
                for v in (m.median_error_m, m.mean_error_m, m.p68_error_m, m.p90_error_m, m.p95_error_m)
            )
            + " | "
            + " | ".join(cov + extra)
            + " |"
        )
    lines += ["", "Calibrated 2-D Gaussian: 1σ 0.393, 2σ 0.865, 95 % 0.950.", ""]
    if MODEL in methods and methods[MODEL].covariance_scale is not None:
        lines.append(
            f"Model covariance scale fitted on validation: {methods[MODEL].covariance_scale['chosen']}."
        )
    for name, m in methods.items():
        if m.tuning is not None:
            lines.append(f"- {name}: chosen {m.tuning.get('chosen')} from grid {m.tuning.get('grid')}")
    if ORACLE in methods:
        o = methods[ORACLE]
        lines += [
            "",
            f"Model / oracle: RMSE ×{methods[MODEL].rmse_m / o.rmse_m:.3f}, "
            f"median ×{methods[MODEL].median_error_m / o.median_error_m:.3f}.",
        ]
    if result.outage is not None:
        names = [n for n in methods]
        n_out = result.outage_n_sessions if result.outage_n_sessions is not None else result.n_sessions
        used = getattr(result, "outage_sessions_used", None) or {}
        min_heard = getattr(result, "outage_min_receivers_heard", None) or DEFAULT_MIN_HEARD
        lines += [
            "",
            f"## Receiver outage (RMSE in m, of {n_out} sessions those still heard by ≥ {min_heard} of the "
            "remaining receivers; receiver removed at test time, no retraining)",
            "",
        ]
        lines.append(
            "| removed | sessions | "
            + " | ".join(names)
            + (" | model / oracle |" if ORACLE in methods else " |")
        )
        lines.append("|---|---|" + "---|" * (len(names) + (1 if ORACLE in methods else 0)))
        beaten = []
        for sid, row in result.outage.items():
            figures = row.methods
            cells = [_fmt(figures[n].rmse_m) if n in figures else "–" for n in names]
            ratio = row.model_rmse_over_oracle
            extra = [f"{ratio:.3f}" if ratio is not None else "–"] if ORACLE in methods else []
            lines.append(
                f"| {sid} {row.station_name} | {used.get(sid, '–')} | " + " | ".join(cells + extra) + " |"
            )
            for n, fig in figures.items():
                diff = getattr(fig, "rmse_vs_oracle", None)
                if diff is not None and diff["ci95_high"] < 0.0:
                    beaten.append(f"{n} without {sid}")
        if ORACLE in methods:
            lines += [
                "",
                "Oracle check (paired bootstrap): rows where a method's RMSE is below the oracle's beyond "
                f"sampling noise: {', '.join(beaten) or 'none'}.",
            ]
    lines.append("")
    return "\n".join(lines)
