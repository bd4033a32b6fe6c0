"""NBFM content: constant envelope, ±2.5 kHz peak deviation, Carson-consistent occupied bandwidth."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from heimdall.simulate import CONTENTS, modulating_signal, nbfm
from heimdall.simulate.signals import CTCSS_TONES_HZ

FS = 12_500.0
DEV = 2_500.0
# (lowest, highest) 99 % occupied bandwidth (Hz). Upper: Carson 2·(Δf + f_audio,max); lower: FM
# with a 2.5 kHz peak deviation spreads well beyond the audio band alone.
OBW_BOUNDS = {
    "voice": (4_000.0, 2 * (DEV + 3_000.0)),
    "ctcss_tone": (4_000.0, 2 * (DEV + 1_050.0)),
    "afsk1200": (6_000.0, 2 * (DEV + 2_200.0)),
}


def inst_freq_hz(u: np.ndarray, fs: float = FS) -> np.ndarray:
    return np.diff(np.unwrap(np.angle(u.astype(np.complex128)))) * fs / (2 * np.pi)


def occupied_bandwidth(u: np.ndarray, fraction: float = 0.99) -> tuple[float, float]:
    f, p = scipy.signal.welch(u.astype(np.complex128), fs=FS, nperseg=1024, return_onesided=False)
    order = np.argsort(f)
    f, cum = f[order], np.cumsum(p[order]) / p.sum()
    tail = (1 - fraction) / 2
    return float(f[np.searchsorted(cum, tail)]), float(f[np.searchsorted(cum, 1 - tail)])


@pytest.mark.parametrize("content", CONTENTS)
def test_nbfm_envelope_deviation_and_bandwidth(content: str) -> None:
    rng = np.random.default_rng(42)
    peaks, widths = [], []
    for _ in range(10):
        u = nbfm(content, rng, 6250, FS, DEV)
        assert u.dtype == np.complex64 and u.shape == (6250,)
        np.testing.assert_allclose(np.abs(u), 1.0, atol=1e-5)  # unit power sample by sample
        peaks.append(np.max(np.abs(inst_freq_hz(u))))
        lo, hi = occupied_bandwidth(u)
        assert lo > -5_500.0 and hi < 5_500.0  # well inside the ±6.25 kHz channel
        widths.append(hi - lo)
    assert np.all(np.abs(np.array(peaks) - DEV) < 0.1 * DEV), peaks
    low, high = OBW_BOUNDS[content]
    assert low <= np.mean(widths) <= high, widths


def test_same_generator_state_same_signal() -> None:
    for content in CONTENTS:
        a = nbfm(content, np.random.default_rng(3), 1000, FS)
        b = nbfm(content, np.random.default_rng(3), 1000, FS)
        assert a.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="unknown content"):
        modulating_signal("morse", np.random.default_rng(0), 100, FS)


def test_voice_is_band_limited_with_syllabic_envelope() -> None:
    rng = np.random.default_rng(7)
    n = int(8 * FS)
    m = modulating_signal("voice", rng, n, FS)
    assert np.max(np.abs(m)) == pytest.approx(1.0)
    spec = np.abs(np.fft.rfft(m)) ** 2
    f = np.fft.rfftfreq(n, 1 / FS)
    in_band = spec[(f >= 290) & (f <= 3010)].sum() / spec.sum()
    assert in_band > 0.99
    # short-time power envelope (10 ms frames) oscillates at the 3-6 Hz syllable rate
    frames = (m[: n // 125 * 125] ** 2).reshape(-1, 125).mean(axis=1)
    env_spec = np.abs(np.fft.rfft(frames - frames.mean())) ** 2
    env_f = np.fft.rfftfreq(frames.size, 125 / FS)
    peak = env_f[np.argmax(env_spec[1:]) + 1]
    assert 2.8 <= peak <= 6.2, peak


def test_ctcss_tone_structure() -> None:
    rng = np.random.default_rng(8)
    n = int(4 * FS)
    u = nbfm("ctcss_tone", rng, n, FS)
    freq = inst_freq_hz(u)  # = Δf·m: the demodulated audio in Hz of deviation
    w = scipy.signal.windows.flattop(freq.size)  # flat-top window: amplitude-accurate between bins
    spec = np.abs(np.fft.rfft(freq * w)) * 2 / w.sum()  # single-sided amplitude (Hz of deviation)
    f = np.fft.rfftfreq(freq.size, 1 / FS)
    sub = f < 300
    f_sub, a_sub = f[sub][np.argmax(spec[sub])], np.max(spec[sub])
    assert min(abs(f_sub - t) for t in CTCSS_TONES_HZ) < 0.5
    assert 0.09 * DEV <= a_sub <= 0.16 * DEV  # sub-tone at 10-15 % of the peak deviation
    tone = (f > 900) & (f < 1100)
    assert 950 - 1 <= f[tone][np.argmax(spec[tone])] <= 1050 + 1
    assert 0.84 * DEV <= np.max(spec[tone]) <= 0.91 * DEV


def test_afsk1200_tones_and_phase_continuity() -> None:
    rng = np.random.default_rng(9)
    fs = 48_000.0  # finer sampling to resolve the audio tones' instantaneous frequency
    m = modulating_signal("afsk1200", rng, int(0.5 * fs), fs)
    audio_f = np.diff(np.unwrap(np.angle(scipy.signal.hilbert(m)))) * fs / (2 * np.pi)
    core = audio_f[200:-200]
    near = (np.abs(core - 1200) < 150) | (np.abs(core - 2200) < 150)
    assert near.mean() > 0.85
    assert (np.abs(core - 1200) < 150).mean() > 0.2 and (np.abs(core - 2200) < 150).mean() > 0.2
    # phase-continuous: the waveform has no jumps larger than the 2.2 kHz tone's slope allows
    assert np.max(np.abs(np.diff(m))) <= 2 * np.pi * 2200 / fs * 1.01
    # symbols are 1/1200 s long: switching instants are spaced by whole bit periods
    mark = np.abs(core - 1200) < np.abs(core - 2200)
    edges = np.flatnonzero(np.diff(mark.astype(int)) != 0)
    gaps = np.diff(edges) / (fs / 1200)
    assert np.all(np.abs(gaps - np.round(gaps)) < 0.35) and np.min(np.round(gaps)) >= 1
