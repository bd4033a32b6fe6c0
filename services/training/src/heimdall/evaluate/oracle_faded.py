"""The Bayes oracle for recordings whose fading is not normalised (scenario ``nw-italy-v2``).

The v1 oracle (:mod:`heimdall.evaluate.oracle`) assumes a heard receiver reveals its session-mean power
``s_r = field_r(x) + P + ε_r``. Without per-recording normalisation the measured power also carries the
time-averaged fading residual F_r (:mod:`heimdall.evaluate.fading_residual`), whose law is set by the
receiver's own Rician K and the session's maximum Doppler fd (the simulator knows both), so

    p(data | x, P) = Π_heard p_r(ŝ_r − field_r(x) − P) · Π_unheard C_r(T_r − field_r(x) − P)

with p_r the density of ``ε + F_r`` (ε ~ N(0, σ² + blur²), blur the tiny measured-power fluctuation
of the v1 notes) and C_r the CDF of ``F_r + ε − b`` with the blind noise estimator's probit folded in
(:mod:`heimdall.evaluate.detection_blur`: heard ⟺ estimated SNR ≥ 6 dB, i.e. ŝ above a threshold
blurred by s_b and offset by b). Both are exact mixtures over N_DRAWS Monte Carlo draws of F for that K
and fd·T, tabulated per receiver and session. Assumptions stated:

* ŝ_r = 10·log10(10^(y_r/10) − N_r) from the row's measured power y_r and the receiver's true noise
  power, as in v1; the blind estimator enters only through which receivers are heard.
* Given ŝ, whether a receiver is heard depends on the noise estimate alone (not on x or P), so a heard
  receiver's factor is the density of ŝ; the probit measured around the threshold describes it.
* P uniform in dBm on the prior range is integrated numerically (the likelihood is no longer
  Gaussian in P): composite Simpson on a uniform grid of ≈ 0.39 dB whose spacing is two table steps,
  so every node shares one interpolation weight per cell and receiver. Every factor is a mixture of
  Gaussians of width ≥ 3 dB, so the integrand's log-curvature is ≥ −R/9 per dB² (width ≥ 1.1 dB):
  against adaptive quadrature over the exact mixtures the log-likelihood agrees to < 0.02 nats over the
  cells within 30 nats of the truth (tested; table interpolation and binning, ~1e-3 per receiver).
* Space: the v1 grid and refinement rule, screened with the trapezoid on every 8th table step
  (≈ 1.5 dB) plus `SCREEN_SLACK` nats, since no cheap exact bound exists here. Coarse cells whose
  screen value is more than `REFINE_NATS` below the best keep it (they hold < e^-12 of the mass
  each and are never refined); the others get the exact integral.
* Missing receivers (NaN rows) carry no information; the selection (≥ `min_receivers_heard` heard) is a
  function of the data, so the uniform prior stands, as in v1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.evaluate.detection_blur import DetectionBlur
from heimdall.evaluate.fading_residual import TABLE_STEP_DB, ResidualTables, fading_draws, residual_tables
from heimdall.evaluate.oracle_grid import (
    MAX_CELL_M,
    N_TOP_SEED,
    REFINE_NATS,
    SCREEN_NATS,
    GridPosterior,
    _Grid,
    _grid,
    _lse,
    check_grid,
    map_moments,
    map_sessions,
    refine_posterior,
)
from heimdall.simulate.propagation import MeasurementModel

EXACT_STRIDE = 2  # Simpson on every 2nd table step (≈ 0.39 dB)
SCREEN_STRIDE = 8  # the screen's trapezoid on every 8th (≈ 1.5 dB)
SCREEN_SLACK = 3.0
_DB_PER_LN = 10.0 / math.log(10.0)

__all__ = ["FadedSessions", "faded_bayes_oracle", "faded_bayes_posterior"]


@dataclass(frozen=True)
class FadedSessions:
    """What the v2 oracle needs beyond the rows: each session's fading conditions and the detection blur."""

    doppler_hz: NDArray[np.float64]  # (N,) maximum Doppler of the session
    rician_k_db: NDArray[np.float64]  # (N, R) per receiver, the model's receiver order
    duration_s: NDArray[np.float64]  # (N,)
    n_samples: NDArray[np.int64]  # (N,) IQ samples per recording
    blur: DetectionBlur
    normalised: bool = False  # a scenario that still rescales fading per recording: F ≡ 0 dB


@dataclass(frozen=True, eq=False)
class _Faded:
    band: int
    idx: NDArray[np.int64]  # receivers used (heard first, then unheard)
    n_heard: int
    anchor: NDArray[np.float64]  # (R',) ŝ_r for heard, T_r for unheard
    tables: ResidualTables


@dataclass(frozen=True)
class _PowerGrid:
    """The power grid: ``8·q`` table steps over the prior; Simpson on every 2nd, the screen on every 8th."""

    p_min: float
    p_max: float
    step: float  # the residual tables' step (dB)
    n_steps: int

    @classmethod
    def over(cls, p_min: float, p_max: float) -> _PowerGrid:
        q = max(1, math.ceil((p_max - p_min) / (SCREEN_STRIDE * TABLE_STEP_DB)))
        n_steps = SCREEN_STRIDE * q
        return cls(p_min, p_max, (p_max - p_min) / n_steps, n_steps)

    def rule(self, stride: int) -> tuple[int, NDArray[np.float64]]:
        """Node count and log weights: Simpson for the exact stride, the trapezoid for the screen's."""
        n_int = self.n_steps // stride
        h = stride * self.step
        if stride == EXACT_STRIDE:
            w = np.full(n_int + 1, 2.0)
            w[1::2] = 4.0
            w[0] = w[-1] = 1.0
            w *= h / 3.0
        else:
            w = np.full(n_int + 1, h)
            w[0] = w[-1] = h / 2.0
        return n_int + 1, np.log(w)


@dataclass(frozen=True, eq=False)
class _Rows:
    """The validated inputs of a batch of sessions."""

    band: NDArray[np.int64]
    ss: NDArray[np.float64]
    snr: NDArray[np.float64]
    k_db: NDArray[np.float64]
    doppler: NDArray[np.float64]
    duration: NDArray[np.float64]
    n_samples: NDArray[np.int64]
    blur: DetectionBlur
    normalised: bool


def _validate(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    faded: FadedSessions,
) -> _Rows:
    """The v1 shape and value checks plus the fading conditions' (ValueError naming the problem)."""
    from heimdall.evaluate.oracle import _prepare as check_rows

    ss = np.asarray(signal_strength_db, np.float64)
    snr = np.asarray(snr_db, np.float64)
    band = np.asarray(band_index)
    check_rows(model, band, ss, snr, None)
    n = ss.shape[0]
    k_db = np.asarray(faded.rician_k_db, np.float64)
    doppler = np.asarray(faded.doppler_hz, np.float64)
    if k_db.shape != ss.shape or doppler.shape != (n,):
        raise ValueError(
            f"rician_k_db must be {ss.shape} and doppler_hz ({n},), got {k_db.shape} and {doppler.shape}"
        )
    present = ~(np.isnan(ss) | np.isnan(snr))
    if not faded.normalised and np.any(present & np.isnan(k_db)):
        raise ValueError("the faded oracle needs every present receiver's Rician K (rician_k_db is NaN)")
    if np.any(~np.isfinite(doppler) | (doppler < 0)):
        raise ValueError("doppler_hz must be finite and >= 0")
    duration = np.broadcast_to(np.asarray(faded.duration_s, np.float64), (n,))
    n_samples = np.broadcast_to(np.asarray(faded.n_samples, np.int64), (n,))
    if np.any(~(duration > 0)) or np.any(n_samples < 2):
        raise ValueError("duration_s must be > 0 and n_samples >= 2")
    return _Rows(
        band.astype(np.int64), ss, snr, k_db, doppler, duration, n_samples, faded.blur, faded.normalised
    )


def _session(model: MeasurementModel, rows: _Rows, i: int, power: _PowerGrid) -> _Faded:
    """Session i's receivers, anchors and residual tables."""
    noise_mw = 10.0 ** (model.noise_floor_dbm / 10.0)
    threshold = model.detection_threshold_dbm
    sigma2 = model.dynamic_shadowing_sigma_db**2
    present = ~(np.isnan(rows.ss[i]) | np.isnan(rows.snr[i]))
    heard = present & (np.nan_to_num(rows.snr[i], nan=-np.inf) >= model.detection_snr_db)
    h, u = np.flatnonzero(heard), np.flatnonzero(present & ~heard)
    idx = np.concatenate([h, u])
    excess = 10.0 ** (rows.ss[i, h] / 10.0) - noise_mw[h]
    if np.any(excess <= 0.0):
        raise ValueError("a heard receiver's signal_strength_db is not above its noise floor")
    s_hat = 10.0 * np.log10(excess)
    s_lin, t_lin, n_t = excess, 10.0 ** (threshold[u] / 10.0), rows.n_samples[i]
    # measured-power blur (v1 notes): at ŝ for heard receivers, at the threshold for the others
    blur_h = _DB_PER_LN**2 * (noise_mw[h] ** 2 + 2 * s_lin * noise_mw[h]) / (n_t * s_lin**2)
    blur_u = _DB_PER_LN**2 * (noise_mw[u] ** 2 + 2 * t_lin * noise_mw[u]) / (n_t * t_lin**2)
    sigma = np.sqrt(np.concatenate([sigma2 + blur_h, sigma2 + blur_u + rows.blur.sigma_db**2]))
    shift = np.concatenate([np.zeros(h.size), np.full(u.size, -rows.blur.bias_db)])
    if rows.normalised:
        residual = np.zeros((idx.size, 1))
    else:
        draws = fading_draws(float(rows.doppler[i]), float(rows.duration[i]), int(n_t))
        residual = draws.residual_db(rows.k_db[i, idx])
    span = power.p_max - power.p_min
    tables = residual_tables(residual, sigma, shift, np.arange(idx.size) >= h.size, power.step, span)
    return _Faded(
        band=int(rows.band[i]),
        idx=idx,
        n_heard=int(h.size),
        anchor=np.concatenate([s_hat, threshold[u]]),
        tables=tables,
    )


def _log_likelihood(
    field: NDArray[np.float64], ses: _Faded, grid: _PowerGrid, stride: int
) -> NDArray[np.float64]:
    """``log ∫ p(data | x, P) dP / ΔP`` per cell (rows of ``field (C, R)``) on the power grid's `stride`."""
    if ses.idx.size == 0:
        return np.zeros(field.shape[0])
    n_nodes, log_w = grid.rule(stride)
    d = ses.anchor[None, :] - field[:, ses.idx]  # (C, R')
    out = np.empty(field.shape[0])
    chunk = max(1, 2_000_000 // (n_nodes * ses.idx.size))  # bounds the (C, R', K) temporaries
    for a in range(0, field.shape[0], chunk):
        terms = ses.tables.sum_on_grid(d[a : a + chunk], grid.p_min, stride, n_nodes)
        out[a : a + chunk] = _lse(terms + log_w[None, :])
    return out - math.log(grid.p_max - grid.p_min)


def _session_posterior(grid: _Grid, ses: _Faded, power: _PowerGrid) -> GridPosterior:
    def ll(field: NDArray[np.float64]) -> NDArray[np.float64]:
        return _log_likelihood(field, ses, power, EXACT_STRIDE)

    field = grid.coarse_field[ses.band]
    bound = _log_likelihood(field, ses, power, SCREEN_STRIDE) + SCREEN_SLACK
    top = np.argpartition(-bound, min(N_TOP_SEED, bound.size - 1))[:N_TOP_SEED]
    best = ll(field[top]).max()
    cand = np.flatnonzero(bound >= best - SCREEN_NATS)
    # exact where a cell may be refined; the others (≥ 12 nats below the best) keep the screen's value
    ll_c = bound[cand] - SCREEN_SLACK
    close = bound[cand] >= best - REFINE_NATS
    ll_c[close] = ll(field[cand[close]])

    return refine_posterior(grid, ses.band, cand, ll_c, ll)


def faded_bayes_posterior(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    faded: FadedSessions,
    cell_m: float = MAX_CELL_M,
    *,
    refine: int = 4,
    workers: int | None = None,
) -> list[GridPosterior]:
    """Per-session grid posteriors (world frame ENU) under the un-normalised fading model."""
    one, n = _per_session(model, band_index, signal_strength_db, snr_db, faded, cell_m, refine)
    return map_sessions(one, n, workers)


def _per_session(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    faded: FadedSessions,
    cell_m: float,
    refine: int,
) -> tuple[Callable[[int], GridPosterior], int]:
    """The posterior of session ``i`` as a function, and the number of sessions (inputs checked)."""
    check_grid(cell_m, refine)
    rows = _validate(model, band_index, signal_strength_db, snr_db, faded)
    grid = _grid(model, cell_m, int(refine))
    power = _PowerGrid.over(model.tx_power_dbm_min, model.tx_power_dbm_max)

    def one(i: int) -> GridPosterior:
        return _session_posterior(grid, _session(model, rows, i, power), power)

    return one, rows.ss.shape[0]


def faded_bayes_oracle(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    faded: FadedSessions,
    cell_m: float = MAX_CELL_M,
    *,
    refine: int = 4,
    workers: int | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Posterior mean ``(N, 2)`` and covariance ``(N, 2, 2)`` (world frame ENU metres); see the notes."""
    one, n = _per_session(model, band_index, signal_strength_db, snr_db, faded, cell_m, refine)
    return map_moments(one, n, workers)
