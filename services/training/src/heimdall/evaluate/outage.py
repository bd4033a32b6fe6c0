"""The receiver-outage study: every method once per removed receiver, on the sessions the keep rule keeps.

A session was kept because ≥ `min_receivers_heard` receivers heard it, possibly counting the one now
removed. Sessions kept only thanks to it are outside what the keep rule produces for the remaining
network, so the oracle's prior would not hold there: each row uses only the sessions still heard by
≥ `min_receivers_heard` of the remaining receivers, says how many, and carries every method's
paired-bootstrap RMSE difference to the oracle (no method may beat it beyond noise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from heimdall.data.arrays import SessionArrays
from heimdall.detection import heard as heard_rule
from heimdall.evaluate.intervals import paired_bootstrap
from heimdall.evaluate.localizers import Localizer

#: Heard receivers a session needs to stay in the study when no scenario says (the loader's rule).
DEFAULT_MIN_HEARD = 3

__all__ = ["DEFAULT_MIN_HEARD", "heard_rows", "outage_sessions", "outage_study"]


def heard_rows(arrays: SessionArrays, idx: np.ndarray) -> np.ndarray:
    """``(n, R)``: which receivers heard each session, by the one rule (:mod:`heimdall.detection`).

    A row with an SNR is heard iff that SNR passes the rule; a power-only row (no SNR) is heard by
    having a reading, as power-only data sets say.
    """
    mask = arrays.mask[idx]
    snr = arrays.row_snr_db[idx] if arrays.row_snr_db is not None else np.full(mask.shape, np.nan)
    power = arrays.row_power_db[idx] if arrays.row_power_db is not None else np.zeros(mask.shape)
    return mask & np.where(np.isnan(snr), np.isfinite(power), heard_rule(snr))


def outage_sessions(arrays: SessionArrays, idx: np.ndarray, drop: int, min_heard: int) -> np.ndarray:
    """The sessions of `idx` still heard by ≥ `min_heard` receivers once receiver `drop` is removed."""
    heard = heard_rows(arrays, idx)
    heard[:, drop] = False
    return idx[heard.sum(axis=1) >= min_heard]


def outage_study(
    arrays: SessionArrays,
    idx: np.ndarray,
    localizers: list[Localizer],
    min_heard: int,
    errors_of: Callable[[SessionArrays, np.ndarray, np.ndarray], np.ndarray],
    model: str,
    oracle: str,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Every method once per receiver, that receiver removed at test time (fitted and tuned as before).

    Only the sessions the keep rule would still keep are used (see the module notes). `errors_of` gives
    a method's errors in metres; `model` and `oracle` name those methods. Returns the rows and the
    number of sessions each row used.
    """
    names = {m.name for m in localizers}
    rows, used = {}, {}
    for k, sid in enumerate(arrays.network.station_ids):
        row: dict[str, Any] = {"station_name": arrays.network.names[k]}
        sel = outage_sessions(arrays, idx, k, min_heard)
        used[str(sid)] = int(sel.size)
        row["n_sessions"] = int(sel.size)
        if sel.size == 0:
            rows[str(sid)] = row
            continue
        errors = {}
        for method in localizers:
            pos, _ = method.predict(arrays, sel, drop=k)
            errors[method.name] = err = errors_of(arrays, sel, pos)
            row[method.name] = {
                "rmse_m": float(np.sqrt(np.mean(err**2))),
                "median_error_m": float(np.median(err)),
            }
        if oracle in names:
            boot = paired_bootstrap(errors, reference=oracle, seed=0)
            for name in errors:
                if name != oracle:
                    row[name]["rmse_vs_oracle"] = boot[name]["rmse_m"]["diff_vs_reference"]
        if oracle in names and model in names:
            row["model_rmse_over_oracle"] = row[model]["rmse_m"] / row[oracle]["rmse_m"]
        rows[str(sid)] = row
    return rows, used
