"""Choose how the residual field is learnt, on validation only, and build the shipped map.

Candidates: the physics-only map (default law, no field: what a network without labels must equal),
the fitted path-loss law without a field, and fields of a few kernel widths and shrinkages, each
with a transmit-power prior as wide as the training sessions' spread or three times wider (labelled
data from a few fixed sites say little about other transmitters' powers). Kernel widths are in
units of the grid cell, so the same candidates make sense for a 200 km network and a 4 km campus.
The candidate with the lowest validation RMSE wins; ties go to the earlier (simpler) one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from heimdall.model import predict_arrays
from heimdall.radiomap.fit import FieldSettings, Grid, RadioMap, fit_radio_map, physics_only
from heimdall.radiomap.localizer import RadioMapLocalizer
from heimdall.radiomap.observations import observe

#: kernel σ in grid cells, and pseudo-samples of shrinkage, tried on validation
BANDWIDTH_CELLS: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
SHRINKAGES: tuple[float, ...] = (0.25, 1.0, 4.0)
CROSS_BAND = 0.5
#: the transmit-power prior's σ in units of the training sessions' spread (wider: robust to other powers)
POWER_PRIOR_SCALES: tuple[float, ...] = (1.0, 3.0)

__all__ = ["MapChoice", "fit_on_train", "predict"]


@dataclass
class MapChoice:
    """The chosen map, its localizer and what every candidate scored on validation."""

    radio_map: RadioMap
    localizer: RadioMapLocalizer
    val_rmse_m: float
    val_positions: np.ndarray
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        chosen = min(self.candidates, key=lambda c: c["val_rmse_m"]) if self.candidates else None
        return {
            "chosen": chosen,
            "val_rmse_m": self.val_rmse_m,
            "candidates": self.candidates,
            "grid": {
                "cells": self.radio_map.grid.nx * self.radio_map.grid.ny,
                "cell_m": self.radio_map.grid.cell,
            },
            "exponent": self.radio_map.exponent.tolist(),
            "sigma_db": self.radio_map.sigma_db.tolist(),
        }


def predict(
    loc: torch.nn.Module,
    scalars: np.ndarray,
    mask: np.ndarray,
    frequency_hz: np.ndarray,
    batch: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 2) and covariances (N, 2, 2) of standardised scalars (numpy), in float64 metres."""
    n = scalars.shape[0]
    return predict_arrays(
        loc,
        torch.zeros(n, 1),  # a radio map reads no spectrogram
        torch.from_numpy(np.ascontiguousarray(scalars, np.float32)),
        torch.from_numpy(np.ascontiguousarray(mask)),
        torch.from_numpy(np.asarray(frequency_hz, np.float32)),
        batch=batch,
    )


def _rmse(pos: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((pos - truth) ** 2, axis=1))))


def fit_on_train(
    train_scalars_raw: np.ndarray,
    train_mask: np.ndarray,
    train_receivers_enu: np.ndarray,
    train_truth: np.ndarray,
    train_frequency: np.ndarray,
    val_scalars_std: np.ndarray,
    val_mask: np.ndarray,
    val_frequency: np.ndarray,
    val_truth: np.ndarray,
    receivers_enu: np.ndarray,
    scalar_mean: np.ndarray,
    scalar_std: np.ndarray,
    bandwidth_cells: Sequence[float] = BANDWIDTH_CELLS,
    shrinkages: Sequence[float] = SHRINKAGES,
) -> MapChoice:
    """Fit every candidate on train, score it on validation, return the best (physics-only included)."""
    finite_snr = np.isfinite(train_scalars_raw[..., 2][train_mask.astype(bool)])
    has_snr = bool(finite_snr.any())
    obs = observe(train_scalars_raw, train_mask, train_receivers_enu, has_snr)
    # the area: where training transmitters were and where the receivers are (fixed sites cover little)
    area = np.vstack([train_truth, receivers_enu])
    grid = Grid.covering(area)
    candidates: list[tuple[RadioMap, dict[str, Any]]] = [
        (physics_only(receivers_enu, area, has_snr), {"law": "defaults", "field": "none"})
    ]
    for ps in POWER_PRIOR_SCALES:
        law = FieldSettings(bandwidth_m=grid.cell, shrinkage=math.inf, power_prior_scale=ps)
        m = fit_radio_map(obs, train_truth, train_frequency, law, has_snr, grid)
        candidates.append((m, {"law": "fitted", "field": "none", "power_prior_scale": ps}))
        for bw in sorted(bandwidth_cells, reverse=True):
            for sh in shrinkages:
                settings = FieldSettings(bw * grid.cell, sh, CROSS_BAND, ps)
                m = fit_radio_map(obs, train_truth, train_frequency, settings, has_snr, grid)
                row = {"law": "fitted", "bandwidth_m": settings.bandwidth_m, "shrinkage": sh}
                candidates.append((m, {**row, "power_prior_scale": ps}))
    known = train_frequency[np.isfinite(train_frequency) & (train_frequency > 0)]
    fill = float(np.median(known)) if known.size else None
    best: MapChoice | None = None
    rows = []
    for m, row in candidates:
        loc = RadioMapLocalizer(m, receivers_enu, scalar_mean, scalar_std, frequency_fill_hz=fill).eval()
        pos, _ = predict(loc, val_scalars_std, val_mask, val_frequency)
        score = _rmse(pos, val_truth)
        rows.append({**row, "val_rmse_m": score})
        if best is None or score < best.val_rmse_m:
            best = MapChoice(m, loc, score, pos)
    assert best is not None
    best.candidates = rows
    return best
