"""Classical localisation baselines a user would otherwise pick, with one interface.

Each baseline is fitted on the training split (`fit`), tuned on the validation split only (`tune`,
returning its grid, the validation score of each value and the chosen value) and then predicts
positions, and where it has one a covariance, for any sessions (`predict`). Observations are the
received powers the acquisition rows report, so every baseline sees what the model sees.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.data.arrays import SessionArrays
from heimdall.errors import DataError
from heimdall.features import SCALAR_NAMES

WEIGHT_EXPONENTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


@dataclass(frozen=True)
class PowerObservations:
    """Per session and receiver: where the receiver was, its power (dBm, NaN if absent), heard, present."""

    receivers_enu: np.ndarray  # (N, R, 2) metres
    power_dbm: np.ndarray  # (N, R)
    heard: np.ndarray  # (N, R) bool
    present: np.ndarray  # (N, R) bool

    def __post_init__(self) -> None:
        n, r = self.power_dbm.shape
        if (
            self.receivers_enu.shape != (n, r, 2)
            or self.heard.shape != (n, r)
            or self.present.shape != (n, r)
        ):
            raise ValueError(
                f"inconsistent observation shapes: power {self.power_dbm.shape}, heard {self.heard.shape}, "
                f"present {self.present.shape}, receivers {self.receivers_enu.shape}"
            )


def observations_from_arrays(
    arrays: SessionArrays, idx: np.ndarray, drop: int | None = None
) -> PowerObservations:
    """The sessions `idx` as power observations: the rows' measured power; `drop` removes a receiver."""
    power_col, heard_col = SCALAR_NAMES.index("power_dbm"), SCALAR_NAMES.index("heard")
    power = (
        arrays.row_power_db[idx].copy()
        if arrays.row_power_db is not None
        else arrays.scalars[idx, :, power_col]
    )
    present = arrays.mask[idx].copy()
    heard = present & (np.nan_to_num(arrays.scalars[idx, :, heard_col]) > 0.5)
    if drop is not None:
        present[:, drop] = heard[:, drop] = False
    power = np.where(present, power, np.nan).astype(float)
    return PowerObservations(arrays.receiver_enu_m[idx], power, heard, present)


def _rmse(pos: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((pos - truth) ** 2, axis=1))))


def _gaussian_nll(pos: np.ndarray, cov: np.ndarray, truth: np.ndarray) -> float:
    r = truth - pos
    inv = np.linalg.inv(cov)
    d2 = np.einsum("ni,nij,nj->n", r, inv, r)
    return float(np.mean(0.5 * d2 + 0.5 * np.log(np.linalg.det(cov)) + np.log(2 * np.pi)))


class WeightedCentroid:
    """Centroid of the hearing receivers weighted by linear power ** exponent (exponent tuned)."""

    def __init__(self) -> None:
        self.exponent = 1.0

    def fit(self, obs: PowerObservations, truth_enu: np.ndarray) -> None:
        """Nothing to fit: the method has no parameters besides the tuned exponent."""

    def _positions(self, obs: PowerObservations, exponent: float) -> np.ndarray:
        use = obs.heard & np.isfinite(obs.power_dbm)
        use = np.where(use.any(axis=1, keepdims=True), use, obs.present)  # nobody heard: plain centroid
        p = np.where(use, obs.power_dbm, -np.inf)
        top = np.max(p, axis=1, keepdims=True)
        rel = np.where(use, np.nan_to_num(obs.power_dbm) - np.where(np.isfinite(top), top, 0.0), 0.0)
        w = np.where(use, 10.0 ** (exponent * rel / 10.0), 0.0)
        return np.einsum("nr,nrk->nk", w, obs.receivers_enu) / w.sum(axis=1, keepdims=True)

    def tune(self, obs: PowerObservations, truth_enu: np.ndarray) -> dict[str, Any]:
        scores = [_rmse(self._positions(obs, g), truth_enu) for g in WEIGHT_EXPONENTS]
        self.exponent = float(WEIGHT_EXPONENTS[int(np.argmin(scores))])
        return {
            "grid": {"power_weight_exponent": list(WEIGHT_EXPONENTS)},
            "val_rmse_m": scores,
            "chosen": {"power_weight_exponent": self.exponent},
        }

    def predict(self, obs: PowerObservations) -> tuple[np.ndarray, None]:
        return self._positions(obs, self.exponent), None


class LogDistanceNLS:
    """Log-distance path loss with unknown transmit power, solved by nonlinear least squares.

    Model: P_r = A − 10·n·log10(d_r) + o_r. The session's A (transmit power and common gains) is
    unknown, so only power differences between hearing receivers are used: residuals are centred
    per session. The exponent n and the receiver offsets o_r are fitted on train by linear least
    squares (known positions); a position minimises the centred squared residuals plus
    λ·‖x − weighted centroid‖²/L² (λ tuned on validation; L = the area's extent), found by a coarse
    grid search and a fine local grid. Receivers that did not hear are not used. The covariance is
    the residual-likelihood spread over the coarse grid around the optimum.
    """

    LAMBDAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)

    def __init__(self, min_distance_m: float = 100.0) -> None:
        self.min_distance_m = min_distance_m
        self.lam = 0.0
        self.exponent = 3.5
        self.offsets: np.ndarray | None = None
        self.sigma_db = 6.0
        self.bounds = np.zeros((2, 2))
        self._wc = WeightedCentroid()

    def _logd(self, x: np.ndarray, rx: np.ndarray) -> np.ndarray:
        return np.log10(np.maximum(np.linalg.norm(x - rx, axis=-1), self.min_distance_m))

    def fit(self, obs: PowerObservations, truth_enu: np.ndarray) -> None:
        use = obs.heard & np.isfinite(obs.power_dbm)
        if (use.sum(axis=1) < 2).all():
            raise DataError(
                "the log-distance baseline needs training sessions heard by at least two receivers; "
                "none of these is"
            )
        n_r = obs.power_dbm.shape[1]
        logd = self._logd(truth_enu[:, None, :], obs.receivers_enu)
        cnt = use.sum(axis=1, keepdims=True).clip(min=1)
        ybar = np.where(use, obs.power_dbm, 0).sum(axis=1, keepdims=True) / cnt
        dbar = np.where(use, logd, 0).sum(axis=1, keepdims=True) / cnt
        onehot_bar = use / cnt  # mean of one-hot receiver indicators over the session's hearing receivers
        rows, cols = np.nonzero(use & (cnt >= 2))
        a = np.zeros((rows.size, n_r + 1))
        a[np.arange(rows.size), cols] = 1.0
        a[:, :n_r] -= onehot_bar[rows]
        a[:, n_r] = -10.0 * (logd[rows, cols] - dbar[rows, 0])
        y = obs.power_dbm[rows, cols] - ybar[rows, 0]
        a = np.vstack([a, np.r_[np.ones(n_r), 0.0][None, :]])  # offsets sum to zero (A absorbs the mean)
        y = np.r_[y, 0.0]
        sol, *_ = np.linalg.lstsq(a, y, rcond=None)
        self.offsets, self.exponent = sol[:n_r], float(sol[n_r])
        self.sigma_db = float(np.std(y[:-1] - a[:-1] @ sol))
        lo, hi = truth_enu.min(axis=0), truth_enu.max(axis=0)
        self.bounds = np.stack([lo, hi])
        self._wc.tune(obs, truth_enu)

    def _cost(self, pts: np.ndarray, obs: PowerObservations, use: np.ndarray, prior: np.ndarray, lam: float):
        """Cost of candidate points `pts` (N, G, 2) for each session → (N, G)."""
        logd = self._logd(pts[:, :, None, :], obs.receivers_enu[:, None, :, :])  # (N, G, R)
        pred = self.offsets[None, None, :] - 10.0 * self.exponent * logd  # type: ignore[index]
        res = np.where(use[:, None, :], obs.power_dbm[:, None, :] - pred, 0.0)
        cnt = use.sum(axis=1).clip(min=1)[:, None, None]
        res = np.where(use[:, None, :], res - res.sum(axis=2, keepdims=True) / cnt, 0.0)
        extent = float(np.max(self.bounds[1] - self.bounds[0]))
        return (res**2).sum(axis=2) / self.sigma_db**2 + lam * ((pts - prior[:, None, :]) ** 2).sum(
            axis=2
        ) / (extent / 4) ** 2

    def _solve(self, obs: PowerObservations, lam: float) -> tuple[np.ndarray, np.ndarray]:
        if self.offsets is None:
            raise RuntimeError("fit the baseline first")
        use = obs.heard & np.isfinite(obs.power_dbm)
        prior, _ = self._wc.predict(obs)
        lo, hi = self.bounds
        n_g = 60
        gx, gy = np.linspace(lo[0], hi[0], n_g), np.linspace(lo[1], hi[1], n_g)
        step = np.array([gx[1] - gx[0], gy[1] - gy[0]])
        coarse = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        pos = np.zeros((obs.power_dbm.shape[0], 2))
        cov = np.zeros((obs.power_dbm.shape[0], 2, 2))
        off = np.stack(np.meshgrid(np.linspace(-1, 1, 11), np.linspace(-1, 1, 11)), axis=-1).reshape(-1, 2)
        for s in range(0, pos.shape[0], 64):
            sl = slice(s, s + 64)
            sub = PowerObservations(obs.receivers_enu[sl], obs.power_dbm[sl], obs.heard[sl], obs.present[sl])
            pts = np.broadcast_to(coarse, (sub.power_dbm.shape[0], *coarse.shape))
            c = self._cost(pts, sub, use[sl], prior[sl], lam)
            best = coarse[np.argmin(c, axis=1)]
            w = np.exp(-0.5 * (c - c.min(axis=1, keepdims=True)))
            w /= w.sum(axis=1, keepdims=True)
            fine = best[:, None, :] + off[None] * step
            cf = self._cost(fine, sub, use[sl], prior[sl], lam)
            pos[sl] = fine[np.arange(fine.shape[0]), np.argmin(cf, axis=1)]
            d = coarse[None] - pos[sl][:, None, :]
            cov[sl] = np.einsum("ng,ngi,ngj->nij", w, d, d) + np.diag(step**2 / 12.0)
        return pos, cov

    def tune(self, obs: PowerObservations, truth_enu: np.ndarray) -> dict[str, Any]:
        scores = [_rmse(self._solve(obs, lam)[0], truth_enu) for lam in self.LAMBDAS]
        self.lam = float(self.LAMBDAS[int(np.argmin(scores))])
        return {
            "grid": {"prior_weight": list(self.LAMBDAS)},
            "val_rmse_m": scores,
            "chosen": {"prior_weight": self.lam},
            "fitted_on_train": {
                "path_loss_exponent": self.exponent,
                "receiver_offsets_db": [float(o) for o in self.offsets],  # type: ignore[union-attr]
                "residual_sigma_db": self.sigma_db,
            },
        }

    def predict(self, obs: PowerObservations) -> tuple[np.ndarray, np.ndarray]:
        return self._solve(obs, self.lam)


class KNNFingerprint:
    """k nearest training sessions in received-power space; position = (weighted) mean of theirs.

    Receivers that did not hear (or are absent) take a fill value below the weakest detection;
    'relative' fingerprints subtract each session's strongest power (the transmit power is unknown).
    k, the weighting, the fill and the mode are tuned on validation; the covariance is the spread of
    the neighbours' positions plus a floor, scaled by a factor fitted on validation by NLL.
    """

    KS = (1, 2, 3, 5, 8, 12, 20, 30)
    WEIGHTS = ("uniform", "inverse_distance")
    FILLS_DB = (0.0, 5.0, 10.0, 20.0)
    MODES = ("absolute", "relative")
    SCALES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

    def __init__(self) -> None:
        self.params: dict[str, Any] = {
            "k": 5,
            "weighting": "uniform",
            "fill_below_db": 10.0,
            "mode": "relative",
        }
        self.cov_scale = 1.0
        self.floor_m = 1.0

    def fit(self, obs: PowerObservations, truth_enu: np.ndarray) -> None:
        self.ref_obs, self.ref_truth = obs, truth_enu
        heard_power = obs.power_dbm[obs.heard & np.isfinite(obs.power_dbm)]
        self.weakest = float(np.min(heard_power)) if heard_power.size else -130.0

    def _vectors(self, obs: PowerObservations, fill_below: float, mode: str) -> np.ndarray:
        use = obs.heard & np.isfinite(obs.power_dbm)
        v = np.where(use, obs.power_dbm, self.weakest - fill_below)
        if mode == "relative":
            v = v - np.max(v, axis=1, keepdims=True)
        return v

    def _neighbours(
        self, obs: PowerObservations, k: int, fill: float, mode: str
    ) -> tuple[np.ndarray, np.ndarray]:
        q, ref = self._vectors(obs, fill, mode), self._vectors(self.ref_obs, fill, mode)
        k = min(k, ref.shape[0])
        idx = np.zeros((q.shape[0], k), np.int64)
        dist = np.zeros((q.shape[0], k))
        rn = (ref**2).sum(axis=1)
        for s in range(0, q.shape[0], 512):
            d2 = (q[s : s + 512] ** 2).sum(axis=1)[:, None] + rn[None, :] - 2.0 * q[s : s + 512] @ ref.T
            part = np.argpartition(d2, k - 1, axis=1)[:, :k]
            dd = np.take_along_axis(d2, part, axis=1)
            order = np.argsort(dd, axis=1)
            idx[s : s + 512] = np.take_along_axis(part, order, axis=1)
            dist[s : s + 512] = np.sqrt(np.maximum(np.take_along_axis(dd, order, axis=1), 0.0))
        return idx, dist

    def _estimate(self, obs: PowerObservations, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = self._neighbours(obs, p["k"], p["fill_below_db"], p["mode"])
        w = np.ones_like(dist) if p["weighting"] == "uniform" else 1.0 / np.maximum(dist, 1e-3)
        w = w / w.sum(axis=1, keepdims=True)
        nb = self.ref_truth[idx]  # (N, k, 2)
        pos = np.einsum("nk,nki->ni", w, nb)
        d = nb - pos[:, None, :]
        spread = np.einsum("nk,nki,nkj->nij", w, d, d)
        return pos, spread

    def tune(self, obs: PowerObservations, truth_enu: np.ndarray) -> dict[str, Any]:
        grid = list(itertools.product(self.KS, self.WEIGHTS, self.FILLS_DB, self.MODES))
        scores = []
        for k, weighting, fill, mode in grid:
            p = {"k": k, "weighting": weighting, "fill_below_db": fill, "mode": mode}
            scores.append(_rmse(self._estimate(obs, p)[0], truth_enu))
        k, weighting, fill, mode = grid[int(np.argmin(scores))]
        self.params = {"k": k, "weighting": weighting, "fill_below_db": fill, "mode": mode}
        pos, spread = self._estimate(obs, self.params)
        self.floor_m = max(min(scores) / np.sqrt(2.0), 1.0)  # metres; exact matches still get an ellipse
        nll = [_gaussian_nll(pos, c * (spread + np.eye(2) * self.floor_m**2), truth_enu) for c in self.SCALES]
        self.cov_scale = float(self.SCALES[int(np.argmin(nll))])
        return {
            "grid": {
                "k": list(self.KS),
                "weighting": list(self.WEIGHTS),
                "fill_below_db": list(self.FILLS_DB),
                "mode": list(self.MODES),
                "covariance_scale": list(self.SCALES),
            },
            "val_rmse_m_best": float(min(scores)),
            "chosen": {**self.params, "covariance_scale": self.cov_scale},
        }

    def predict(self, obs: PowerObservations) -> tuple[np.ndarray, np.ndarray]:
        pos, spread = self._estimate(obs, self.params)
        return pos, self.cov_scale * (spread + np.eye(2) * self.floor_m**2)
