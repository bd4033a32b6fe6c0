"""Property tests of the feature extractor: finite input of valid length → finite output of the documented
shape; non-finite, overflowing or too short input → a ValueError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heimdall.detection import HEARD_SNR_DB, heard
from heimdall.features import (
    MAX_IQ_COMPONENT,
    SCALAR_NAMES,
    FeatureConfig,
    TorchFeatureExtractor,
    compute_mfcc,
    extract_features_batch,
    iq_complex_to_real,
    iq_to_mel_spectrogram,
    iq_to_mel_spectrogram_batch,
    power_spectrogram,
    receiver_scalars,
    receiver_scalars_batch,
)

# Small configurations keep every example to a few hundred samples.
CONFIGS = [
    FeatureConfig(sample_rate=12500.0, n_fft=16, hop_length=8, n_mels=4, n_mfcc=4, noise_group_bins=4),
    FeatureConfig(sample_rate=1000.0, n_fft=32, hop_length=32, n_mels=6, n_mfcc=12, noise_group_bins=8),
    FeatureConfig(sample_rate=48000.0, n_fft=8, hop_length=3, n_mels=2, n_mfcc=1, noise_group_bins=1),
]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any finite float64 component up to the documented bound; float32 components over their whole range.
_f64 = st.floats(-MAX_IQ_COMPONENT, MAX_IQ_COMPONENT, allow_nan=False, allow_infinity=False)
_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# Realistic calibrated IQ (sqrt(mW)) spans many decades: draw magnitudes log-uniformly too.
_decades = st.builds(lambda m, e: m * 10.0**e, st.floats(-1.0, 1.0), st.integers(-30, 30))


@st.composite
def _iq(draw, batch: bool = False, dtype: str | None = None, parts=None):
    """(config, complex IQ of valid length): (T,) or (N, T), complex64 or complex128."""
    cfg = draw(st.sampled_from(CONFIGS))
    t = draw(st.integers(cfg.n_fft, cfg.n_fft + 6 * cfg.hop_length + 5))
    shape = (draw(st.integers(1, 3)), t) if batch else (t,)
    dtype = dtype or draw(st.sampled_from(["complex64", "complex128"]))
    if parts is None:
        parts = _f32 if dtype == "complex64" else draw(st.sampled_from([_f64, _decades]))
    re = draw(hnp.arrays(np.float64, shape, elements=parts))
    im = draw(hnp.arrays(np.float64, shape, elements=parts))
    return cfg, (re + 1j * im).astype(dtype)


def _finite(*arrays: np.ndarray) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


@PROPS
@given(_iq())
def test_single_recording_features_are_finite_with_documented_shapes(case) -> None:
    cfg, iq = case
    f = cfg.n_frames(iq.shape[-1])
    assert f == 1 + (iq.shape[-1] - cfg.n_fft) // cfg.hop_length
    log_mel = iq_to_mel_spectrogram(iq, cfg)
    assert log_mel.shape == (2 * cfg.n_mels, f) and log_mel.dtype == np.float32
    mfcc = compute_mfcc(iq, cfg)
    assert mfcc.shape == (cfg.n_mfcc, f) and mfcc.dtype == np.float32
    assert compute_mfcc(log_mel, cfg).shape == (cfg.n_mfcc, f)
    power = power_spectrogram(iq, cfg)
    assert power.shape == (cfg.n_fft, f) and (power >= 0).all()
    sc = receiver_scalars(iq, cfg)
    assert isinstance(sc.heard, bool) and -30.0 <= sc.snr_db <= 60.0
    assert sc.as_array().shape == (len(SCALAR_NAMES),)
    assert _finite(log_mel, mfcc, power, sc.as_array())


@PROPS
@given(_iq(batch=True))
def test_batch_features_are_finite_with_documented_shapes(case) -> None:
    cfg, iq = case
    n, f = iq.shape[0], cfg.n_frames(iq.shape[-1])
    log_mel, mfcc, scalars = extract_features_batch(iq, cfg)
    assert log_mel.shape == (n, 2 * cfg.n_mels, f) and mfcc.shape == (n, cfg.n_mfcc, f)
    assert scalars.shape == (n, len(SCALAR_NAMES)) and ((scalars[:, 3] >= 0) & (scalars[:, 3] <= 1)).all()
    np.testing.assert_array_equal(
        scalars[:, 3] >= 0.5, heard(scalars[:, 2] + HEARD_SNR_DB - cfg.heard_snr_db)
    )
    assert log_mel.dtype == mfcc.dtype == scalars.dtype == np.float32
    assert iq_to_mel_spectrogram_batch(iq, cfg).shape == (n, 2 * cfg.n_mels, f)
    assert receiver_scalars_batch(iq, cfg).shape == (n, len(SCALAR_NAMES))
    assert compute_mfcc(iq, cfg).shape == (n, cfg.n_mfcc, f)
    assert _finite(log_mel, mfcc, scalars)


@settings(max_examples=60, deadline=None)
@given(_iq(batch=True, dtype="complex64", parts=st.floats(-0.5, 0.5, width=32)))
def test_torch_path_is_finite_for_calibrated_iq(case) -> None:
    """The exportable path does not validate (see its docstring): finite for |IQ| < 1 (< 0 dBm)."""
    cfg, iq = case
    out = TorchFeatureExtractor(cfg)(torch.from_numpy(iq_complex_to_real(iq)))
    f = cfg.n_frames(iq.shape[-1])
    assert out.log_mel.shape == (iq.shape[0], 2 * cfg.n_mels, f)
    assert out.mfcc.shape == (iq.shape[0], cfg.n_mfcc, f)
    assert out.scalars.shape == (iq.shape[0], len(SCALAR_NAMES))
    assert all(torch.isfinite(t).all() for t in out)


@PROPS
@given(
    st.sampled_from(CONFIGS),
    st.integers(1, 3),
    st.integers(1, 100),
    st.data(),
)
def test_logmel_input_to_mfcc(cfg: FeatureConfig, n: int, f: int, data) -> None:
    """Any dB log-mel, even far outside the physical range (float64 powers span ±3100 dB), gives finite
    MFCC; the bound keeps the orthonormal DCT's ≤ sqrt(2*n_mels) gain inside the float32 output."""
    db = data.draw(hnp.arrays(np.float64, (n, 2 * cfg.n_mels, f), elements=st.floats(-1e30, 1e30)))
    out = compute_mfcc(db, cfg)
    assert out.shape == (n, cfg.n_mfcc, f) and np.isfinite(out).all()


_bad = st.sampled_from([np.nan, np.inf, -np.inf])


@PROPS
@given(_iq(batch=True), st.data())
def test_non_finite_input_is_refused_naming_it(case, data) -> None:
    cfg, iq = case
    iq = iq.copy()
    i, k = data.draw(st.integers(0, iq.shape[0] - 1)), data.draw(st.integers(0, iq.shape[1] - 1))
    value = data.draw(_bad)
    iq[i, k] = complex(value, iq[i, k].imag) if data.draw(st.booleans()) else complex(iq[i, k].real, value)
    match = r"iq contains \d+ non-finite value\(s\) \(NaN or inf\), the first at index"
    for fn in (extract_features_batch, iq_to_mel_spectrogram_batch, receiver_scalars_batch, compute_mfcc):
        with pytest.raises(ValueError, match=match):
            fn(iq, cfg)
    row = iq[i]
    for fn in (iq_to_mel_spectrogram, power_spectrogram, receiver_scalars, compute_mfcc):
        with pytest.raises(ValueError, match=rf"{match} {k}\b"):
            fn(row, cfg)
    log_mel = iq_to_mel_spectrogram_batch(np.ones_like(iq), cfg)
    log_mel[0, 0, 0] = value
    with pytest.raises(ValueError, match="log-mel contains non-finite values"):
        compute_mfcc(log_mel, cfg)


@settings(max_examples=50, deadline=None)
@given(_iq(dtype="complex128"), st.floats(MAX_IQ_COMPONENT * 1.01, 1e308), st.data())
def test_overflowing_float64_input_is_refused(case, big: float, data) -> None:
    cfg, iq = case
    iq = iq.copy()
    iq[data.draw(st.integers(0, iq.size - 1))] = complex(0.0, -big)
    for fn in (iq_to_mel_spectrogram, compute_mfcc, power_spectrogram, receiver_scalars):
        with pytest.raises(ValueError, match="its power would overflow float64"):
            fn(iq, cfg)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(CONFIGS), st.data())
def test_too_short_input_is_refused_naming_the_length(cfg: FeatureConfig, data) -> None:
    t = data.draw(st.integers(0, cfg.n_fft - 1))
    iq = np.ones(t, np.complex64)
    for fn in (iq_to_mel_spectrogram, compute_mfcc, power_spectrogram, receiver_scalars):
        with pytest.raises(
            ValueError, match=rf"recording length {t} samples is shorter than n_fft={cfg.n_fft}"
        ):
            fn(iq, cfg)
    with pytest.raises(ValueError, match="shorter than n_fft"):
        extract_features_batch(iq[None], cfg)
