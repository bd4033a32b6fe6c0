"""Small-scale channel: Rician/Clarke fading, receiver frequency offset and thermal noise.

Fading. Each link is ``h(t) = sqrt(K/(K+1))·exp(j(2π fd cos θ0 t + φ0)) + sqrt(1/(K+1))·g(t)``: a
line-of-sight ray arriving at a random angle θ0 to the direction of motion plus isotropic scatter
``g`` with Clarke's Doppler spectrum (autocorrelation ``J0(2π fd τ)``). ``g`` is the Zheng–Xiao
sum-of-sinusoids model (IEEE Comm. Lett. 2002, "improved" form) with independent random phases per
sinusoid and quadrature and arrival angles ``α_n = (2πn − π + θ)/(4M)``: unlike Jakes' deterministic
model it is wide-sense stationary, and because both quadratures carry M sinusoids of distinct
frequencies each realisation has balanced, uncorrelated I/Q power in time (its envelope follows the
Rayleigh/Rice law within a recording, which the tests check with a KS test and the level-crossing rate).

Speed: fd ≤ 5 Hz, so h is evaluated on a coarse grid of ≥ 40 points per Doppler period and linearly
interpolated (relative error ≤ (2π/40)²/8 ≈ 3e-3 of the envelope).

Normalisation: h is finally scaled so that ``mean |h|²`` over the recording is exactly 1. The
session-mean received power is fixed by the large-scale terms (path loss, shadowing, transmit power);
fading only redistributes power *within* the recording. Hence the recorded mean power carries the
same location information as the large-scale power and the Bayes oracle's likelihood stays exact.
With fd = 0 the channel is a constant of unit modulus.

Noise is circular complex white Gaussian drawn by the Box–Muller transform (exact in distribution,
faster than numpy's float32 ziggurat here): radius from a float64 uniform, angle from a float32 one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.simulate.signals import unit_phasor

N_SINUSOIDS = 16  # per quadrature (Zheng–Xiao M)
COARSE_POINTS_PER_DOPPLER_PERIOD = 40.0


def complex_gaussian(
    rng: np.random.Generator, shape: tuple[int, ...], power: ArrayLike = 1.0
) -> NDArray[np.complex64]:
    """Circular complex Gaussian, complex64, with ``E|z|² = power`` (broadcast over leading axes)."""
    radius = np.sqrt(-np.log1p(-rng.random(shape)))  # |z| ~ Rayleigh with E|z|^2 = 1, float64 tail
    angle = rng.random(shape, dtype=np.float32) * np.float32(2.0 * np.pi)
    scale = np.sqrt(np.asarray(power, np.float64))
    r = (radius * scale).astype(np.float32)
    out = np.empty(shape, np.complex64)
    np.multiply(r, np.cos(angle), out=out.real)
    np.multiply(r, np.sin(angle), out=out.imag)
    return out


def awgn(
    rng: np.random.Generator, shape: tuple[int, ...], noise_power_mw: ArrayLike
) -> NDArray[np.complex64]:
    """Thermal noise in sqrt(mW) units: ``noise_power_mw`` per row (shape ``(R, 1)`` broadcasts)."""
    return complex_gaussian(rng, shape, noise_power_mw)


def frequency_offset_phasor(
    offset_hz: ArrayLike, n_samples: int, sample_rate_hz: float
) -> NDArray[np.complex64]:
    """``exp(j 2π f_off n / fs)``, shape ``offset.shape + (T,)``: a receiver's local-oscillator error."""
    f = np.asarray(offset_hz, np.float64)[..., None]
    return unit_phasor(f * (np.arange(n_samples) / sample_rate_hz))


def apply_frequency_offset(
    x: NDArray[np.complexfloating], offset_hz: ArrayLike, sample_rate_hz: float
) -> NDArray[np.complex64]:
    """Shift ``x (..., T)`` by ``offset_hz`` (broadcast over leading axes)."""
    return (x * frequency_offset_phasor(offset_hz, x.shape[-1], sample_rate_hz)).astype(np.complex64)


def _coarse_step(n_samples: int, sample_rate_hz: float, doppler_hz: float) -> int:
    if doppler_hz <= 0.0:
        return max(n_samples - 1, 1)
    return max(1, int(sample_rate_hz / (COARSE_POINTS_PER_DOPPLER_PERIOD * doppler_hz)))


def _interpolate(coarse: NDArray[np.complex128], n_samples: int, step: int) -> NDArray[np.complex64]:
    """Linear interpolation from nodes at ``0, step, 2·step, …`` to every sample ``0..T-1``."""
    c = coarse.astype(np.complex64)
    n = np.arange(n_samples)
    idx = np.minimum(n // step, c.shape[-1] - 2)
    w = ((n - idx * step) / step).astype(np.float32)
    left = np.take(c, idx, axis=1)
    return np.ascontiguousarray(left + (np.take(c, idx + 1, axis=1) - left) * w)


def rician_fading(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate_hz: float,
    k_db: ArrayLike,
    doppler_hz: float,
    *,
    los_angle_rad: ArrayLike | None = None,
    n_sinusoids: int = N_SINUSOIDS,
    normalise: bool = True,
) -> NDArray[np.complex64]:
    """Fading ``(R, T)`` complex64 for R links with Rician factors ``k_db (R,)`` and a common max Doppler.

    Draws exactly one ``rng.random((R, 2M + 3))`` (θ, φ_n, ϕ_n, θ0, φ0 per link) so the stream is
    fixed whatever the arguments. ``los_angle_rad`` overrides θ0 (e.g. π/2: no LOS Doppler).
    """
    k = 10.0 ** (np.atleast_1d(np.asarray(k_db, np.float64)) / 10.0)
    n_links, m = k.shape[0], int(n_sinusoids)
    if n_samples < 2:
        raise ValueError("n_samples must be >= 2")
    u = rng.random((n_links, 2 * m + 3))
    theta = (u[:, 0] * 2.0 - 1.0) * np.pi
    phi_c, phi_s = u[:, 1 : m + 1], u[:, m + 1 : 2 * m + 1]  # phases in cycles
    los_angle = u[:, 2 * m + 1] * 2.0 * np.pi
    if los_angle_rad is not None:
        los_angle = np.broadcast_to(np.asarray(los_angle_rad, np.float64), (n_links,))
    los_phase = u[:, 2 * m + 2]  # cycles

    step = _coarse_step(n_samples, sample_rate_hz, float(doppler_hz))
    n_coarse = -(-(n_samples - 1) // step) + 1
    t = np.arange(n_coarse) * (step / sample_rate_hz)
    alpha = (2.0 * np.pi * np.arange(1, m + 1)[None, :] - np.pi + theta[:, None]) / (4.0 * m)  # (R, M)
    fd_t = doppler_hz * t  # cycles of the maximum Doppler, (Nc,)
    cyc_c = np.cos(alpha)[:, :, None] * fd_t + phi_c[:, :, None]  # (R, M, Nc)
    cyc_s = np.sin(alpha)[:, :, None] * fd_t + phi_s[:, :, None]
    xc = np.cos(2.0 * np.pi * (cyc_c - np.round(cyc_c)).astype(np.float32)).sum(axis=1, dtype=np.float64)
    xs = np.cos(2.0 * np.pi * (cyc_s - np.round(cyc_s)).astype(np.float32)).sum(axis=1, dtype=np.float64)
    scatter = (xc + 1j * xs) * np.sqrt(1.0 / m)  # E|g|^2 = 1
    los = np.exp(2j * np.pi * (np.cos(los_angle)[:, None] * fd_t + los_phase[:, None]))
    coarse = np.sqrt(k / (k + 1.0))[:, None] * los + np.sqrt(1.0 / (k + 1.0))[:, None] * scatter
    h = _interpolate(coarse, n_samples, step)
    if normalise:
        power = np.einsum("ij,ij->i", h.view(np.float32), h.view(np.float32), dtype=np.float64) / n_samples
        h *= (1.0 / np.sqrt(power)).astype(np.float32)[:, None]
    return h
