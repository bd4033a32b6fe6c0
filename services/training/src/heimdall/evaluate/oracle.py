"""Bayes oracle for simulated sessions (docs/EVALUATION.md): the posterior of the transmitter position.

Given the world's true noiseless field ``field_r(x, b)`` (`MeasurementModel.field_db_enu`) and the
simulator's exact measurement distribution (see `MeasurementModel`), the likelihood of one session is

    p(data | x, P) = Π_heard N(ŝ_r; field_r(x) + P, σ_h,r²) · Π_unheard Φ((T_r − field_r(x) − P) / σ_u)

with ``ŝ_r = 10·log10(10^(y_r/10) − N_r)`` recovered from the row's measured total power y_r
(``signal_strength_db``) and noise power N_r, σ = 3 dB dynamic shadowing and ``T_r = noise floor + 6 dB``
the detection threshold on s_r. Priors: x uniform over the world's `Area`, P uniform in dBm on
[P_min, P_max] (log-uniform in watts); P is integrated out. The posterior mean is the estimator with
the least expected squared error, so its RMSE is the floor every method is measured against.

Scope: this likelihood is exact for scenarios like ``nw-italy-v1``, whose fading is rescaled to unit mean
power per recording (a heard row reveals s_r) and whose rows' SNR divides by the true noise power (heard
⟺ s_r above the threshold, to the measurement blur). A scenario without that normalisation, or with
blind SNR rows (``nw-italy-v2``), adds the time-averaged fading residual and a blurred detection step:
its oracle is :mod:`heimdall.evaluate.oracle_faded`, and
:class:`~heimdall.evaluate.oracle_localizer.BayesOracleLocalizer` picks the right one from the scenario.

Modelling notes (assumptions stated):

* Measurement blur. ``P̂ − N`` fluctuates around ``10^(s/10)`` with variance ``(N² + 2SN)/T`` (T IQ
  samples): ~0.09 dB at the threshold for T = 1250, smaller for louder signals or longer recordings. It
  is negligible next to σ = 3 dB; passing `n_samples` adds it in quadrature to σ (heard: at ŝ_r,
  unheard: at the threshold, where it blurs the detection step), otherwise σ = 3 dB exactly.
* Selection. Sessions are kept iff ≥ `min_receivers_heard` receivers hear. That event is a function of
  the data, so ``p(x | data, kept) ∝ p(x) p(data | x)``: the keep probability divides the prior of kept
  sessions and multiplies back through the likelihood. The uniform prior is therefore correct as is.
* Missing receivers (NaN power or SNR, e.g. an outage) carry no information and are left out.
* The transmit-power integral. The heard terms are a Gaussian in P, combined in closed form
  (precision-weighted mean d̄, precision Λ = 1/s²). Where no unheard factor ``Φ(·)`` differs from 1
  within d̄ + 6s, the likelihood is that Gaussian's mass inside the prior (normal CDFs in log space).
  Elsewhere the integrand ``N(P; d̄, s²)·Π Φ`` is log-concave: Newton finds its mode, and 12-node
  Gauss–Legendre quadrature runs over the window holding its mass (see `_power_window`); against a
  dense reference the log-likelihood is within 0.005 nats over the cells that matter.
* Space. A grid of cells ≤ `cell_m` tiling the area exactly; cell-centre likelihoods (midpoint rule).
  Coarse cells are screened with an upper bound (heard terms only, since Φ ≤ 1): cells whose bound is
  more than 30 nats below the best exact cell are dropped (neglected mass < 1e-8). Coarse cells within
  15 nats of the best, and every neighbour of one within 9 nats, are split `refine` × `refine`
  (250 m for 1 km cells: the static-shadowing grid spacing); the others keep their coarse value.
  Each cell's uniform spread (size²/12) is added to the covariance. The field is rough (7 dB
  shadowing decorrelating over 4 km), so resolution matters: 1 km cells alone move the posterior
  mean by ~4 km RMS against 125 m cells, 250 m cells by ~0.4 km (~1 % of the oracle's RMSE here,
  adding in quadrature: < 0.01 % to the RMSE); the refinement rule differs from refining every
  cell by ~20 m RMS.
* Sessions are independent: with ``workers`` > 1 they are spread over threads (numpy and scipy
  release the GIL inside their array kernels; the gain was not measurable on the shared, saturated
  2-core machine this was written on). Results do not depend on the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr

from heimdall.evaluate.oracle_grid import (
    MAX_CELL_M,
    N_TOP_SEED,
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

P_WINDOW_SIGMAS = 6.0
P_TAIL_DECAYS = 15.0
_DB_PER_LN = 10.0 / math.log(10.0)
N_NODES = 12
NEWTON_STEPS = 3
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
Z_SURE = 8.5  # Φ(8.5) = 1 − 1e-17: a non-detection factor indistinguishable from 1
_GL_T, _GL_W = np.polynomial.legendre.leggauss(N_NODES)
_GL_T = 0.5 * (_GL_T + 1.0)  # nodes on [0, 1]
_LOG_GL_W = np.log(0.5 * _GL_W)


def _log_diff_ndtr(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """``log(Φ(b) − Φ(a))`` for a < b, stable in both tails."""
    upper = a > 0.0
    hi = np.where(upper, log_ndtr(-a), log_ndtr(b))
    lo = np.where(upper, log_ndtr(-b), log_ndtr(a))
    return hi + np.log1p(-np.exp(lo - hi))


@dataclass(frozen=True)
class _Session:
    """One session's data in the form the likelihood needs."""

    band: int
    heard: NDArray[np.int64]  # receiver indices
    unheard: NDArray[np.int64]
    s_hat: NDArray[np.float64]  # (H,) recovered session-mean power of the heard receivers
    prec: NDArray[np.float64]  # (H,) 1/σ_h²
    sigma_u: NDArray[np.float64]  # (U,)
    threshold: NDArray[np.float64]  # (U,)


def _heard_terms(
    field: NDArray[np.float64], ses: _Session, p_min: float, p_max: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, NDArray[np.float64]]:
    """Heard factor in closed form: ``Π_heard N(ŝ_r; f_r + P, σ_r²) = K · N(P; d̄, s²)`` per cell.

    Returns ``(log K, d̄, s, log Z)`` with Z the mass of N(d̄, s²) inside the power prior, so that
    ``log K + log Z − log ΔP`` is the heard-only likelihood: an upper bound on the full one (Φ ≤ 1).
    """
    d = ses.s_hat[None, :] - field[:, ses.heard]
    lam = ses.prec.sum()
    dbar = (d * ses.prec).sum(axis=1) / lam
    s = 1.0 / math.sqrt(lam)
    chi2 = (((d - dbar[:, None]) ** 2) * ses.prec).sum(axis=1)
    const = -0.5 * np.sum(np.log(2.0 * np.pi / ses.prec)) + 0.5 * math.log(2.0 * math.pi / lam)
    log_z = _log_diff_ndtr((p_min - dbar) / s, (p_max - dbar) / s)
    return const - 0.5 * chi2, dbar, s, log_z


def _log_phi(margin: NDArray[np.float64], p: NDArray[np.float64], sigma_u: NDArray[np.float64]) -> NDArray:
    """``Σ_u log Φ((margin_u − P)/σ_u)`` for ``margin (C, U)`` and increasing nodes ``p (C, K)`` → ``(C, K)``.

    A factor whose z is ≥ `Z_SURE` even at a row's largest node is 1 to double precision: skipped.
    """
    out = np.zeros(p.shape)
    for u, sig in enumerate(sigma_u):
        rows = np.flatnonzero(margin[:, u] - p[:, -1] < Z_SURE * sig)
        if rows.size == p.shape[0]:
            out += log_ndtr((margin[:, u, None] - p) / sig)
        elif rows.size:
            out[rows] += log_ndtr((margin[rows, u, None] - p[rows]) / sig)
    return out


def _log_phi_terms(
    margin: NDArray[np.float64], p: NDArray[np.float64], sigma_u: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``Σ_u log Φ(z_u)`` with ``z_u = (margin_u − P)/σ_u`` and its first two derivatives in P.

    ``margin (C, U)``, ``p (C, ...)``; uses the inverse Mills ratio λ = φ/Φ: d/dz log Φ = λ,
    d²/dz² log Φ = −λ(λ + z) (in (−1, 0): log Φ is concave, so the P integrand is log-concave).
    """
    extra = (None,) * (p.ndim - 1)
    z = (margin[(slice(None), *extra, slice(None))] - p[..., None]) / sigma_u
    log_cdf = log_ndtr(z)
    lam = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_cdf)
    return log_cdf.sum(axis=-1), (-lam / sigma_u).sum(axis=-1), (-lam * (lam + z) / sigma_u**2).sum(axis=-1)


def _power_window(
    margin: NDArray[np.float64],
    ses: _Session,
    dbar: NDArray[np.float64],
    s: float,
    p_min: float,
    p_max: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Interval of P holding the mass of ``N(P; d̄, s²)·Π_u Φ(z_u)`` within the prior (s = ∞: nothing heard).

    The integrand is log-concave; its mode p* ≤ d̄ (the Φ factors only pull P down). The slope of its
    log is concave in P (the Φ factors' curvature grows with P), so Newton started at min(d̄, P_max) ≥ p*
    decreases monotonically onto p* (no overshoot; 3 steps suffice, tested), and started below a mode
    beyond P_max it jumps past it: either way ``p > P_max`` after a step iff p* > P_max. Below p* the
    log-curvature is at least 1/s², above it at least that at p* (1/s*²), hence [p − 6s, p + 6s*].
    A mode beyond a prior end makes the integrand decay from that end at least as fast as
    exp(−|slope|·u) and as N(0, s²), so the window keeps min(6s, 15/|slope|) there.
    """
    if math.isinf(s):  # nothing heard: Π Φ is largest at P_min and decays from there
        slope = _log_phi_terms(margin, np.full(margin.shape[0], p_min), ses.sigma_u)[1]
        width = np.minimum(p_max - p_min, P_TAIL_DECAYS / np.maximum(-slope, 1e-300))
        return np.full_like(width, p_min), p_min + width
    p = np.minimum(dbar, p_max)
    for _ in range(NEWTON_STEPS):
        _, d1, d2 = _log_phi_terms(margin, p, ses.sigma_u)
        p = p + ((dbar - p) / s**2 + d1) / (1.0 / s**2 - d2)
    s_mode = 1.0 / np.sqrt(1.0 / s**2 - _log_phi_terms(margin, p, ses.sigma_u)[2])
    lo = p - P_WINDOW_SIGMAS * s
    hi = p + P_WINDOW_SIGMAS * s_mode
    for edge, beyond in ((p_max, p > p_max), (p_min, p < p_min)):
        if beyond.any():
            idx = np.flatnonzero(beyond)
            slope = (dbar[idx] - edge) / s**2 + _log_phi_terms(
                margin[idx], np.full(idx.size, edge), ses.sigma_u
            )[1]
            width = np.minimum(P_WINDOW_SIGMAS * s, P_TAIL_DECAYS / np.abs(slope))
            lo[idx], hi[idx] = (edge - width, edge) if edge == p_max else (edge, edge + width)
    return np.clip(lo, p_min, p_max), np.clip(hi, p_min, p_max)


def _log_likelihood(
    field: NDArray[np.float64], ses: _Session, p_min: float, p_max: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact ``log p(data | x)`` (P integrated over its prior) and its heard-only upper bound, per cell."""
    n = field.shape[0]
    log_dp = math.log(p_max - p_min)
    if ses.heard.size:
        log_k, dbar, s, log_z = _heard_terms(field, ses, p_min, p_max)
        bound = log_k + log_z - log_dp
        top = np.minimum(dbar + P_WINDOW_SIGMAS * s, p_max)
    else:  # nothing heard: P stays uniform over its prior
        log_k, dbar, s = np.zeros(n), np.zeros(n), math.inf
        bound, top = np.zeros(n), np.full(n, p_max)
    if ses.unheard.size == 0:
        return bound, bound
    margin = ses.threshold[None, :] - field[:, ses.unheard]  # (C, U)
    # Φ is decreasing in P: where every unheard factor is ≈ 1 up to the heard mass's top, log E = 0
    active = np.flatnonzero(((margin - top[:, None]) / ses.sigma_u[None, :]).min(axis=1) < Z_SURE)
    out = bound.copy()
    if active.size:
        m_a, dbar_a = margin[active], dbar[active]
        lo, hi = _power_window(m_a, ses, dbar_a, s, p_min, p_max)
        width = np.maximum(hi - lo, 1e-300)
        p = lo[:, None] + width[:, None] * _GL_T[None, :]  # (A, K) Gauss–Legendre nodes
        log_f = _LOG_GL_W[None, :] + _log_phi(m_a, p, ses.sigma_u)
        if ses.heard.size:
            log_f = log_f - 0.5 * ((p - dbar_a[:, None]) / s) ** 2 - math.log(s) - _LOG_SQRT_2PI
        out[active] = log_k[active] + np.log(width) + _lse(log_f) - log_dp
    return out, bound


def _prepare(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    n_samples: int | None,
) -> list[_Session]:
    ss = np.asarray(signal_strength_db, np.float64)
    snr = np.asarray(snr_db, np.float64)
    band = np.asarray(band_index)
    n_rx = len(model.noise_floor_dbm)
    if ss.ndim != 2 or ss.shape != snr.shape:
        raise ValueError(f"signal_strength_db and snr_db must both be (N, R); got {ss.shape} and {snr.shape}")
    if ss.shape[1] != n_rx:
        raise ValueError(f"expected {n_rx} receivers (the model's), got {ss.shape[1]}")
    if band.shape != (ss.shape[0],) or (band.size and not np.issubdtype(band.dtype, np.integer)):
        raise ValueError(f"band_index must be ({ss.shape[0]},) integers, got {band.shape} {band.dtype}")
    n_bands = len(model.band_frequencies_hz)
    if np.any((band < 0) | (band >= n_bands)):
        raise ValueError(f"band_index out of range 0..{n_bands - 1}")
    if np.any(np.isinf(ss)) or np.any(np.isinf(snr)):
        raise ValueError("signal_strength_db and snr_db must be finite (NaN marks a missing receiver)")
    if n_samples is not None and n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")

    noise_dbm = model.noise_floor_dbm
    noise_mw = 10.0 ** (noise_dbm / 10.0)
    present = ~(np.isnan(ss) | np.isnan(snr))
    heard = present & (snr >= model.detection_snr_db)
    unheard = present & ~heard
    excess = 10.0 ** (np.where(heard, ss, 0.0) / 10.0) - noise_mw[None, :]
    if np.any(heard & (excess <= 0.0)):
        raise ValueError("a heard receiver's signal_strength_db is not above its noise floor")
    s_hat = np.where(heard, 10.0 * np.log10(np.where(heard, excess, 1.0)), np.nan)

    sigma = model.dynamic_shadowing_sigma_db
    var_h = np.full(ss.shape, sigma**2)
    threshold = model.detection_threshold_dbm
    var_u = np.full(n_rx, sigma**2)
    if n_samples is not None:  # blur of the measured power, see the module notes
        s_lin = 10.0 ** (np.where(heard, s_hat, 0.0) / 10.0)
        var_h += np.where(
            heard, _DB_PER_LN**2 * (noise_mw**2 + 2 * s_lin * noise_mw) / (n_samples * s_lin**2), 0
        )
        s_thr = 10.0 ** (threshold / 10.0)
        var_u += _DB_PER_LN**2 * (noise_mw**2 + 2 * s_thr * noise_mw) / (n_samples * s_thr**2)
    sessions = []
    for i in range(ss.shape[0]):
        h, u = np.flatnonzero(heard[i]), np.flatnonzero(unheard[i])
        sessions.append(
            _Session(
                band=int(band[i]),
                heard=h,
                unheard=u,
                s_hat=s_hat[i, h],
                prec=1.0 / var_h[i, h],
                sigma_u=np.sqrt(var_u[u]),
                threshold=threshold[u],
            )
        )
    return sessions


def _session_posterior(grid: _Grid, ses: _Session, p_min: float, p_max: float) -> GridPosterior:
    field = grid.coarse_field[ses.band]
    if ses.heard.size:  # the heard-only bound screens cells cheaply (every Φ factor is ≤ 1)
        log_k, _, _, log_z = _heard_terms(field, ses, p_min, p_max)
        bound = log_k + log_z - math.log(p_max - p_min)
    else:
        bound = np.zeros(field.shape[0])
    top = np.argpartition(-bound, min(N_TOP_SEED, bound.size - 1))[:N_TOP_SEED]
    best = _log_likelihood(field[top], ses, p_min, p_max)[0].max()
    cand = np.flatnonzero(bound >= best - SCREEN_NATS)
    ll_c = _log_likelihood(field[cand], ses, p_min, p_max)[0]

    return refine_posterior(grid, ses.band, cand, ll_c, lambda f: _log_likelihood(f, ses, p_min, p_max)[0])


def bayes_posterior(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    cell_m: float = MAX_CELL_M,
    *,
    refine: int = 4,
    n_samples: int | None = None,
    workers: int | None = None,
) -> list[GridPosterior]:
    """Per-session grid posteriors of the transmitter position (world frame ENU); see `bayes_oracle`."""
    one, n = _per_session(model, band_index, signal_strength_db, snr_db, cell_m, refine, n_samples)
    return map_sessions(one, n, workers)


def _per_session(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    cell_m: float,
    refine: int,
    n_samples: int | None,
) -> tuple[Callable[[int], GridPosterior], int]:
    """The posterior of session ``i`` as a function, and the number of sessions (inputs checked)."""
    check_grid(cell_m, refine)
    sessions = _prepare(model, band_index, signal_strength_db, snr_db, n_samples)
    grid = _grid(model, cell_m, int(refine))
    p_min, p_max = model.tx_power_dbm_min, model.tx_power_dbm_max
    return (lambda i: _session_posterior(grid, sessions[i], p_min, p_max)), len(sessions)


def bayes_oracle(
    model: MeasurementModel,
    band_index: ArrayLike,
    signal_strength_db: ArrayLike,
    snr_db: ArrayLike,
    cell_m: float = MAX_CELL_M,
    *,
    refine: int = 4,
    n_samples: int | None = None,
    workers: int | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Posterior mean ``(N, 2)`` and covariance ``(N, 2, 2)`` of the transmitter position.

    In the world's frame (``model.world.frame``) ENU metres; the caller converts. Inputs per session:
    band index ``(N,)`` and the rows' ``signal_strength_db``/``snr_db`` ``(N, R)`` in the model's
    receiver order (NaN = receiver missing). ``cell_m`` ≤ 1 km is the coarse cell, split
    ``refine`` × ``refine`` where the posterior lives; ``n_samples`` (IQ samples per recording) adds
    the tiny measured-power blur. Raises ValueError on mismatched shapes or receiver counts.
    """
    one, n = _per_session(model, band_index, signal_strength_db, snr_db, cell_m, refine, n_samples)
    return map_moments(one, n, workers)
