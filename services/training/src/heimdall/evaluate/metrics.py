"""Localisation metrics: great-circle errors, ellipse coverage, Gaussian NLL, ellipse area.

Errors are haversine distances between predicted and true lat/lon (the frame is only used to
express covariances); coverage counts truths inside the predicted k-sigma ellipses, which a
calibrated 2-D Gaussian fills to 39.3 % (1σ), 86.5 % (2σ) and 95 % (χ²₂ = 5.991).
"""

from __future__ import annotations

import math

import numpy as np

from heimdall.errors import DataError
from heimdall.geo import haversine_m

CHI2_2DOF_95 = 5.991464547107979
NOMINAL_COVERAGE = {
    "coverage_1sigma": 1 - math.exp(-0.5),
    "coverage_2sigma": 1 - math.exp(-2.0),
    "coverage_95": 0.95,
}


def error_summary(errors_m: np.ndarray) -> dict[str, float]:
    """RMSE, median, mean and upper percentiles of per-session errors (metres)."""
    e = np.asarray(errors_m, float)
    if e.size == 0:
        raise DataError("no errors to summarise: the evaluated split is empty")
    return {
        "rmse_m": float(np.sqrt(np.mean(e**2))),
        "median_error_m": float(np.median(e)),
        "mean_error_m": float(np.mean(e)),
        "p68_error_m": float(np.percentile(e, 68)),
        "p90_error_m": float(np.percentile(e, 90)),
        "p95_error_m": float(np.percentile(e, 95)),
    }


def errors_m(pred_latlon: np.ndarray, truth_latlon: np.ndarray) -> np.ndarray:
    return haversine_m(pred_latlon[:, 0], pred_latlon[:, 1], truth_latlon[:, 0], truth_latlon[:, 1])


def _total_cov(cov: np.ndarray, truth_sigma_m: np.ndarray | None) -> np.ndarray:
    c = np.asarray(cov, float).copy()
    if truth_sigma_m is not None:
        s2 = np.asarray(truth_sigma_m, float) ** 2
        c[:, 0, 0] += s2
        c[:, 1, 1] += s2
    return c


def mahalanobis_sq(
    pred_enu: np.ndarray, cov: np.ndarray, truth_enu: np.ndarray, truth_sigma_m=None
) -> np.ndarray:
    """Squared Mahalanobis distance of each truth from its predicted Gaussian."""
    c = _total_cov(cov, truth_sigma_m)
    r = np.asarray(truth_enu, float) - np.asarray(pred_enu, float)
    return np.einsum("ni,nij,nj->n", r, np.linalg.inv(c), r)


def uncertainty_summary(
    pred_enu: np.ndarray, cov: np.ndarray, truth_enu: np.ndarray, truth_sigma_m: np.ndarray | None = None
) -> dict[str, float]:
    """Coverage of the 1σ/2σ/95 % ellipses, mean NLL (nats) and mean 95 % ellipse area (km²)."""
    c = _total_cov(cov, truth_sigma_m)
    d2 = mahalanobis_sq(pred_enu, c, truth_enu)
    logdet = np.log(np.linalg.det(c))
    nll = 0.5 * d2 + 0.5 * logdet + math.log(2 * math.pi)
    area_km2 = math.pi * CHI2_2DOF_95 * np.sqrt(np.linalg.det(np.asarray(cov, float))) / 1e6
    return {
        "coverage_1sigma": float(np.mean(d2 <= 1.0)),
        "coverage_2sigma": float(np.mean(d2 <= 4.0)),
        "coverage_95": float(np.mean(d2 <= CHI2_2DOF_95)),
        "nll": float(np.mean(nll)),
        "mean_ellipse_area_km2": float(np.mean(area_km2)),
    }
