"""Classical baselines a user would otherwise pick, tuned on the validation split only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WEIGHT_EXPONENTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def weighted_centroid(
    receivers_enu: np.ndarray, power_dbm: np.ndarray, heard: np.ndarray, exponent: float
) -> np.ndarray:
    """Centroid of the receivers that heard, weighted by linear received power ** exponent.

    Exponent 0 is the plain centroid of hearing receivers, 1 weights by power in mW; computed in
    dB (w = 10^(exponent·(P − max P)/10)) so no weight underflows.
    """
    top = np.max(np.where(heard, power_dbm, -np.inf), axis=1, keepdims=True)
    rel = np.where(heard, power_dbm - top, 0.0)
    w = np.where(heard, 10.0 ** (exponent * rel / 10.0), 0.0)
    w_sum = w.sum(axis=1, keepdims=True)
    if np.any(w_sum <= 0):
        raise ValueError("weighted centroid needs at least one hearing receiver per session")
    return (w @ receivers_enu) / w_sum


@dataclass(frozen=True)
class TunedWeightedCentroid:
    exponent: float
    grid: tuple[float, ...]
    val_rmse_m: tuple[float, ...]

    def predict(self, receivers_enu: np.ndarray, power_dbm: np.ndarray, heard: np.ndarray) -> np.ndarray:
        return weighted_centroid(receivers_enu, power_dbm, heard, self.exponent)


def tune_weighted_centroid(
    receivers_enu: np.ndarray,
    power_dbm: np.ndarray,
    heard: np.ndarray,
    truth_enu: np.ndarray,
    grid: Sequence[float] = WEIGHT_EXPONENTS,
) -> TunedWeightedCentroid:
    """Pick the exponent with the lowest RMSE on the given (validation) sessions."""
    rmse = []
    for g in grid:
        err = np.linalg.norm(weighted_centroid(receivers_enu, power_dbm, heard, g) - truth_enu, axis=1)
        rmse.append(float(np.sqrt(np.mean(err**2))))
    best = int(np.argmin(rmse))
    return TunedWeightedCentroid(float(grid[best]), tuple(float(g) for g in grid), tuple(rmse))
