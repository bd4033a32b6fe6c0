"""The one interface every localisation method implements, so `evaluate` runs a list of them.

A :class:`Localizer` is fitted on the training split, tuned on the validation split only, then
predicts positions (in the network's ENU frame, metres) and, where it has them, 2×2 covariances for
any sessions, optionally with one receiver removed (the outage study). Implementations:

* :class:`OnnxModelLocalizer` — the shipped network (an already-loaded ONNX model): nothing to fit or
  tune; its covariance carries the scale fitted on validation at training (:func:`calibration_scale`),
  so the evaluation measures exactly what ships (a re-tuned scale is reported as a diagnostic only);
* :class:`BaselineLocalizer` — a classical method of :mod:`heimdall.evaluate.classical` (weighted
  centroid, log-distance NLS, kNN fingerprinting) on the rows' measured powers;
The Bayes oracle (the yardstick for simulated data) lives in :mod:`heimdall.evaluate.oracle_localizer`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from heimdall.data.arrays import SessionArrays
from heimdall.evaluate.classical import (
    KNNFingerprint,
    LogDistanceNLS,
    PowerObservations,
    WeightedCentroid,
    observations_from_arrays,
)
from heimdall.evaluate.metrics import uncertainty_summary

if TYPE_CHECKING:
    from heimdall.inference.localizer import OnnxLocalizer

baseline_log = logging.getLogger("heimdall.evaluate.baselines")

__all__ = [
    "CALIBRATION_GRID",
    "PREDICT_CHUNK",
    "BaselineLocalizer",
    "Localizer",
    "OnnxModelLocalizer",
    "Prediction",
    "calibration_scale",
    "classical_localizers",
]

#: positions (N, 2) in metres, covariances (N, 2, 2) in m² or None for a method without uncertainty
Prediction = tuple[np.ndarray, np.ndarray | None]
PREDICT_CHUNK = 128
CALIBRATION_GRID = tuple(float(x) for x in np.round(np.geomspace(0.25, 16.0, 49), 4))
#: coverage of the 1σ and 2σ ellipses of a calibrated 2-D Gaussian: 1 − exp(−k²/2)
COVERAGE_1SIGMA = 1.0 - math.exp(-0.5)
COVERAGE_2SIGMA = 1.0 - math.exp(-2.0)


@runtime_checkable
class Localizer(Protocol):
    """A localisation method: fit on train, tune on validation, predict position + covariance."""

    #: the method's name in the evaluation tables (``model``, ``weighted_centroid``, …)
    name: str

    def fit(self, arrays: SessionArrays, train_idx: np.ndarray) -> None:
        """Learn from the sessions `train_idx` of `arrays` (their positions are known)."""

    def tune(self, arrays: SessionArrays, val_idx: np.ndarray) -> dict[str, Any]:
        """Choose hyper-parameters on the validation sessions; the chosen values (+ the grid searched)."""

    def predict(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> Prediction:
        """Positions (N, 2) and covariances (N, 2, 2) or None; `drop` removes that receiver (index)."""

    def report(self, tuning: dict[str, Any]) -> dict[str, Any]:
        """What the evaluation records about the method beside its metrics (e.g. ``{"tuning": …}``)."""


def calibration_scale(
    pos: np.ndarray, cov: np.ndarray, truth: np.ndarray, sigma: np.ndarray
) -> dict[str, Any]:
    """The covariance multiplier whose validation 1σ/2σ coverage is closest to a calibrated Gaussian's.

    Criterion: the smallest ``(c₁ − 0.393)² + (c₂ − 0.865)²`` over the grid, where c₁, c₂ are the
    fractions of validation truths inside the 1σ and 2σ ellipses (39.3 % and 86.5 % for a calibrated
    2-D Gaussian); ties (coverage moves in steps of 1/n) go to the lower NLL. Why not the NLL alone: the
    errors have heavier tails than a Gaussian, and the NLL-optimal scale widens every ellipse to pay for
    the tail, over-covering the 1σ ellipse users read (measured on nw-italy-v2: 48 % instead of 39 %).
    ``on_grid_edge`` is true when the choice is the grid's first or last value: the optimum may lie
    outside, and the caller says so. Used by training (the scale that ships) and by ``evaluate`` (the
    re-tuning diagnostic), so both choose alike.
    """
    summaries = [uncertainty_summary(pos, cov * s, truth, sigma) for s in CALIBRATION_GRID]
    nll = [u["nll"] for u in summaries]
    miss = [
        round(
            (u["coverage_1sigma"] - COVERAGE_1SIGMA) ** 2 + (u["coverage_2sigma"] - COVERAGE_2SIGMA) ** 2,
            12,
        )
        for u in summaries
    ]
    best = min(range(len(CALIBRATION_GRID)), key=lambda i: (miss[i], nll[i]))
    return {
        "criterion": "1σ/2σ coverage closest to 39.3 %/86.5 % on validation; ties by NLL",
        "grid": list(CALIBRATION_GRID),
        "val_coverage_miss": [round(x, 8) for x in miss],
        "val_nll": [round(x, 5) for x in nll],
        "chosen": CALIBRATION_GRID[best],
        "val_coverage_1sigma": round(summaries[best]["coverage_1sigma"], 5),
        "val_coverage_2sigma": round(summaries[best]["coverage_2sigma"], 5),
        "on_grid_edge": best in (0, len(CALIBRATION_GRID) - 1),
        "n_sessions": len(pos),
    }


class OnnxModelLocalizer:
    """The network as a Localizer: an already-loaded :class:`~heimdall.inference.localizer.OnnxLocalizer`.

    `inputs` gives the model's raw inputs ``(x (B, R, …), receiver_mask (B, R)[, frequency_hz (B,)])`` for
    session indices of the evaluated arrays; they are built and run in chunks of `chunk` sessions (a
    whole split of IQ at once needs many GB in the graph). Nothing is fitted and nothing is tuned: the
    covariances are the model's calibrated ones, as ``predict`` and the inference service return them.
    `tune` only reports the shipped scale and, as a diagnostic, the extra factor re-tuning on this
    validation split would choose (≈ 1 for a model whose calibration still holds).
    """

    def __init__(
        self,
        localizer: OnnxLocalizer,
        inputs: Callable[[np.ndarray], tuple[np.ndarray, ...]],
        name: str = "model",
        chunk: int = PREDICT_CHUNK,
    ) -> None:
        self.localizer = localizer
        self.inputs = inputs
        self.name = name
        self.chunk = chunk

    def fit(self, arrays: SessionArrays, train_idx: np.ndarray) -> None:
        """Nothing to fit: the network was trained already."""

    def _raw(self, idx: np.ndarray, drop: int | None) -> tuple[np.ndarray, np.ndarray]:
        pos, cov = [], []
        for s in range(0, idx.size, self.chunk):
            x, mask, *carrier = self.inputs(idx[s : s + self.chunk])  # [frequency_hz (B,)] when given
            if drop is not None:
                mask[:, drop] = 0.0
                x[:, drop] = 0.0
            p, c = self.localizer.predict(x, mask, *carrier)
            pos.append(p)
            cov.append(c)
        return np.concatenate(pos), np.concatenate(cov)

    def tune(self, arrays: SessionArrays, val_idx: np.ndarray) -> dict[str, Any]:
        """The shipped calibration (``chosen``, as fitted at training) and the re-tuning diagnostic."""
        shipped = dict(getattr(self.localizer, "calibration", {}) or {})
        scale = float(getattr(self.localizer, "covariance_scale", 1.0))
        out: dict[str, Any] = {
            "chosen": scale,
            "source": "shipped with the model" if shipped.get("fitted_on") else "none shipped (scale 1)",
            "fitted_on": shipped.get("fitted_on"),
            "grid": list(shipped.get("grid") or CALIBRATION_GRID),
            "on_grid_edge": bool(shipped.get("on_grid_edge", False)),
        }
        if val_idx.size:
            pos, cov = self._raw(val_idx, None)
            truth, sigma = arrays.target_enu_m[val_idx], arrays.target_sigma_m[val_idx]
            retuned = calibration_scale(pos, cov, truth, sigma)
            out["retuned_diagnostic"] = {
                "extra_factor": retuned["chosen"],
                "would_be": round(scale * retuned["chosen"], 6),
                "on_grid_edge": retuned["on_grid_edge"],
                "val_nll_shipped": round(uncertainty_summary(pos, cov, truth, sigma)["nll"], 5),
                "val_nll_retuned": retuned["val_nll"][retuned["grid"].index(retuned["chosen"])],
                "note": "not applied: the model row is the shipped model",
            }
        return out

    def predict(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> Prediction:
        return self._raw(idx, drop)

    def report(self, tuning: dict[str, Any]) -> dict[str, Any]:
        return {"covariance_scale": tuning}


Baseline = WeightedCentroid | LogDistanceNLS | KNNFingerprint


class BaselineLocalizer:
    """A classical method (fitted and tuned on power observations) as a Localizer over session arrays."""

    def __init__(self, name: str, method: Baseline) -> None:
        self.name = name
        self.method = method

    @staticmethod
    def observations(arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> PowerObservations:
        return observations_from_arrays(arrays, idx, drop=drop)

    def fit(self, arrays: SessionArrays, train_idx: np.ndarray) -> None:
        self.method.fit(self.observations(arrays, train_idx), arrays.target_enu_m[train_idx])

    def tune(self, arrays: SessionArrays, val_idx: np.ndarray) -> dict[str, Any]:
        """Tune on validation; a parameter chosen on its grid's edge is logged as a warning."""
        tuning = self.method.tune(self.observations(arrays, val_idx), arrays.target_enu_m[val_idx])
        for line in tuning.get("on_grid_edge", []):
            baseline_log.warning("%s: %s; widen the grid", self.name, line)
        return tuning

    def predict(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> Prediction:
        return self.method.predict(self.observations(arrays, idx, drop))

    def report(self, tuning: dict[str, Any]) -> dict[str, Any]:
        return {"tuning": tuning}


def classical_localizers() -> list[BaselineLocalizer]:
    """The classical baselines, in the order of the evaluation tables."""
    return [
        BaselineLocalizer("weighted_centroid", WeightedCentroid()),
        BaselineLocalizer("log_distance_nls", LogDistanceNLS()),
        BaselineLocalizer("knn_fingerprint", KNNFingerprint()),
    ]
