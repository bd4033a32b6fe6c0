"""Rendering one candidate's recordings: IQ per receiver, the row values, and the cheap pre-checks.

Two measurement rules, chosen by the scenario's ``snr_estimator``:

* ``known_noise`` (`nw-italy-v1`, :func:`render_known_noise`): fading normalised to unit mean power per
  recording, ``snr_db = 10·log10(max(P̂/N − 1, 1e-3))`` with the receiver's true noise power N. Its stream
  of draws and its bytes are pinned (tests/simulate/test_v1_unchanged.py): do not reorder anything here.
* ``blind`` (`nw-italy-v2`, :func:`render_blind`): fading as the scenario says (v2: not normalised), and
  ``snr_db`` is the features' blind estimate from the recording alone
  (:func:`heimdall.features.receiver_scalars_batch`, default :class:`~heimdall.features.FeatureConfig`),
  heard ⟺ :func:`heimdall.detection.heard`. Draw order: noise (R, T), fading for *every* receiver, then
  content and carrier, so the stream is the same whatever the pre-check decides.

Pre-check (skip the IQ of receivers that cannot hear). It must be exact: a receiver that would hear is
never skipped.

* known noise: mean signal power 3 dB below the threshold needs a noise excursion of > 14 standard
  deviations even at 256 samples (see `heimdall.simulate.session`).
* blind: the session's signal power is ``S_r = 10^(s_r/10)·mean_t|h_r|²`` exactly, with the fading
  realisation drawn first (it is cheap) — the time-averaged residual can lift power by several dB. The
  estimate is ``P̂/N̂ − 1``; a receiver is skipped only if it stays below the threshold even with
  ``N̂`` :data:`PRECHECK_SIGMAS` spreads low (the blind estimator's spread in dB is
  :data:`BLIND_NOISE_SPREAD_DB`/√frames, a bound the tests check) and ``P̂`` that many standard deviations
  (≤ (N+S)/√T) high. At 0.5 s this skips receivers below ≈ 2.7 dB true SNR; at one STFT frame it skips none.
  Before any IQ a candidate is screened with the fading's deterministic ceiling
  ``|h|² ≤ (√(K/(K+1)) + √(2M/(K+1)))²`` (the sum-of-sinusoids scatter has ``|g|² ≤ 2M``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from heimdall.detection import heard as heard_rule
from heimdall.simulate.channel import N_SINUSOIDS, complex_gaussian, rician_fading
from heimdall.simulate.signals import fm_phase_cycles, modulating_signal, unit_phasor
from heimdall.simulate.world import World

PRECHECK_MARGIN_DB = 3.0
SNR_FLOOR_LINEAR = 1e-3
#: Standard deviation of 10·log10(N̂/N) of the blind noise estimator times √(STFT frames), an upper bound
#: (measured 0.71 at one frame, 0.65 at 47; tests/simulate/test_rendering.py checks the bound).
BLIND_NOISE_SPREAD_DB = 0.75
#: How many spreads of the estimators the blind pre-check allows for before it skips a receiver.
PRECHECK_SIGMAS = 15.0
_FADING_CEILING_SLACK = 1.0 + 1e-4  # float32 rounding of the sinusoids and of the interpolation

Rendered = tuple[NDArray[np.complex64], NDArray[np.float64], NDArray[np.float64]]


def row_power(iq: NDArray[np.complex64]) -> NDArray[np.float64]:
    """``mean|iq|²`` per row, accumulated in float64 (the value rows store)."""
    return np.square(iq.view(np.float32)).sum(axis=-1, dtype=np.float64) / iq.shape[-1]


def known_noise_snr_db(power: NDArray[np.float64], noise: NDArray[np.float64]) -> NDArray[np.float64]:
    return 10.0 * np.log10(np.maximum(power / noise - 1.0, SNR_FLOOR_LINEAR))


def plausible_known_noise(world: World, mean_power_dbm: NDArray[np.float64]) -> NDArray[np.bool_]:
    sc = world.scenario
    return mean_power_dbm - world.noise_floor_dbm >= sc.detection_snr_db - PRECHECK_MARGIN_DB


def render_known_noise(
    world: World,
    rng: np.random.Generator,
    content: str,
    mean_power_dbm: NDArray[np.float64],
    rician_k_db: NDArray[np.float64],
    doppler_hz: float,
    frequency_offset_hz: NDArray[np.float64],
    n_samples: int,
) -> Rendered | None:
    """v1: IQ ``(R, T)``, measured power and SNR of a candidate, or None if too few receivers hear."""
    sc = world.scenario
    fs = sc.sample_rate_hz
    noise_mw = world.noise_power_mw
    iq = complex_gaussian(rng, (world.n_receivers, n_samples), noise_mw[:, None])
    active = np.flatnonzero(plausible_known_noise(world, mean_power_dbm))
    m = modulating_signal(content, rng, n_samples, fs)
    cycles = fm_phase_cycles(m, sc.transmitter.fm_deviation_hz, fs, rng.uniform())
    h = rician_fading(rng, n_samples, fs, rician_k_db[active], doppler_hz)
    t = np.arange(n_samples) / fs
    carrier = unit_phasor(cycles[None, :] + frequency_offset_hz[active, None] * t[None, :])
    amplitude = np.sqrt(10.0 ** (mean_power_dbm[active] / 10.0)).astype(np.float32)
    signal = (carrier * h) * amplitude[:, None]

    noisy = iq[active] + signal
    power = row_power(iq)
    power[active] = row_power(noisy)
    snr = known_noise_snr_db(power, noise_mw)
    heard = snr >= sc.detection_snr_db
    if int(heard.sum()) < sc.min_receivers_heard:
        return None
    keep = heard[active]
    iq[active[keep]] = noisy[keep]
    # rows that did not hear are noise only: recompute theirs and redraw in the (never seen) event it "hears"
    deaf = np.flatnonzero(~heard)
    power[deaf] = row_power(iq[deaf])
    snr[deaf] = known_noise_snr_db(power[deaf], noise_mw[deaf])
    for r in deaf:
        while snr[r] >= sc.detection_snr_db:
            iq[r] = complex_gaussian(rng, (n_samples,), noise_mw[r])
            power[r] = row_power(iq[r : r + 1])[0]
            snr[r] = known_noise_snr_db(power[r : r + 1], noise_mw[r : r + 1])[0]
    iq.flags.writeable = False
    return iq, power, snr


def blind_snr_db(iq: NDArray[np.complex64]) -> NDArray[np.float64]:
    """The features' blind SNR estimate (dB) of each recording ``(N, T)``: the value v2 rows store."""
    from heimdall.features import SCALAR_NAMES, FeatureConfig, receiver_scalars_batch

    if iq.shape[0] == 0:
        return np.zeros(0)
    scalars = receiver_scalars_batch(iq, FeatureConfig())
    return scalars[:, SCALAR_NAMES.index("snr_db")].astype(np.float64)


def blind_precheck_factor(n_samples: int) -> float:
    """How far ``(P̂/N̂)/(1 + S/N)`` can plausibly exceed 1: the blind pre-check's allowance."""
    from heimdall.features import FeatureConfig

    frames = FeatureConfig().n_frames(n_samples)
    noise_low_db = PRECHECK_SIGMAS * BLIND_NOISE_SPREAD_DB / math.sqrt(frames)
    return 10.0 ** (noise_low_db / 10.0) * (1.0 + PRECHECK_SIGMAS / math.sqrt(n_samples))


def plausible_blind(world: World, signal_mw: NDArray[np.float64], n_samples: int) -> NDArray[np.bool_]:
    """Receivers whose blind SNR estimate could reach the threshold with mean signal power `signal_mw`."""
    ratio = (1.0 + signal_mw / world.noise_power_mw) * blind_precheck_factor(n_samples) - 1.0
    return ratio >= 10.0 ** (world.scenario.detection_snr_db / 10.0)


def fading_ceiling(rician_k_db: NDArray[np.float64]) -> NDArray[np.float64]:
    """The largest ``|h(t)|²`` the fading model can produce for Rician factors `rician_k_db` (any t)."""
    k = 10.0 ** (np.asarray(rician_k_db, np.float64) / 10.0)
    return (np.sqrt(k / (k + 1.0)) + np.sqrt(2.0 * N_SINUSOIDS / (k + 1.0))) ** 2 * _FADING_CEILING_SLACK


def blind_first_stage(
    world: World,
    rng: np.random.Generator,
    mean_power_dbm: NDArray[np.float64],
    rician_k_db: NDArray[np.float64],
    doppler_hz: float,
    n_samples: int,
) -> tuple[NDArray[np.complex64], NDArray[np.complex64], NDArray[np.bool_]]:
    """The first draws of :func:`render_blind`: noise ``(R, T)``, fading ``(R, T)``, and who may hear."""
    sc = world.scenario
    iq = complex_gaussian(rng, (world.n_receivers, n_samples), world.noise_power_mw[:, None])
    h = rician_fading(
        rng, n_samples, sc.sample_rate_hz, rician_k_db, doppler_hz, normalise=sc.fading.normalise
    )
    signal_mw = 10.0 ** (mean_power_dbm / 10.0) * row_power(h)
    return iq, h, plausible_blind(world, signal_mw, n_samples)


def render_blind(
    world: World,
    rng: np.random.Generator,
    content: str,
    mean_power_dbm: NDArray[np.float64],
    rician_k_db: NDArray[np.float64],
    doppler_hz: float,
    frequency_offset_hz: NDArray[np.float64],
    n_samples: int,
    *,
    precheck: bool = True,
    keep_rule: bool = True,
) -> Rendered | None:
    """v2: like :func:`render_known_noise` with blind SNR rows and the fading realisation in the pre-check.

    ``precheck=False`` renders the signal at every receiver and ``keep_rule=False`` returns the rows even
    when too few hear: with both off the result says who *would* hear (the pre-check's exactness test).
    """
    sc = world.scenario
    fs = sc.sample_rate_hz
    noise_mw = world.noise_power_mw
    n_rx = world.n_receivers
    iq, h, plausible = blind_first_stage(world, rng, mean_power_dbm, rician_k_db, doppler_hz, n_samples)
    active = np.flatnonzero(plausible if precheck else np.ones(n_rx, bool))
    if keep_rule and active.size < sc.min_receivers_heard:
        return None
    m = modulating_signal(content, rng, n_samples, fs)
    cycles = fm_phase_cycles(m, sc.transmitter.fm_deviation_hz, fs, rng.uniform())
    t = np.arange(n_samples) / fs
    carrier = unit_phasor(cycles[None, :] + frequency_offset_hz[active, None] * t[None, :])
    amplitude = np.sqrt(10.0 ** (mean_power_dbm[active] / 10.0)).astype(np.float32)
    noisy = iq[active] + (carrier * h[active]) * amplitude[:, None]
    snr_active = blind_snr_db(noisy)
    hears = heard_rule(snr_active)
    if keep_rule and int(hears.sum()) < sc.min_receivers_heard:
        return None
    iq[active[hears]] = noisy[hears]
    snr = np.full(n_rx, np.nan)
    snr[active[hears]] = snr_active[hears]
    # rows that did not hear are noise only; redraw in the (never seen) event that noise alone "hears"
    deaf = np.flatnonzero(np.isnan(snr))
    snr[deaf] = blind_snr_db(iq[deaf])
    for r in deaf:
        while heard_rule(snr[r]):
            iq[r] = complex_gaussian(rng, (n_samples,), noise_mw[r])
            snr[r] = blind_snr_db(iq[r : r + 1])[0]
    iq.flags.writeable = False
    return iq, row_power(iq), snr
