"""Channel: Rician envelope law (KS), Clarke level crossings and Doppler, normalisation, noise, offsets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats

from heimdall.simulate import awgn, complex_gaussian, rician_fading
from heimdall.simulate.channel import apply_frequency_offset

FS = 1_000.0  # fading is ≤ 5 Hz: a 1 kHz grid keeps long recordings cheap
FD = 5.0
LONG_S = 200.0


def rician_lcr(k: float, fd: float, rho: float) -> float:
    """Rician level-crossing rate (LOS at 90° to the motion, isotropic scatter), ρ = R / R_rms.

    N_R = sqrt(2π(K+1))·fd·ρ·exp(−K − (K+1)ρ²)·I0(2ρ·sqrt(K(K+1)));
    K = 0 gives Rayleigh's sqrt(2π)·fd·ρ·e^{−ρ²}.
    Written with the scaled Bessel i0e(x) = e^{−x}·I0(x) for numerical range.
    """
    x = 2 * rho * np.sqrt(k * (k + 1))
    log_rest = -k - (k + 1) * rho**2 + x
    return float(np.sqrt(2 * np.pi * (k + 1)) * fd * rho * np.exp(log_rest) * scipy.special.i0e(x))


def upward_crossings_per_s(env: np.ndarray, level: float, fs: float) -> float:
    return float(np.sum((env[:-1] < level) & (env[1:] >= level)) / (env.size / fs))


@pytest.mark.parametrize("k_db", [-np.inf, "drawn"])
def test_envelope_is_rician_with_the_drawn_k(k_db) -> None:
    rng = np.random.default_rng(21)
    if k_db == "drawn":
        k_db = float(rng.uniform(0.0, 10.0))
    h = rician_fading(rng, int(LONG_S * FS), FS, [k_db], FD)[0]
    # one sample per coherence interval: the envelope correlation ~ J0² vanishes at 2π·fd·τ = 2.405
    step = round(2.405 / (2 * np.pi * FD) * FS)
    env = np.abs(h[::step]).astype(float)
    k = 10 ** (k_db / 10)
    sigma = np.sqrt(1 / (2 * (k + 1)))  # unit mean power: ν² + 2σ² = 1, K = ν² / (2σ²)
    p = scipy.stats.kstest(env, scipy.stats.rice(np.sqrt(2 * k), scale=sigma).cdf).pvalue
    assert p > 0.01, (k_db, p)


@pytest.mark.parametrize("k_db", [-np.inf, 3.0, 7.0])
def test_level_crossing_rate_matches_clarke_theory(k_db: float) -> None:
    rng = np.random.default_rng(22)
    h = rician_fading(rng, int(LONG_S * FS), FS, [k_db], FD, los_angle_rad=np.pi / 2)[0]
    env = np.abs(h).astype(float)
    rms = np.sqrt(np.mean(env**2))
    k = 10 ** (k_db / 10)
    for rho in (0.7, 1.0):
        measured = upward_crossings_per_s(env, rho * rms, FS)
        assert measured == pytest.approx(rician_lcr(k, FD, rho), rel=0.2), (k_db, rho)


def test_scatter_autocorrelation_and_doppler_spread() -> None:
    rng = np.random.default_rng(23)
    h = rician_fading(rng, int(LONG_S * FS), FS, [-np.inf], FD)[0].astype(np.complex128)
    for tau in (0.02, 0.05, 0.1):
        lag = round(tau * FS)
        r = np.mean(h[lag:] * np.conj(h[:-lag])).real
        assert r == pytest.approx(scipy.special.j0(2 * np.pi * FD * tau), abs=0.1)
    spec = np.abs(np.fft.fft(h)) ** 2
    f = np.fft.fftfreq(h.size, 1 / FS)
    assert spec[np.abs(f) <= 1.05 * FD].sum() / spec.sum() > 0.99  # Clarke: nothing beyond fd


def test_normalisation_and_static_channel() -> None:
    rng = np.random.default_rng(24)
    h = rician_fading(rng, 6250, 12_500.0, rng.uniform(0, 10, 7), 3.0)
    assert h.shape == (7, 6250) and h.dtype == np.complex64
    np.testing.assert_allclose(np.mean(np.abs(h.astype(np.complex128)) ** 2, axis=1), 1.0, rtol=1e-5)
    still = rician_fading(rng, 6250, 12_500.0, [0.0, 5.0], 0.0)
    np.testing.assert_allclose(np.abs(still), 1.0, rtol=1e-5)
    assert np.ptp(still.real, axis=1).max() < 1e-5  # fd = 0: a constant


def test_fading_stream_is_deterministic() -> None:
    a = rician_fading(np.random.default_rng(5), 1000, FS, [1.0, 2.0], FD)
    b = rician_fading(np.random.default_rng(5), 1000, FS, [1.0, 2.0], FD)
    assert a.tobytes() == b.tobytes()


def test_complex_gaussian_noise() -> None:
    rng = np.random.default_rng(25)
    z = complex_gaussian(rng, (200_000,)).astype(np.complex128)
    assert np.mean(np.abs(z) ** 2) == pytest.approx(1.0, rel=0.01)
    assert abs(np.mean(z * z)) < 0.01  # circular
    assert scipy.stats.kstest(z.real * np.sqrt(2), "norm").pvalue > 0.01
    assert scipy.stats.kstest(z.imag * np.sqrt(2), "norm").pvalue > 0.01
    floor_dbm = -174 + 10 * np.log10(12_500) + 6
    n = awgn(rng, (3, 50_000), np.array([[1.0], [2.0], [10 ** (floor_dbm / 10)]]))
    p = np.mean(np.abs(n.astype(np.complex128)) ** 2, axis=1)
    np.testing.assert_allclose(p[:2], [1.0, 2.0], rtol=0.02)
    assert 10 * np.log10(p[2]) == pytest.approx(floor_dbm, abs=0.1)


def test_frequency_offset_moves_a_tone() -> None:
    fs, n = 12_500.0, 12_500
    x = np.ones(n, np.complex64)
    for off in (-50.0, 37.0):
        y = apply_frequency_offset(x, off, fs)
        f = np.fft.fftfreq(n, 1 / fs)[np.argmax(np.abs(np.fft.fft(y)))]
        assert f == pytest.approx(off, abs=1.0)
        np.testing.assert_allclose(np.abs(y), 1.0, atol=1e-6)
