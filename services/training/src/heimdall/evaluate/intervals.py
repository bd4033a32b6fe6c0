"""Paired bootstrap intervals: resample sessions jointly so methods are compared on the same draws."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from heimdall.errors import DataError

STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rmse_m": lambda e: np.sqrt(np.mean(e**2, axis=-1)),
    "median_error_m": lambda e: np.median(e, axis=-1),
    "mean_error_m": lambda e: np.mean(e, axis=-1),
    "p68_error_m": lambda e: np.percentile(e, 68, axis=-1),
    "p90_error_m": lambda e: np.percentile(e, 90, axis=-1),
    "p95_error_m": lambda e: np.percentile(e, 95, axis=-1),
}


def paired_bootstrap(
    errors_by_method: Mapping[str, np.ndarray], reference: str, n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, dict[str, object]]]:
    """Per method and statistic: value, 95 % percentile interval, and the paired difference vs `reference`.

    The same resampled session indices serve every method, so the interval of a difference reflects
    only how the methods differ on the same sessions (much tighter than comparing two intervals).
    """
    names = list(errors_by_method)
    if reference not in errors_by_method:
        raise ValueError(f"reference method {reference!r} not among {names}")
    errs = np.stack([np.asarray(errors_by_method[n], float) for n in names])  # (M, N)
    if errs.shape[1] == 0:
        raise DataError("no sessions to bootstrap: the evaluated split is empty")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, errs.shape[1], size=(n_boot, errs.shape[1]))
    ref = names.index(reference)
    out: dict[str, dict[str, dict[str, object]]] = {n: {} for n in names}
    for stat, fn in STATS.items():
        value = fn(errs)  # (M,)
        boot = np.stack([fn(errs[m][idx]) for m in range(len(names))])  # (M, n_boot)
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=1)
        diff = boot - boot[ref]
        dlo, dhi = np.percentile(diff, [2.5, 97.5], axis=1)
        for m, name in enumerate(names):
            out[name][stat] = {
                "value": float(value[m]),
                "ci95_low": float(lo[m]),
                "ci95_high": float(hi[m]),
                "diff_vs_reference": {
                    "reference": reference,
                    "value": float(value[m] - value[ref]),
                    "ci95_low": float(dlo[m]),
                    "ci95_high": float(dhi[m]),
                },
            }
    return out
