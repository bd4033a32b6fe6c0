"""Transmitted content: unit-power complex-baseband NBFM of voice, CTCSS + tone, or 1200-baud AFSK.

FM has a constant envelope, so ``|u(t)| = 1`` sample by sample: the recorded power of a receiver is
set by the channel alone, never by what is being said — which keeps the simulator's measurement model
exact (docs/EVALUATION.md). Each modulating signal ``m(t)`` is normalised to peak ``|m| = 1`` so the peak
instantaneous deviation is exactly the scenario's ±2.5 kHz, and the phase is
``2π·Δf·Σm/fs`` (a discrete integrator), so the instantaneous frequency is ``Δf·m[n]`` exactly.

* ``voice``: Gaussian noise brick-wall filtered to 300–3000 Hz (telephone band) times a syllabic
  envelope ``0.2 + 0.8·((1 + sin(2π f_s t + φ))/2)^2`` with ``f_s`` uniform 3–6 Hz (syllable rate).
  Peak normalisation leaves the rms deviation near a fifth of the peak, as in real speech.
* ``ctcss_tone``: a sub-audible tone from the 50-tone EIA/TIA-603 CTCSS list at 10–15 % of the peak
  deviation plus a test tone uniform in 950–1050 Hz carrying the rest.
* ``afsk1200``: Bell 202 — mark 1200 Hz, space 2200 Hz, 1200 baud, random bits, phase-continuous
  audio (the audio oscillator's phase is integrated, so there are no jumps at bit edges).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

CONTENTS: tuple[str, ...] = ("voice", "ctcss_tone", "afsk1200")

# EIA/TIA-603 CTCSS tones (Hz).
CTCSS_TONES_HZ: tuple[float, ...] = (
    67.0, 69.3, 71.9, 74.4, 77.0, 79.7, 82.5, 85.4, 88.5, 91.5, 94.8, 97.4, 100.0, 103.5, 107.2,
    110.9, 114.8, 118.8, 123.0, 127.3, 131.8, 136.5, 141.3, 146.2, 151.4, 156.7, 159.8, 162.2, 165.5,
    167.9, 171.3, 173.8, 177.3, 179.9, 183.5, 186.2, 189.9, 192.8, 196.6, 199.5, 203.5, 206.5, 210.7,
    218.1, 225.7, 229.1, 233.6, 241.8, 250.3, 254.1,
)  # fmt: skip

VOICE_BAND_HZ = (300.0, 3000.0)
SYLLABIC_RATE_HZ = (3.0, 6.0)
CTCSS_FRACTION = (0.10, 0.15)
TEST_TONE_HZ = (950.0, 1050.0)
AFSK_MARK_HZ, AFSK_SPACE_HZ, AFSK_BAUD = 1200.0, 2200.0, 1200.0


def _voice(rng: np.random.Generator, n: int, fs: float) -> NDArray[np.float64]:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec[(f < VOICE_BAND_HZ[0]) | (f > VOICE_BAND_HZ[1])] = 0.0
    audio = np.fft.irfft(spec, n)
    rate, phase = rng.uniform(*SYLLABIC_RATE_HZ), rng.uniform(0.0, 2.0 * np.pi)
    t = np.arange(n) / fs
    envelope = 0.2 + 0.8 * (0.5 * (1.0 + np.sin(2.0 * np.pi * rate * t + phase))) ** 2
    return audio * envelope


def _ctcss_tone(rng: np.random.Generator, n: int, fs: float) -> NDArray[np.float64]:
    sub = CTCSS_TONES_HZ[int(rng.integers(len(CTCSS_TONES_HZ)))]
    frac = rng.uniform(*CTCSS_FRACTION)
    tone = rng.uniform(*TEST_TONE_HZ)
    p1, p2 = rng.uniform(0.0, 2.0 * np.pi, 2)
    t = np.arange(n) / fs
    return frac * np.sin(2.0 * np.pi * sub * t + p1) + (1.0 - frac) * np.sin(2.0 * np.pi * tone * t + p2)


def _afsk1200(rng: np.random.Generator, n: int, fs: float) -> NDArray[np.float64]:
    bit_pos = rng.uniform() + np.arange(n) * (AFSK_BAUD / fs)  # random bit-clock phase
    bits = rng.integers(0, 2, int(bit_pos[-1]) + 1)
    freq = np.where(bits[bit_pos.astype(np.int64)] == 1, AFSK_MARK_HZ, AFSK_SPACE_HZ)
    phase = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * np.cumsum(freq) / fs
    return np.sin(phase)


_GENERATORS = {"voice": _voice, "ctcss_tone": _ctcss_tone, "afsk1200": _afsk1200}


def modulating_signal(
    content: str, rng: np.random.Generator, n_samples: int, sample_rate_hz: float
) -> NDArray[np.float64]:
    """The audio ``m[n]`` of one content kind, normalised to peak ``|m| = 1`` (see module docstring)."""
    if content not in _GENERATORS:
        raise ValueError(f"unknown content {content!r}; known: {list(CONTENTS)}")
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    m = _GENERATORS[content](rng, n_samples, float(sample_rate_hz))
    peak = float(np.max(np.abs(m)))
    return m / peak if peak > 0.0 else m


def fm_phase_cycles(
    m: NDArray[np.float64], deviation_hz: float, sample_rate_hz: float, initial_cycles: float = 0.0
) -> NDArray[np.float64]:
    """FM phase in *cycles* (float64): ``initial + Δf·cumsum(m)/fs``; cycles wrap exactly with ``-round``."""
    return initial_cycles + np.cumsum(m) * (deviation_hz / sample_rate_hz)


def unit_phasor(cycles: NDArray[np.float64]) -> NDArray[np.complex64]:
    """``exp(j·2π·cycles)`` as complex64, wrapping in float64 first so float32 sin/cos stay accurate."""
    wrapped = cycles - np.round(cycles)
    angle = (2.0 * np.pi * wrapped).astype(np.float32)
    out = np.empty(angle.shape, np.complex64)
    out.real = np.cos(angle)
    out.imag = np.sin(angle)
    return out


def nbfm(
    content: str,
    rng: np.random.Generator,
    n_samples: int,
    sample_rate_hz: float,
    deviation_hz: float = 2500.0,
) -> NDArray[np.complex64]:
    """Unit-power complex-baseband NBFM of `content` with a random carrier phase, complex64 ``(T,)``."""
    m = modulating_signal(content, rng, n_samples, sample_rate_hz)
    return unit_phasor(fm_phase_cycles(m, deviation_hz, sample_rate_hz, rng.uniform()))
