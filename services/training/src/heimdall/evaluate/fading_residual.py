"""The time-averaged fading residual of an un-normalised recording, and its tabulated densities.

When the simulator does not rescale each recording's fading to unit mean power (scenario ``nw-italy-v2``),
a receiver's measured session-mean power is ``field + P + ε + F`` with the residual

    F = 10·log10(mean_t |h(t)|²)

of its Rician fading ``h`` over the recording. F's law depends on the receiver's Rician factor K, the
session's maximum Doppler fd and the duration T only through K and fd·T. It has no usable closed form
(a frozen fade, fd·T → 0, gives the Rician power law; a fast one averages towards 0 dB), so it is
computed by seeded Monte Carlo with the simulator's own :func:`~heimdall.simulate.channel.rician_fading`
(``normalise=False``).

Common random numbers. ``h = a·L + b·g`` with ``a = sqrt(K/(K+1))``, ``b = sqrt(1/(K+1))``, L the
line-of-sight phasor and g the scatter, both drawn from the same uniforms whatever K (one
``rng.random`` call), and the simulator's interpolation is linear. Hence

    mean|h|² = a²·mean|L|² + b²·mean|g|² + 2ab·Re mean(L̄·g)

exactly (to float32 rounding): two calls with K = ±300 dB give the three per-draw moments once per
session (:class:`FadingDraws`), and every receiver's K then costs a multiply-add. The moments are
computed on at most max(256, 80·fd·T) samples over the recording's duration (not the recording's
own rate): F depends on the rate only through the simulator's coarse-grid interpolation, and the
tests show the per-draw difference against the full 12.5 kHz rate (same draws) has RMS < 0.02 dB, mean
< 0.005 dB and maximum < 0.1 dB: nothing next to the 3 dB dynamic shadowing it is convolved with.

Tables. The oracle needs, per receiver, the density of ``ε + F`` (heard: its measured power) and the
CDF of ``ε' + F`` (not heard: the probability that the measurement stays below the detection
threshold), ε ~ N(0, s²). Over the empirical law of F (the M draws) both are exact mixtures; F is
first binned linearly onto a 0.2 dB lattice (mean kept exactly, variance + ≤ 0.01 dB² next to
s² ≥ 9 dB²) and the mixture is tabulated in log space on a ≤ 0.2 dB grid
(linear interpolation in log: error ≤ h²/(8 s²) < 6e-4 nats), spanning the draws ± 12·s plus the
transmit-power prior's width, so that every node of the oracle's power grid for a cell that matters
lies inside; beyond, values are held at the ends, ≥ 70 nats below the receiver's peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr

from heimdall.simulate.channel import rician_fading

N_DRAWS = 2000
MC_SEED = 20_260_817  # fixed: F's law is a property of (K, fd·T), not of a session
MIN_MC_SAMPLES = 256
MC_SAMPLES_PER_DOPPLER_CYCLE = 80
K_EXTREME_DB = 300.0  # a = 1, b = 1e-15 (and vice versa): exactly L or g in float32
BIN_DB = 0.2
TABLE_STEP_DB = 0.2
TABLE_HALF_WIDTH_SIGMAS = 12.0
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

__all__ = ["FadingDraws", "ResidualTables", "fading_draws", "mc_samples", "residual_tables"]


@dataclass(frozen=True, eq=False)
class FadingDraws:
    """Per-draw moments of the LOS and scatter parts of one session's fading (common to its receivers)."""

    fd_t: float  # maximum Doppler × duration (cycles)
    los: NDArray[np.float64]  # (M,) mean |L|²
    scatter: NDArray[np.float64]  # (M,) mean |g|²
    cross: NDArray[np.float64]  # (M,) Re mean(conj(L)·g)

    def power(self, k_db: ArrayLike) -> NDArray[np.float64]:
        """``mean_t |h|²`` ``(R, M)`` for Rician factors ``k_db (R,)`` (the draws shared by every K)."""
        k = 10.0 ** (np.atleast_1d(np.asarray(k_db, np.float64)) / 10.0)
        a2, b2 = (k / (k + 1.0))[:, None], (1.0 / (k + 1.0))[:, None]
        return a2 * self.los + b2 * self.scatter + 2.0 * np.sqrt(a2 * b2) * self.cross

    def residual_db(self, k_db: ArrayLike) -> NDArray[np.float64]:
        """F = 10·log10(mean_t |h|²) ``(R, M)`` in dB."""
        return 10.0 * np.log10(np.maximum(self.power(k_db), 1e-30))


def mc_samples(fd_t: float, n_samples: int) -> int:
    """Samples over the recording used for the Monte Carlo (never more than the recording has)."""
    want = max(MIN_MC_SAMPLES, math.ceil(MC_SAMPLES_PER_DOPPLER_CYCLE * fd_t))
    return int(min(n_samples, want))


@lru_cache(maxsize=64)
def _draws(fd_t: float, n_mc: int, n_draws: int, seed: int) -> FadingDraws:
    def moments(k_db: float) -> NDArray[np.complex64]:
        # duration 1 s, Doppler fd·T: the simulator's own fading, depending only on fd·T and the rate
        rng = np.random.default_rng(seed)
        return rician_fading(rng, n_mc, float(n_mc), np.full(n_draws, k_db), fd_t, normalise=False)

    los, scatter = moments(K_EXTREME_DB), moments(-K_EXTREME_DB)
    los64, sc64 = los.astype(np.complex128), scatter.astype(np.complex128)
    out = FadingDraws(
        fd_t=fd_t,
        los=np.mean(np.abs(los64) ** 2, axis=1),
        scatter=np.mean(np.abs(sc64) ** 2, axis=1),
        cross=np.mean(np.conj(los64) * sc64, axis=1).real,
    )
    for a in (out.los, out.scatter, out.cross):
        a.flags.writeable = False
    return out


def fading_draws(
    doppler_hz: float, duration_s: float, n_samples: int, n_draws: int = N_DRAWS, seed: int = MC_SEED
) -> FadingDraws:
    """The fading moments for a session's Doppler and recording (cached by fd·T and sample count)."""
    if not (doppler_hz >= 0.0 and math.isfinite(doppler_hz)):
        raise ValueError(f"doppler_hz must be finite and >= 0, got {doppler_hz}")
    if not (duration_s > 0.0 and math.isfinite(duration_s)) or n_samples < 2:
        raise ValueError(f"need duration_s > 0 and n_samples >= 2, got {duration_s}, {n_samples}")
    fd_t = float(doppler_hz) * float(duration_s)
    return _draws(round(fd_t, 12), mc_samples(fd_t, int(n_samples)), int(n_draws), int(seed))


def _binned(residual_db: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Linear (cloud-in-cell) binning of the draws on a 0.2 dB lattice: occupied nodes, log weights."""
    u = residual_db / BIN_DB
    lo = np.floor(u)
    frac = u - lo
    base = int(lo.min())
    idx = (lo - base).astype(np.int64)
    w = np.bincount(idx, 1.0 - frac, minlength=idx.max() + 2) + np.bincount(
        idx + 1, frac, minlength=idx.max() + 2
    )
    occupied = np.flatnonzero(w > 0.0)
    with np.errstate(divide="ignore"):
        return (base + occupied) * BIN_DB, np.log(w[occupied] / residual_db.size)


@dataclass(frozen=True, eq=False)
class ResidualTables:
    """Log-density / log-CDF tables of several receivers on one step, for lookups along a power grid.

    Row r tabulates ``values[r, i]`` at ``x0[r] + i·step``. The oracle evaluates ``x = d − P`` on a
    uniform grid of P whose spacing is a whole number of table steps, so every node of a row shares one
    interpolation weight and the lookups are plain gathers (:meth:`sum_on_grid`).
    """

    x0: NDArray[np.float64]  # (R,)
    step: float
    values: NDArray[np.float64]  # (R, L)

    def lookup(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``values_r(x[..., r])`` for ``x (..., R)``, linear interpolation (held at the ends)."""
        n = self.values.shape[1]
        u = np.clip((x - self.x0) / self.step, 0.0, n - 1.0)
        i = np.minimum(u.astype(np.int64), n - 2)
        flat = i + np.arange(self.values.shape[0]) * n
        v = self.values.ravel()
        return v[flat] + (u - i) * (v[flat + 1] - v[flat])

    def sum_on_grid(
        self, d: NDArray[np.float64], p0: float, stride: int, n_nodes: int
    ) -> NDArray[np.float64]:
        """``Σ_r values_r(d[c, r] − p0 − k·stride·step)`` ``(C, K)`` for ``d (C, R)``, k = 0…K−1.

        Rows whose grid would leave the table are held at its ends; the tables are built wide enough
        (see :func:`residual_tables`) that this happens only ≥ 70 nats below a receiver's peak.
        """
        n = self.values.shape[1]
        u = (d - p0 - self.x0) / self.step
        i0 = np.floor(u)
        frac = u - i0
        i0 = np.clip(i0, stride * (n_nodes - 1), n - 2).astype(np.intp) + np.arange(d.shape[1]) * n
        idx = i0[..., None] - stride * np.arange(n_nodes)
        v, dv = self.flat
        return (v[idx] + frac[..., None] * dv[idx]).sum(axis=1)

    @cached_property
    def flat(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The values and their forward differences, flattened row after row."""
        return self.values.ravel(), np.diff(self.values, axis=1, append=0.0).ravel()


def residual_tables(
    residual_db: NDArray[np.float64],
    sigma_db: ArrayLike,
    shift_db: ArrayLike,
    cdf: NDArray[np.bool_],
    step: float = TABLE_STEP_DB,
    pad_db: float = 0.0,
) -> ResidualTables:
    """Per receiver r (rows of ``residual_db (R, M)``): the law of ``X = shift_r + F_r + N(0, σ_r²)``.

    Row r holds ``log p_X(x)`` where ``cdf[r]`` is False (a heard receiver's measured excess), and
    ``log P(X ≤ x)`` where it is True (a receiver that did not hear), both exact mixtures over the
    binned draws, on ``step`` from the draws' range − 12·σ − ``pad_db`` to + 12·σ + ``pad_db``.
    """
    f = np.atleast_2d(np.asarray(residual_db, np.float64))
    n_rx = f.shape[0]
    sig = np.broadcast_to(np.asarray(sigma_db, np.float64), (n_rx,))
    shift = np.broadcast_to(np.asarray(shift_db, np.float64), (n_rx,))
    cdf = np.broadcast_to(np.asarray(cdf, bool), (n_rx,))
    half = TABLE_HALF_WIDTH_SIGMAS * sig + pad_db
    x0 = f.min(axis=1) + shift - half
    span = float((f.max(axis=1) + shift + half - x0).max()) if n_rx else 0.0
    n = math.ceil(span / step) + 2
    grid = np.arange(n) * step
    values = np.empty((n_rx, n))
    for r in range(n_rx):
        nodes, log_w = _binned(f[r])
        z = (x0[r] + grid[:, None] - shift[r] - nodes[None, :]) / sig[r]  # (L, J)
        if cdf[r]:
            terms = log_w[None, :] + log_ndtr(z)
        else:
            terms = log_w[None, :] - 0.5 * z * z - _LOG_SQRT_2PI - math.log(sig[r])
        m = terms.max(axis=1, keepdims=True)
        values[r] = (m + np.log(np.exp(terms - m).sum(axis=1, keepdims=True)))[:, 0]
    return ResidualTables(x0=x0, step=step, values=values)
