"""Classical localisation baselines a user would otherwise pick, each at full strength, one interface.

Each baseline is fitted on the training split (`fit`), tuned on the validation split only (`tune`,
returning its grid, the chosen values and any parameter chosen on a grid edge) and then predicts
positions, and where it has one a covariance, for any sessions (`predict`). Observations are the
acquisition rows' powers with noise power removed (:mod:`heimdall.evaluate.baseline_common`), so every
baseline sees what the model sees. kNN fingerprinting lives in :mod:`heimdall.evaluate.classical_knn`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_ndtr

from heimdall.bands import band_centres, band_index
from heimdall.errors import DataError
from heimdall.evaluate.baseline_common import (
    PowerObservations,
    fill_thresholds,
    observations_from_arrays,
    receiver_floors,
    rmse,
    tuning_report,
)
from heimdall.evaluate.classical_knn import KNNFingerprint
from heimdall.radiomap.fit import log_distance_lstsq

__all__ = [
    "KNNFingerprint",
    "LogDistanceNLS",
    "PowerObservations",
    "WeightedCentroid",
    "observations_from_arrays",
]

WEIGHT_EXPONENTS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
REFINE_LEVELS = 4  # local grids after the coarse one: resolution (area / 59) / 5⁴, metres for 40 km
NEWTON_STEPS = 8  # profiling the transmit power under censoring: a convex 1-D problem, converged by ~5


class WeightedCentroid:
    """Centroid of the hearing receivers weighted by linear signal power ** exponent (exponent tuned)."""

    def __init__(self) -> None:
        self.exponent = 1.0

    def fit(self, obs: PowerObservations, truth_enu: np.ndarray) -> None:
        """Nothing to fit: the method has no parameters besides the tuned exponent."""

    def _positions(self, obs: PowerObservations, exponent: float) -> np.ndarray:
        use = obs.heard
        use = np.where(use.any(axis=1, keepdims=True), use, obs.present)  # nobody heard: plain centroid
        use = np.where(use.any(axis=1, keepdims=True), use, True)  # nothing at all: the network's centre
        s = np.where(obs.heard, obs.signal, -np.inf)
        top = np.max(s, axis=1, keepdims=True)
        rel = np.where(obs.heard, obs.signal - np.where(np.isfinite(top), top, 0.0), 0.0)
        w = np.where(use, 10.0 ** (exponent * np.nan_to_num(rel) / 10.0), 0.0)
        return np.einsum("nr,nrk->nk", w, obs.receivers_enu) / w.sum(axis=1, keepdims=True)

    def tune(self, obs: PowerObservations, truth_enu: np.ndarray) -> dict[str, Any]:
        scores = [rmse(self._positions(obs, g), truth_enu) for g in WEIGHT_EXPONENTS]
        self.exponent = float(WEIGHT_EXPONENTS[int(np.argmin(scores))])
        return tuning_report(
            {"power_weight_exponent": WEIGHT_EXPONENTS},
            {"power_weight_exponent": self.exponent},
            {"power_weight_exponent": (0.0, None)},
            val_rmse_m=scores,
        )

    def predict(self, obs: PowerObservations) -> tuple[np.ndarray, None]:
        return self._positions(obs, self.exponent), None


def _fit_band(signal: np.ndarray, heard: np.ndarray, logd: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Offsets (sum zero), exponent and residual σ of S = A − 10·n·log10(d) + o_r by least squares
    (:func:`heimdall.radiomap.fit.log_distance_lstsq`: the session's A is profiled out)."""
    offsets, exponent, residuals, _, dof = log_distance_lstsq(signal, heard, logd)
    sigma = float(np.sqrt(np.sum(residuals**2) / dof))
    return offsets, exponent, max(sigma, 0.1)


class LogDistanceNLS:
    """Log-distance path loss with unknown transmit power, censored non-detections, per band.

    Model per band b: S_r = A − 10·n_b·log10(d_r) + o_{b,r} + ε, ε ~ N(0, σ_b²), with S the signal power
    (noise removed). n_b, o_{b,r} and σ_b are fitted on train (known positions) by least squares on the
    heard rows. A position minimises the deviance −2·log L(x, A) with A profiled (Newton on a convex
    1-D problem): heard rows add (S − μ)²/σ², a present receiver that did not hear adds −2·log Φ((t − μ)/σ)
    (its signal stayed below its threshold t = noise + 6 dB, or its training floor where the row has
    no SNR), plus λ·‖x − weighted centroid‖²/(L/4)² (λ tuned on validation; L = the area's extent).
    Search: a coarse grid over the training area, then nested local grids down to about a metre. The
    covariance is the likelihood-weighted spread over the coarse grid.
    """

    LAMBDAS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    GRID = 60

    def __init__(self, min_distance_m: float = 100.0) -> None:
        self.min_distance_m = min_distance_m
        self.lam = 0.0
        self.centres = np.array([np.nan])
        self.exponents = np.array([3.5])
        self.offsets: np.ndarray | None = None  # (bands, R)
        self.sigmas = np.array([6.0])
        self.floors = np.zeros((1, 0))
        self.bounds = np.zeros((2, 2))
        self._wc = WeightedCentroid()
        self._cache: tuple[PowerObservations, np.ndarray] | None = None

    @property
    def exponent(self) -> float:
        """The path-loss exponent of the first (for one-band data: the only) band."""
        return float(self.exponents[0])

    def _logd(self, x: np.ndarray, rx: np.ndarray) -> np.ndarray:
        return np.log10(np.maximum(np.linalg.norm(x - rx, axis=-1), self.min_distance_m))

    def fit(self, obs: PowerObservations, truth_enu: np.ndarray) -> None:
        if (obs.heard.sum(axis=1) < 2).all():
            raise DataError(
                "the log-distance baseline needs training sessions heard by at least two receivers; "
                "none of these is"
            )
        self.centres = band_centres(obs.frequency_hz)  # type: ignore[arg-type]
        band = band_index(obs.frequency_hz, self.centres)  # type: ignore[arg-type]
        logd = self._logd(truth_enu[:, None, :], obs.receivers_enu)
        pooled = _fit_band(obs.signal, obs.heard, logd)
        fits = []
        for b in range(self.centres.size):
            sel = band == b
            enough = (obs.heard[sel].sum(axis=1) >= 2).sum() >= 10
            fits.append(_fit_band(obs.signal[sel], obs.heard[sel], logd[sel]) if enough else pooled)
        self.offsets = np.stack([f[0] for f in fits])
        self.exponents = np.array([f[1] for f in fits])
        self.sigmas = np.array([f[2] for f in fits])
        self.floors = receiver_floors(obs, band, self.centres.size)
        lo, hi = truth_enu.min(axis=0), truth_enu.max(axis=0)
        pad = 0.02 * (hi - lo)
        self.bounds = np.stack([lo - pad, hi + pad])
        self._wc.tune(obs, truth_enu)
        self._cache = None

    def _deviance(self, pts: np.ndarray, obs: PowerObservations, band: np.ndarray) -> np.ndarray:
        """−2·log-likelihood of candidate points `pts` (N, G, 2), transmit power profiled → (N, G)."""
        logd = self._logd(pts[:, :, None, :], obs.receivers_enu[:, None, :, :])  # (N, G, R)
        mu = self.offsets[band][:, None, :] - 10.0 * self.exponents[band][:, None, None] * logd  # type: ignore[index]
        sigma = self.sigmas[band][:, None, None]
        heard = obs.heard[:, None, :]
        censored = (obs.present & ~obs.heard)[:, None, :]
        thr = fill_thresholds(obs, band, self.floors)[:, None, :]
        y = np.where(heard, obs.signal[:, None, :] - mu, 0.0)
        c = np.where(censored, np.nan_to_num(thr) - mu, 0.0)
        n_h = heard.sum(axis=2)
        s2 = sigma[..., 0] ** 2
        a = y.sum(axis=2) / np.maximum(n_h, 1)  # heard-only least squares, then Newton with censoring
        for _ in range(NEWTON_STEPS):
            z = (c - a[..., None]) / sigma
            lam = np.where(censored, np.exp(-0.5 * z**2 - 0.5 * np.log(2 * np.pi) - log_ndtr(z)), 0.0)
            grad = -np.where(heard, y - a[..., None], 0.0).sum(axis=2) / s2 + lam.sum(axis=2) / sigma[..., 0]
            hess = (n_h + (lam * (z + lam)).sum(axis=2)) / s2
            a = a - grad / np.maximum(hess, 1e-12)
        z = (c - a[..., None]) / sigma
        dev = np.where(heard, (y - a[..., None]) ** 2 / sigma**2, 0.0).sum(axis=2)
        return dev - 2.0 * np.where(censored, log_ndtr(z), 0.0).sum(axis=2)

    def _coarse(self, obs: PowerObservations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The coarse grid, its deviance per session (N, G) and the band of each session (cached)."""
        lo, hi = self.bounds
        gx, gy = np.linspace(lo[0], hi[0], self.GRID), np.linspace(lo[1], hi[1], self.GRID)
        coarse = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        band = band_index(obs.frequency_hz, self.centres)  # type: ignore[arg-type]
        if self._cache is not None and self._cache[0] is obs:
            return coarse, self._cache[1], band
        dev = np.zeros((obs.power_dbm.shape[0], coarse.shape[0]))
        for s in range(0, dev.shape[0], 32):
            sl = slice(s, s + 32)
            sub = obs.take(sl)
            pts = np.broadcast_to(coarse, (sub.power_dbm.shape[0], *coarse.shape))
            dev[sl] = self._deviance(pts, sub, band[sl])
        self._cache = (obs, dev)  # tuning solves the same validation sessions once per λ
        return coarse, dev, band

    def _solve(self, obs: PowerObservations, lam: float) -> tuple[np.ndarray, np.ndarray]:
        if self.offsets is None:
            raise RuntimeError("fit the baseline first")
        coarse, dev, band = self._coarse(obs)
        prior, _ = self._wc.predict(obs)
        lo, hi = self.bounds
        step = (hi - lo) / (self.GRID - 1)
        scale = (float(np.max(hi - lo)) / 4) ** 2
        c = dev + lam * ((coarse[None] - prior[:, None, :]) ** 2).sum(axis=2) / scale
        best = coarse[np.argmin(c, axis=1)]
        w = np.exp(-0.5 * (c - c.min(axis=1, keepdims=True)))
        w /= w.sum(axis=1, keepdims=True)
        off = np.stack(np.meshgrid(np.linspace(-1, 1, 11), np.linspace(-1, 1, 11)), axis=-1).reshape(-1, 2)
        pos = best
        for level in range(REFINE_LEVELS):  # each level: 11×11 points over ± the last level's spacing
            fine = pos[:, None, :] + off[None] * step / 5.0**level
            cf = self._deviance(fine, obs, band) + lam * ((fine - prior[:, None, :]) ** 2).sum(axis=2) / scale
            pos = fine[np.arange(fine.shape[0]), np.argmin(cf, axis=1)]
        d = coarse[None] - pos[:, None, :]
        cov = np.einsum("ng,ngi,ngj->nij", w, d, d) + np.diag(step**2 / 12.0)
        return pos, cov

    def tune(self, obs: PowerObservations, truth_enu: np.ndarray) -> dict[str, Any]:
        scores = [rmse(self._solve(obs, lam)[0], truth_enu) for lam in self.LAMBDAS]
        self.lam = float(self.LAMBDAS[int(np.argmin(scores))])
        return tuning_report(
            {"prior_weight": self.LAMBDAS},
            {"prior_weight": self.lam},
            {"prior_weight": (0.0, None)},
            val_rmse_m=scores,
            fitted_on_train={
                "band_centres_hz": [float(f) if np.isfinite(f) else None for f in self.centres],
                "path_loss_exponent": [float(n) for n in self.exponents],
                "receiver_offsets_db": np.round(self.offsets, 4).tolist(),  # type: ignore[union-attr]
                "residual_sigma_db": [float(s) for s in self.sigmas],
            },
        )

    def predict(self, obs: PowerObservations) -> tuple[np.ndarray, np.ndarray]:
        return self._solve(obs, self.lam)
