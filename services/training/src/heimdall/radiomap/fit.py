"""Fit per-receiver radio maps from labelled sessions: path-loss prior plus a learned residual field.

Per band b and receiver r the mean signal of a transmitter at x with (unknown) power P is::

    S_r(x) = P + g_br − 10·n_b·log10(max(d_r(x), d_min)) + f_br(x) + ε,   ε ~ N(0, σ_br²)

* ``g_br``, ``n_b``: log-distance fit by least squares with each session's P profiled out (what
  physics predicts; with no labelled data these are the defaults and f = 0).
* ``f_br``: the receiver's spatial residual field ("terrain": static shadowing, antenna pattern,
  local clutter), a kernel-smoothed average of the training residuals on a grid, shrunk towards 0
  where data are sparse (``shrinkage`` pseudo-samples): an estimate of what the path-loss law cannot
  know, learnt from every session the receiver heard — not only from sessions like this one, as a
  fingerprint (kNN) must. Residuals of the other band count with weight ``cross_band`` (the fields
  of nearby carriers are correlated).
* ``σ_br``: leave-one-out residual spread (fading, dynamic shadowing, estimation noise).
* A Gaussian prior on P per band (the training sessions' spread) keeps implausible powers unlikely.

Fitting alternates between the sessions' powers and the fields (a few rounds). Everything here is
numpy; :mod:`heimdall.radiomap.localizer` turns the result into a torch/ONNX posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.stats import norm

from heimdall.bands import band_centres, band_index
from heimdall.radiomap.observations import Observed

#: grid cells along the longer side of the area (the posterior's resolution: extent / GRID_CELLS)
GRID_CELLS = 128
#: the posterior screens BLOCK × BLOCK cells at a time (grids are whole blocks)
BLOCK = 4
#: physics defaults when a band/receiver has no labelled data: free space ≈ 2, urban/terrain 3-4
DEFAULT_EXPONENT = 3.0
DEFAULT_SIGMA_DB = 8.0
DEFAULT_POWER_SPREAD_DB = 20.0
MIN_SIGMA_DB = 1.0
#: a learnt residual beyond this is a fitting accident (sparse data), not terrain
MAX_FIELD_DB = 40.0
ROUNDS = 3

__all__ = ["FieldSettings", "Grid", "RadioMap", "fit_radio_map", "log_distance_lstsq", "physics_only"]


@dataclass(frozen=True)
class Grid:
    """Cell centres x0 + (i + ½)·cell (metres, in the network frame), nx × ny cells, row-major in y."""

    x0: float
    y0: float
    cell: float
    nx: int
    ny: int

    @classmethod
    def covering(cls, points: np.ndarray, cells: int = GRID_CELLS, pad: float = 0.05) -> Grid:
        lo, hi = points.min(axis=0), points.max(axis=0)
        extent = np.maximum(hi - lo, 1.0)
        lo, hi = lo - pad * extent, hi + pad * extent
        cell = float(np.max(hi - lo)) / cells
        nx, ny = (BLOCK * np.ceil((hi - lo) / cell / BLOCK)).astype(int).clip(min=BLOCK)
        return cls(float(lo[0]), float(lo[1]), cell, int(nx), int(ny))

    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Block centres (Gb, 2) and each block's member cells (Gb, BLOCK²), flat indices into `centres`."""
        bx, by = self.nx // BLOCK, self.ny // BLOCK
        jj, ii = np.meshgrid(np.arange(by), np.arange(bx), indexing="ij")
        dj, di = np.meshgrid(np.arange(BLOCK), np.arange(BLOCK), indexing="ij")
        rows = jj.ravel()[:, None] * BLOCK + dj.ravel()[None, :]
        cols = ii.ravel()[:, None] * BLOCK + di.ravel()[None, :]
        members = rows * self.nx + cols
        return self.centres()[members].mean(axis=1), members

    def centres(self) -> np.ndarray:
        xs = self.x0 + (np.arange(self.nx) + 0.5) * self.cell
        ys = self.y0 + (np.arange(self.ny) + 0.5) * self.cell
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx.ravel(), gy.ravel()], axis=-1)

    def _coords(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        u = np.clip((pts[:, 0] - self.x0) / self.cell - 0.5, 0, self.nx - 1)
        v = np.clip((pts[:, 1] - self.y0) / self.cell - 0.5, 0, self.ny - 1)
        i0 = np.minimum(np.floor(u).astype(int), max(self.nx - 2, 0))
        j0 = np.minimum(np.floor(v).astype(int), max(self.ny - 2, 0))
        return i0, j0, u - i0, v - j0

    def splat(self, pts: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Bilinear splat of `values` at `pts` onto the (ny, nx) grid."""
        out = np.zeros((self.ny, self.nx))
        i0, j0, fu, fv = self._coords(pts)
        i1, j1 = np.minimum(i0 + 1, self.nx - 1), np.minimum(j0 + 1, self.ny - 1)
        for jj, ii, w in (
            (j0, i0, (1 - fu) * (1 - fv)),
            (j0, i1, fu * (1 - fv)),
            (j1, i0, (1 - fu) * fv),
            (j1, i1, fu * fv),
        ):
            np.add.at(out, (jj, ii), w * values)
        return out

    def sample(self, grid: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of a (ny, nx) grid at `pts`."""
        i0, j0, fu, fv = self._coords(pts)
        i1, j1 = np.minimum(i0 + 1, self.nx - 1), np.minimum(j0 + 1, self.ny - 1)
        return (
            grid[j0, i0] * (1 - fu) * (1 - fv)
            + grid[j0, i1] * fu * (1 - fv)
            + grid[j1, i0] * (1 - fu) * fv
            + grid[j1, i1] * fu * fv
        )


@dataclass(frozen=True)
class FieldSettings:
    """How the residual field is learnt (chosen on validation by :mod:`heimdall.radiomap.tune`)."""

    bandwidth_m: float  # Gaussian kernel σ of the smoothing
    shrinkage: float = 1.0  # pseudo-samples of "no residual" inside one kernel area (inf: no field)
    cross_band: float = 0.5  # weight of the other bands' residuals
    power_prior_scale: float = 1.0  # the P prior's σ = scale · the training spread


@dataclass(frozen=True)
class RadioMap:
    """Everything the posterior needs (numpy; the localizer stores it as buffers)."""

    grid: Grid
    band_centres_hz: np.ndarray  # (K,) NaN = one unknown band
    exponent: np.ndarray  # (K,) path-loss exponent n_b
    offset_db: np.ndarray  # (K, R) g_br (relative: P absorbs the mean)
    field_db: np.ndarray  # (K, R, ny·nx) f_br at the cell centres
    sigma_db: np.ndarray  # (K, R)
    power_mean_db: np.ndarray  # (K,) prior mean of P (relative units)
    power_std_db: np.ndarray  # (K,) prior σ of P
    min_distance_m: float
    has_snr: bool
    settings: FieldSettings | None  # None: physics only (no field)


def _logd(points: np.ndarray, rx: np.ndarray, d_min: float) -> np.ndarray:
    return np.log10(np.maximum(np.linalg.norm(points[:, None, :] - rx, axis=-1), d_min))


def _heard_hard(obs: Observed) -> np.ndarray:
    return obs.heard >= 0.5


def log_distance_lstsq(
    signal: np.ndarray, heard: np.ndarray, logd: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, int]:
    """Least squares of S = P − 10·n·log10(d) + g_r over the heard rows, each session's P profiled out.

    Each session's heard rows are centred (P drops out); offsets sum to zero (P absorbs their mean).
    Returns offsets (R,), exponent, residuals of the used rows, the used mask and the residual dof.
    Shared by the radio map and the log-distance baseline (:mod:`heimdall.evaluate.classical`).
    """
    n_r = signal.shape[1]
    use = heard & (heard.sum(axis=1, keepdims=True) >= 2)
    cnt = use.sum(axis=1, keepdims=True).clip(min=1)
    ybar = np.where(use, signal, 0).sum(axis=1, keepdims=True) / cnt
    dbar = np.where(use, logd, 0).sum(axis=1, keepdims=True) / cnt
    rows, cols = np.nonzero(use)
    a = np.zeros((rows.size, n_r + 1))
    a[np.arange(rows.size), cols] = 1.0
    a[:, :n_r] -= (use / cnt)[rows]
    a[:, n_r] = -10.0 * (logd[rows, cols] - dbar[rows, 0])
    y = signal[rows, cols] - ybar[rows, 0]
    dof = max(rows.size - np.unique(rows).size - n_r, 1)
    lhs = np.vstack([a, np.r_[np.ones(n_r), 0.0][None, :]])
    sol, *_ = np.linalg.lstsq(lhs, np.r_[y, 0.0], rcond=None)
    return sol[:n_r], float(sol[n_r]), y - a @ sol, use, dof


def _fit_log_distance(
    signal: np.ndarray, heard: np.ndarray, logd: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """Offsets (0 for receivers never used) and exponent (bounded to 1-8); None with too few rows."""
    usable = heard & (heard.sum(axis=1, keepdims=True) >= 2)
    if usable.sum() < signal.shape[1] + 2:
        return None
    offsets, exponent, _, use, _ = log_distance_lstsq(signal, heard, logd)
    return np.where(use.any(axis=0), offsets, 0.0), float(np.clip(exponent, 1.0, 8.0))


def physics_only(
    receivers_enu: np.ndarray,
    area_points: np.ndarray,
    has_snr: bool = True,
    min_distance_m: float | None = None,
) -> RadioMap:
    """The map with no labelled data: one band, log-distance defaults, no field, a broad power prior."""
    grid = Grid.covering(area_points)
    r = receivers_enu.shape[0]
    return RadioMap(
        grid=grid,
        band_centres_hz=np.array([np.nan]),
        exponent=np.array([DEFAULT_EXPONENT]),
        offset_db=np.zeros((1, r)),
        field_db=np.zeros((1, r, grid.nx * grid.ny)),
        sigma_db=np.full((1, r), DEFAULT_SIGMA_DB),
        power_mean_db=np.zeros(1),
        power_std_db=np.full(1, 1e3),
        min_distance_m=float(min_distance_m if min_distance_m is not None else grid.cell),
        has_snr=has_snr,
        settings=None,
    )


@dataclass(frozen=True)
class _Parametric:
    centres: np.ndarray
    band: np.ndarray  # (N,)
    exponent: np.ndarray  # (K,)
    offset: np.ndarray  # (K, R)
    logd: np.ndarray  # (N, R)


def _parametric(obs: Observed, truth: np.ndarray, frequency_hz: np.ndarray, d_min: float) -> _Parametric:
    centres = band_centres(frequency_hz)
    band = band_index(frequency_hz, centres)
    logd = _logd(truth, obs.receivers_enu, d_min)
    heard = _heard_hard(obs)
    pooled = _fit_log_distance(obs.signal, heard, logd)
    if pooled is None:
        pooled = (np.zeros(obs.signal.shape[1]), DEFAULT_EXPONENT)
    exps, offs = [], []
    for b in range(centres.size):
        sel = band == b
        fit = _fit_log_distance(obs.signal[sel], heard[sel], logd[sel]) if sel.sum() >= 10 else None
        off, n = fit if fit is not None else pooled
        exps.append(n)
        offs.append(off)
    return _Parametric(centres, band, np.array(exps), np.stack(offs), logd)


def _fit_log_distance_bands(signal: np.ndarray, used: np.ndarray, par: _Parametric) -> _Parametric:
    """Refit offsets and exponents per band on (heard + imputed) signals; bands too small keep theirs."""
    exps, offs = par.exponent.copy(), par.offset.copy()
    for b in range(par.centres.size):
        sel = par.band == b
        fit = _fit_log_distance(signal[sel], used[sel], par.logd[sel]) if sel.sum() >= 10 else None
        if fit is not None:
            offs[b], exps[b] = fit
    return replace(par, exponent=exps, offset=offs)


def fit_radio_map(
    obs: Observed,
    truth_enu: np.ndarray,
    frequency_hz: np.ndarray,
    settings: FieldSettings,
    has_snr: bool = True,
    grid: Grid | None = None,
    parametric: _Parametric | None = None,
    impute_parametric: bool = True,
) -> RadioMap:
    """Fit the map on labelled (training) sessions; `grid` defaults to the truths' bounding box."""
    grid = grid or Grid.covering(truth_enu)
    d_min = grid.cell
    par = parametric or _parametric(obs, truth_enu, frequency_hz, d_min)
    k, (n, r) = par.centres.size, obs.signal.shape
    heard = _heard_hard(obs) & (_heard_hard(obs).sum(axis=1, keepdims=True) >= 2)
    mu = par.offset[par.band] - 10.0 * par.exponent[par.band][:, None] * par.logd  # (N, R)
    s = settings.bandwidth_m / grid.cell
    k0 = 1.0 / (2.0 * math.pi * s * s)  # a sample's own weight at its own position (normalised kernel)
    at_truth = np.zeros((n, r))
    field = np.zeros((k, r, grid.ny, grid.nx))
    num = np.zeros_like(field)
    den = np.zeros_like(field)
    cens = (obs.censored >= 0.5) & (heard.sum(axis=1, keepdims=True) >= 2)
    sig = np.full((n, r), DEFAULT_SIGMA_DB)
    signal = obs.signal.copy()
    for _ in range(ROUNDS):
        resid = obs.signal - mu - at_truth
        power = np.where(heard, resid, 0).sum(axis=1) / np.maximum(heard.sum(axis=1), 1)
        # EM step for the censored readings: E[residual | signal below its threshold]
        u = obs.threshold - power[:, None] - mu
        a = (u - at_truth) / sig
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            mills = np.exp(norm.logpdf(a) - norm.logcdf(a))
        imputed = power[:, None] + mu + at_truth - sig * np.nan_to_num(mills, nan=0.0, posinf=0.0)
        signal = np.where(cens, imputed, obs.signal)
        used = heard | cens
        if impute_parametric:
            refit = _fit_log_distance_bands(signal - at_truth, used, par)
            mu = refit.offset[refit.band] - 10.0 * refit.exponent[refit.band][:, None] * refit.logd
            par = refit
        e = np.where(used, signal - mu - power[:, None], 0.0)
        for ri in range(r):
            rows = used[:, ri]
            pts = truth_enu[rows]
            for b in range(k):
                w = np.where(par.band[rows] == b, 1.0, settings.cross_band)
                num[b, ri] = gaussian_filter(grid.splat(pts, w * e[rows, ri]), s, mode="constant")
                den[b, ri] = gaussian_filter(grid.splat(pts, w), s, mode="constant")
                field[b, ri] = np.clip(
                    num[b, ri] / (den[b, ri] + settings.shrinkage * k0), -MAX_FIELD_DB, MAX_FIELD_DB
                )
        for ri in range(r):
            for b in range(k):
                sel = par.band == b
                at_truth[sel, ri] = grid.sample(field[b, ri], truth_enu[sel])
        for ri in range(r):
            for b in range(k):
                sel = par.band == b
                h = sel & heard[:, ri]
                if h.sum() >= 5:  # in-sample spread of heard residuals: the next round's E-step σ
                    sig[sel, ri] = max(float(np.std(e[h, ri] - at_truth[h, ri])), MIN_SIGMA_DB)
    # leave-one-out residuals: each sample's own kernel weight (≈ k0) removed from its field value
    sigma = np.full((k, r), DEFAULT_SIGMA_DB)
    resid = obs.signal - mu - at_truth
    power = np.where(heard, resid, 0).sum(axis=1) / np.maximum(heard.sum(axis=1), 1)
    n_heard = heard.sum(axis=1)
    dof = np.where(n_heard >= 2, 1.0 - 1.0 / np.maximum(n_heard, 1), 0.0)
    for b in range(k):
        sel = par.band == b
        for ri in range(r):
            rows = sel & heard[:, ri]
            if rows.sum() < 5:
                continue
            pts = truth_enu[rows]
            e = obs.signal[rows, ri] - mu[rows, ri] - power[rows]
            nu, de = grid.sample(num[b, ri], pts), grid.sample(den[b, ri], pts)
            loo = np.clip(
                (nu - k0 * e) / (np.maximum(de - k0, 0.0) + settings.shrinkage * k0),
                -MAX_FIELD_DB,
                MAX_FIELD_DB,
            )
            var = np.sum((e - loo) ** 2) / max(float(dof[rows].sum()), 1.0)
            sigma[b, ri] = max(math.sqrt(var), MIN_SIGMA_DB)
    p_mean = np.zeros(k)
    p_std = np.full(k, DEFAULT_POWER_SPREAD_DB)
    for b in range(k):
        sel = (par.band == b) & (n_heard >= 2)
        if sel.sum() >= 10:
            p_mean[b] = float(np.mean(power[sel]))
            p_std[b] = float(np.std(power[sel])) * settings.power_prior_scale
    return RadioMap(
        grid=grid,
        band_centres_hz=par.centres,
        exponent=par.exponent,
        offset_db=par.offset,
        field_db=field.reshape(k, r, -1),
        sigma_db=sigma,
        power_mean_db=p_mean,
        power_std_db=np.maximum(p_std, MIN_SIGMA_DB),
        min_distance_m=d_min,
        has_snr=has_snr,
        settings=settings,
    )
