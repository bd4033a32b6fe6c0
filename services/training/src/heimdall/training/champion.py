"""Which localiser ships: the network, the radio map or their fusion, chosen on validation only.

After the network has trained, the radio map (:mod:`heimdall.radiomap`) is fitted on the same
training split and its field settings are chosen on validation; then the network, the map and
their mixtures ``w ∈ FUSION_WEIGHTS`` are scored by validation RMSE and the lowest ships. The test
split plays no part. ``model.localizer`` forces one member ("network" or "radiomap") instead.
Physics first: with few labelled sessions the network cannot beat the map, and the map alone ships.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from heimdall.data.arrays import SessionArrays
from heimdall.data.dataset import HeimdallDataModule
from heimdall.data.recordings import arrays_frequencies
from heimdall.evaluate.baseline_common import rmse
from heimdall.model import predict_arrays
from heimdall.radiomap.fusion import FusedLocalizer
from heimdall.radiomap.tune import fit_on_train

FUSION_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 0.75)
CHOICES = ("auto", "network", "radiomap")

__all__ = ["CHOICES", "FUSION_WEIGHTS", "choose_localizer", "localizer_line"]


def _receivers(arrays: SessionArrays, idx: np.ndarray) -> np.ndarray:
    if arrays.receiver_enu_m is not None:
        return arrays.receiver_enu_m[idx]
    return np.broadcast_to(arrays.network.positions_enu_m(), (idx.size, arrays.network.size, 2))


def choose_localizer(
    net: nn.Module, dm: HeimdallDataModule, arrays: SessionArrays, choice: str = "auto"
) -> tuple[nn.Module, dict[str, Any]]:
    """The module to ship and a report of every candidate's validation RMSE (m)."""
    if choice not in CHOICES:
        raise ValueError(f"localizer must be one of {CHOICES}, got {choice!r}")
    if choice == "network":
        return net, {"localizer": "network", "chosen_by": "configuration"}
    tidx, vidx = arrays.indices("train"), arrays.indices("val")
    val = dm.datasets["val"]
    truth = arrays.target_enu_m[vidx]
    freq = val.frequency_hz.numpy()
    mapped = fit_on_train(
        arrays.scalars[tidx],
        arrays.mask[tidx],
        _receivers(arrays, tidx),
        arrays.target_enu_m[tidx],
        arrays_frequencies(arrays, tidx),
        val.scalars.numpy(),
        val.mask.numpy(),
        freq,
        truth,
        arrays.network.positions_enu_m(),
        dm.stats.scalar_mean,
        dm.stats.scalar_std,
    )
    map_report = mapped.report()
    if choice == "radiomap":
        return mapped.localizer, {
            "localizer": "radiomap",
            "chosen_by": "configuration",
            "radio_map": map_report,
        }
    p_net, _ = predict_arrays(net, val.spectrogram, val.scalars, val.mask, val.frequency_hz)
    p_map = mapped.val_positions
    scores: dict[str, float] = {"network": rmse(p_net, truth), "radiomap": mapped.val_rmse_m}
    for w in FUSION_WEIGHTS:
        scores[f"fusion_{w:g}"] = rmse(w * p_map + (1.0 - w) * p_net, truth)
    # ties go to the simpler model: the map, then the network, then the fusions in order
    best = min(scores, key=lambda k: (round(scores[k], 3), list(scores).index(k) if k != "radiomap" else -1))
    report: dict[str, Any] = {
        "localizer": "fusion" if best.startswith("fusion") else best,
        "chosen_by": "validation RMSE",
        "val_rmse_m": scores,
        "radio_map": map_report,
    }
    if best == "network":
        return net, report
    if best == "radiomap":
        return mapped.localizer, report
    weight = float(best.split("_")[1])
    report["fusion_weight"] = weight
    return FusedLocalizer(net, mapped.localizer, weight).eval(), report


def localizer_line(report: dict[str, Any]) -> str:
    """One console line: what ships and, when chosen on validation, every candidate's RMSE."""
    name = report["localizer"]
    if "fusion_weight" in report:
        name += f" (radio-map weight {report['fusion_weight']:g})"
    scores = report.get("val_rmse_m")
    if not scores:
        return f"localizer: {name} ({report['chosen_by']})"
    listed = ", ".join(f"{k} {v:,.0f} m" for k, v in scores.items())
    return f"localizer: {name}, chosen on validation RMSE ({listed})"
