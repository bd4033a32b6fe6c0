"""How sharp "heard" is in terms of the signal power: the blind noise estimator's blur at the threshold.

The rule (:mod:`heimdall.detection`) is on the SNR *estimated* from the recording, ``P̂/N̂ − 1`` with N̂
estimated blind, whereas the oracle writes its likelihood in the received signal power
``ŝ = 10·log10(P̂ − N)`` (true noise power N, known to the simulator). Given ŝ, whether the receiver is
heard then depends only on N̂'s error, so

    P(heard | ŝ) ≈ Φ((ŝ − T − b) / s_b),   T = noise floor + 6 dB,

a probit whose offset b (the estimator's bias next to an FM signal) and width s_b are measured here by
seeded Monte Carlo: recordings of the scenario's own contents at powers around T, through the features'
own estimator (:func:`heimdall.features.receiver_scalars_batch`). For 0.5 s at 12.5 kHz it gives
b ≈ +0.4 dB and s_b ≈ 0.3 dB (0.1 s: b ≈ 0.7 dB, s_b ≈ 0.5 dB; the tests check a wide bracket): s_b is
small next to the 3 dB dynamic shadowing, but b shifts the non-detection probability by up to
φ(0)·b/3 ≈ 5 points, so the oracle includes both. A heard
receiver's likelihood keeps the density of ŝ alone: P(heard | ŝ) does not depend on the position or
the power, so it cancels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy.special import log_ndtr

from heimdall.detection import HEARD_SNR_DB, heard
from heimdall.features import SCALAR_NAMES, FeatureConfig, receiver_scalars_batch
from heimdall.simulate.channel import complex_gaussian
from heimdall.simulate.signals import fm_phase_cycles, modulating_signal, unit_phasor

N_RECORDINGS = 2000
SPAN_DB = 3.0  # signal powers uniform in T ± 3 dB
MC_SEED = 60_061
_SNR = SCALAR_NAMES.index("snr_db")
_CHUNK = 250

__all__ = ["DetectionBlur", "detection_blur"]


@dataclass(frozen=True)
class DetectionBlur:
    """``P(heard | ŝ) = Φ((ŝ − T − bias_db) / sigma_db)``, fitted by maximum likelihood."""

    bias_db: float
    sigma_db: float
    n_recordings: int


def _recordings(
    rng: np.random.Generator,
    s_dbm: np.ndarray,
    noise_mw: float,
    n_samples: int,
    fs: float,
    contents: tuple[tuple[str, float], ...],
    deviation_hz: float,
    offset_max_hz: float,
) -> np.ndarray:
    names = [c for c, _ in contents]
    p = np.array([w for _, w in contents])
    t = np.arange(n_samples) / fs
    out = complex_gaussian(rng, (s_dbm.size, n_samples), noise_mw)
    for i, s in enumerate(s_dbm):
        content = names[int(rng.choice(len(names), p=p / p.sum()))]
        cycles = fm_phase_cycles(
            modulating_signal(content, rng, n_samples, fs), deviation_hz, fs, rng.uniform()
        )
        f_off = (2.0 * rng.uniform() - 1.0) * offset_max_hz
        out[i] += (unit_phasor(cycles + f_off * t) * np.float32(math.sqrt(10.0 ** (s / 10.0)))).astype(
            np.complex64
        )
    return out


@lru_cache(maxsize=16)
def detection_blur(
    n_samples: int,
    sample_rate_hz: float,
    noise_floor_dbm: float,
    contents: tuple[tuple[str, float], ...],
    fm_deviation_hz: float,
    frequency_offset_max_hz: float,
    n_recordings: int = N_RECORDINGS,
    seed: int = MC_SEED,
) -> DetectionBlur:
    """Measure the probit of the rule against ŝ for recordings of this length, rate and content mix."""
    rng = np.random.default_rng(seed)
    threshold = noise_floor_dbm + HEARD_SNR_DB
    noise_mw = 10.0 ** (noise_floor_dbm / 10.0)
    s_dbm = threshold + rng.uniform(-SPAN_DB, SPAN_DB, n_recordings)
    config = FeatureConfig(sample_rate=sample_rate_hz)
    s_hat, hit = np.empty(n_recordings), np.empty(n_recordings, bool)
    for a in range(0, n_recordings, _CHUNK):
        sl = slice(a, min(a + _CHUNK, n_recordings))
        iq = _recordings(
            rng,
            s_dbm[sl],
            noise_mw,
            n_samples,
            sample_rate_hz,
            contents,
            fm_deviation_hz,
            frequency_offset_max_hz,
        )
        power = np.square(iq.view(np.float32)).sum(axis=-1, dtype=np.float64) / n_samples
        s_hat[sl] = 10.0 * np.log10(np.maximum(power - noise_mw, 1e-30))
        hit[sl] = heard(receiver_scalars_batch(iq, config)[:, _SNR])
    x = s_hat - threshold

    def nll(theta: np.ndarray) -> float:
        z = (x - theta[0]) / math.exp(theta[1])
        return -float(np.sum(np.where(hit, log_ndtr(z), log_ndtr(-z))))

    fit = optimize.minimize(
        nll, np.array([0.0, math.log(0.3)]), method="Nelder-Mead", options={"xatol": 1e-4}
    )
    return DetectionBlur(
        bias_db=float(fit.x[0]), sigma_db=float(math.exp(fit.x[1])), n_recordings=n_recordings
    )
