"""The one interface every localisation method implements, so `evaluate` runs a list of them.

A :class:`Localizer` is fitted on the training split, tuned on the validation split only, then
predicts positions (in the network's ENU frame, metres) and, where it has them, 2×2 covariances for
any sessions, optionally with one receiver removed (the outage study). Implementations:

* :class:`OnnxModelLocalizer` — the shipped network (an already-loaded ONNX model): nothing to fit, its
  covariance scale tuned on validation NLL;
* :class:`BaselineLocalizer` — a classical method of :mod:`heimdall.evaluate.classical` (weighted
  centroid, log-distance NLS, kNN fingerprinting) on the rows' measured powers;
* :class:`BayesOracleLocalizer` — the yardstick for simulated data: the exact posterior of the simulator's
  own measurement model (nothing fitted or tuned).
"""

from __future__ import annotations

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

__all__ = [
    "CALIBRATION_GRID",
    "PREDICT_CHUNK",
    "BaselineLocalizer",
    "BayesOracleLocalizer",
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
    """The covariance multiplier with the lowest validation NLL (grid printed with the result)."""
    nll = [uncertainty_summary(pos, cov * s, truth, sigma)["nll"] for s in CALIBRATION_GRID]
    best = int(np.argmin(nll))
    return {
        "grid": list(CALIBRATION_GRID),
        "val_nll": [round(x, 5) for x in nll],
        "chosen": CALIBRATION_GRID[best],
    }


class OnnxModelLocalizer:
    """The network as a Localizer: an already-loaded :class:`~heimdall.inference.localizer.OnnxLocalizer`.

    `inputs` gives the model's raw inputs ``(x (B, R, …), receiver_mask (B, R))`` as numpy arrays for
    session indices of the evaluated arrays; they are built and run in chunks of `chunk` sessions (a
    whole split of IQ at once needs many GB in the graph). Nothing is fitted; `tune` picks the
    covariance scale with the lowest validation NLL, applied to every later prediction.
    """

    def __init__(
        self,
        localizer: OnnxLocalizer,
        inputs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        name: str = "model",
        chunk: int = PREDICT_CHUNK,
    ) -> None:
        self.localizer = localizer
        self.inputs = inputs
        self.name = name
        self.chunk = chunk
        self.scale = 1.0

    def fit(self, arrays: SessionArrays, train_idx: np.ndarray) -> None:
        """Nothing to fit: the network was trained already."""

    def _raw(self, idx: np.ndarray, drop: int | None) -> tuple[np.ndarray, np.ndarray]:
        pos, cov = [], []
        for s in range(0, idx.size, self.chunk):
            x, mask = self.inputs(idx[s : s + self.chunk])
            if drop is not None:
                mask[:, drop] = 0.0
                x[:, drop] = 0.0
            p, c = self.localizer.predict(x, mask)
            pos.append(p)
            cov.append(c)
        return np.concatenate(pos), np.concatenate(cov)

    def tune(self, arrays: SessionArrays, val_idx: np.ndarray) -> dict[str, Any]:
        pos, cov = self._raw(val_idx, None)
        chosen = calibration_scale(pos, cov, arrays.target_enu_m[val_idx], arrays.target_sigma_m[val_idx])
        self.scale = chosen["chosen"]
        return chosen

    def predict(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> Prediction:
        pos, cov = self._raw(idx, drop)
        return pos, cov * self.scale

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
        return self.method.tune(self.observations(arrays, val_idx), arrays.target_enu_m[val_idx])

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


class BayesOracleLocalizer:
    """The Bayes oracle of a simulated scenario: the posterior under the simulator's own model.

    A yardstick, not a competitor: it knows the world that generated the data, so nothing is fitted
    or tuned. Its positions are converted from the scenario's frame to the network's via lat/lon.
    """

    name = "bayes_oracle"

    def __init__(self, scenario: str, arrays: SessionArrays) -> None:
        from heimdall.simulate.propagation import measurement_model
        from heimdall.simulate.scenario import load_scenario
        from heimdall.simulate.world import build_world

        self.mm = measurement_model(build_world(load_scenario(scenario)))
        self.order = [arrays.network.index()[sid] for sid in self.mm.receiver_ids]

    @classmethod
    def for_arrays(cls, arrays: SessionArrays) -> BayesOracleLocalizer | None:
        """The oracle when every dataset is a simulation of one shipped/known scenario, else None."""
        labels = {str(d) for d in arrays.datasets}
        names = {d.split(":")[1] for d in labels if d.startswith("sim:") and d.count(":") >= 1}
        if len(names) != 1 or not all(d.startswith("sim:") for d in labels):
            return None
        return cls(names.pop(), arrays)

    def fit(self, arrays: SessionArrays, train_idx: np.ndarray) -> None:
        """Nothing to fit: the oracle knows the measurement model."""

    def tune(self, arrays: SessionArrays, val_idx: np.ndarray) -> dict[str, Any]:
        return {}

    def predict(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> Prediction:
        from heimdall.evaluate.oracle import bayes_oracle

        mm, order = self.mm, self.order
        power = arrays.row_power_db[idx][:, order].copy()
        snr = arrays.row_snr_db[idx][:, order].copy()
        if drop is not None:
            k = order.index(drop)
            power[:, k] = snr[:, k] = np.nan
        band = np.array([mm.band_index(f) for f in arrays.frequency_hz[idx]])
        mean_w, cov_w = bayes_oracle(mm, band, power, snr)
        lat, lon = mm.world.frame.to_latlon(mean_w)
        pos = arrays.network.frame.to_enu(lat, lon)  # both frames: east/north-aligned tangent planes
        return pos, cov_w

    def report(self, tuning: dict[str, Any]) -> dict[str, Any]:
        return {"frame": "scenario world, converted via lat/lon"}
