"""Tests for heimdall.features: numpy reference path, torch fast path and its ONNX export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from torch.overrides import TorchFunctionMode

from heimdall.features import (
    SCALAR_NAMES,
    FeatureConfig,
    ReceiverScalars,
    TorchFeatureExtractor,
    band_center_frequencies,
    compute_mfcc,
    dct_matrix,
    extract_features_batch,
    iq_complex_to_real,
    iq_to_mel_spectrogram,
    iq_to_mel_spectrogram_batch,
    mel_filterbank_two_sided,
    power_spectrogram,
    receiver_scalars,
    receiver_scalars_batch,
    slaney_mel_filterbank,
)

FS = 12500.0
T = 6250
NOISE_DBM = -127.0
CFG = FeatureConfig()
# log-mel abs tolerance (dB) between float32 torch/ONNX and float64 numpy; MFCC bound follows from the
# orthonormal DCT: |coef error| <= ||log-mel error||_2 <= sqrt(2*n_mels) * LOGMEL_ATOL.
LOGMEL_ATOL = 1e-3
MFCC_ATOL = LOGMEL_ATOL * np.sqrt(CFG.n_bands)


def _noise(rng: np.random.Generator, power_dbm: float, shape: tuple[int, ...]) -> np.ndarray:
    """Circular white complex Gaussian noise with mean |x|^2 = 10^(power_dbm/10) mW."""
    sigma = np.sqrt(10 ** (power_dbm / 10) / 2)
    return sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def _fm(power_dbm: float, deviation_hz: float, mod_hz: float, offset_hz: float = 0.0, phase: float = 0.0):
    """Sinusoidally frequency-modulated complex carrier (Carson bandwidth 2*(deviation + mod_hz))."""
    t = np.arange(T) / FS
    beta = deviation_hz / mod_hz
    arg = 2 * np.pi * offset_hz * t + beta * np.sin(2 * np.pi * mod_hz * t + phase)
    return np.sqrt(10 ** (power_dbm / 10)) * np.exp(1j * arg)


def _tone(freq_hz: float, power_dbm: float, n: int = T) -> np.ndarray:
    return np.sqrt(10 ** (power_dbm / 10)) * np.exp(2j * np.pi * freq_hz * np.arange(n) / FS)


# ------------------------------------------------------------------------------------------------ config


def test_config_hash_is_stable_and_pinned() -> None:
    assert FeatureConfig().config_hash() == FeatureConfig().config_hash()
    assert FeatureConfig(fmax=None).config_hash() == CFG.config_hash()
    # Pinned on purpose: this is the feature cache key. Update it deliberately when features change.
    assert CFG.config_hash() == "697f8d231d11481d"  # FEATURE_VERSION 2, heard_snr_db 6
    assert len(CFG.config_hash()) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"sample_rate": 25000.0},
        {"n_fft": 512},
        {"hop_length": 64},
        {"n_mels": 24},
        {"n_mfcc": 13},
        {"window": "hamming"},
        {"fmin": 50.0},
        {"fmax": 6000.0},
        {"log_floor_mw": 1e-19},
        {"noise_group_bins": 4},
        {"noise_quantile": 0.2},
        {"heard_snr_db": 4.0},
    ],
)
def test_config_hash_changes_with_every_field(change: dict) -> None:
    assert dataclasses.replace(CFG, **change).config_hash() != CFG.config_hash()


@pytest.mark.parametrize(
    "bad",
    [{"n_fft": 255}, {"hop_length": 0}, {"n_mfcc": 65}, {"fmax": 7000.0}, {"noise_group_bins": 3}],
)
def test_config_rejects_invalid_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(**bad)


def test_n_frames_without_padding() -> None:
    assert CFG.n_frames(6250) == 1 + (6250 - 256) // 128 == 47
    assert CFG.n_frames(256) == 1
    with pytest.raises(ValueError, match="255"):
        CFG.n_frames(255)


# ------------------------------------------------------------------------------------------- filterbank


@pytest.mark.parametrize(
    "cfg",
    [CFG, FeatureConfig(n_fft=512, hop_length=256, n_mels=24, fmin=100.0, fmax=5000.0, n_mfcc=13)],
    ids=["default", "custom"],
)
def test_mel_filterbank_halves_match_librosa(cfg: FeatureConfig) -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        htk=False,
        norm="slaney",
        dtype=np.float64,
    )
    np.testing.assert_allclose(slaney_mel_filterbank(cfg), ref, rtol=0, atol=1e-6)

    fb = mel_filterbank_two_sided(cfg)
    n_fft, half, m = cfg.n_fft, cfg.n_fft // 2, cfg.n_mels
    assert fb.shape == (2 * m, n_fft)
    pos, neg = fb[m:], fb[:m][::-1]  # neg[i] is the mirror of positive band i
    np.testing.assert_allclose(pos[:, : half + 1], ref, rtol=0, atol=1e-6)
    assert not pos[:, half + 1 :].any()
    k = np.arange(1, half)
    np.testing.assert_allclose(neg[:, n_fft - k], ref[:, k], rtol=0, atol=1e-6)
    # DC and Nyquist belong to the positive half only; negative half lives in bins n_fft/2+1..n_fft-1.
    assert not neg[:, : half + 1].any()
    # No bin is used by both halves.
    assert not np.any((pos > 0) & (neg > 0))


def test_band_order_is_increasing_frequency() -> None:
    centres = band_center_frequencies(CFG)
    assert centres.shape == (CFG.n_bands,)
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(centres[: CFG.n_mels], -centres[CFG.n_mels :][::-1])


def test_dct_matrix_matches_scipy_dct2_ortho() -> None:
    x = np.random.default_rng(0).standard_normal((CFG.n_bands, 7))
    ref = scipy.fft.dct(x, type=2, norm="ortho", axis=0)[: CFG.n_mfcc]
    np.testing.assert_allclose(dct_matrix(CFG) @ x, ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------- STFT


@pytest.mark.parametrize("freq_hz", [-2000.0, 2000.0])
def test_complex_exponential_lights_only_its_own_side(freq_hz: float) -> None:
    log_mel = iq_to_mel_spectrogram(_tone(freq_hz, -90.0), CFG)
    assert log_mel.shape == (CFG.n_bands, CFG.n_frames(T))
    assert log_mel.dtype == np.float32
    mean_db = log_mel.mean(axis=1)
    neg, pos = mean_db[: CFG.n_mels], mean_db[CFG.n_mels :]
    lit, dark = (neg, pos) if freq_hz < 0 else (pos, neg)
    assert lit.max() - dark.max() > 80.0  # the mirror side sees only window leakage (or the floor)
    centres = band_center_frequencies(CFG)
    assert abs(centres[np.argmax(mean_db)] - freq_hz) < 150.0


def test_power_spectrogram_parseval_and_white_noise_power() -> None:
    rng = np.random.default_rng(1)
    x = _tone(1234.5, -80.0) + _noise(rng, -95.0, (T,))
    spec = power_spectrogram(x, CFG)
    assert spec.shape == (CFG.n_fft, CFG.n_frames(T))
    # Per frame, the bin sum is exactly the window-weighted mean power of the frame (Parseval).
    w = np.hanning(CFG.n_fft + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(x, CFG.n_fft)[:: CFG.hop_length]
    expected = (np.abs(frames) ** 2 @ w**2) / np.sum(w**2)
    np.testing.assert_allclose(spec.sum(axis=0), expected, rtol=1e-10)

    # White noise of power P: frame bin sums average to P, and each bin holds P / n_fft.
    p_mw = 10 ** (NOISE_DBM / 10)
    noise_spec = power_spectrogram(_noise(rng, NOISE_DBM, (125_000,)), CFG)
    assert noise_spec.sum(axis=0).mean() == pytest.approx(p_mw, rel=0.02)
    per_bin = noise_spec.mean(axis=1) * CFG.n_fft / p_mw
    assert abs(np.median(per_bin) - 1.0) < 0.05


def test_absolute_level_is_preserved() -> None:
    # Levels well above log_floor_mw (-200 dBm), where the floor's share is < 1e-6 dB.
    rng = np.random.default_rng(2)
    x = _fm(-60.0, 2500.0, 1000.0) + _noise(rng, -75.0, (T,))
    base, louder = iq_to_mel_spectrogram(x, CFG), iq_to_mel_spectrogram(10 * x, CFG)
    np.testing.assert_allclose(louder - base, 20.0, atol=1e-4)
    s0, s1 = receiver_scalars(x, CFG), receiver_scalars(10 * x, CFG)
    assert s1.power_dbm - s0.power_dbm == pytest.approx(20.0, abs=1e-6)
    assert s1.noise_floor_dbm - s0.noise_floor_dbm == pytest.approx(20.0, abs=1e-6)
    assert s1.snr_db == pytest.approx(s0.snr_db, abs=1e-6)


def test_batch_matches_single_and_mfcc_inputs_agree() -> None:
    x = _noise(np.random.default_rng(3), -120.0, (3, 2000))
    batch = iq_to_mel_spectrogram_batch(x, CFG)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], iq_to_mel_spectrogram(x[i], CFG))
    log_mel, mfcc, scalars = extract_features_batch(x, CFG)
    np.testing.assert_array_equal(log_mel, batch)
    assert mfcc.shape == (3, CFG.n_mfcc, CFG.n_frames(2000)) and mfcc.dtype == np.float32
    np.testing.assert_allclose(compute_mfcc(x[0], CFG), mfcc[0], atol=1e-3)
    np.testing.assert_allclose(compute_mfcc(batch[0], CFG), mfcc[0], atol=1e-3)
    np.testing.assert_allclose(compute_mfcc(x, CFG), mfcc, atol=1e-3)
    ref = scipy.fft.dct(batch[1].astype(np.float64), type=2, norm="ortho", axis=0)[: CFG.n_mfcc]
    np.testing.assert_allclose(mfcc[1], ref, atol=1e-3)
    np.testing.assert_array_equal(scalars, receiver_scalars_batch(x, CFG))
    np.testing.assert_allclose(receiver_scalars(x[2], CFG).as_array(), scalars[2], atol=1e-5)


# ----------------------------------------------------------------------------------------- input checks


def test_too_short_recording_raises_naming_length() -> None:
    x = np.zeros(200, np.complex64)
    for fn in (iq_to_mel_spectrogram, receiver_scalars, compute_mfcc, power_spectrogram):
        with pytest.raises(ValueError, match="200"):
            fn(x, CFG)
    with pytest.raises(ValueError, match="200"):
        iq_to_mel_spectrogram_batch(x[None], CFG)
    with pytest.raises(ValueError, match="200"):
        TorchFeatureExtractor(CFG)(torch.zeros(1, 2, 200))
    with pytest.raises(ValueError, match="I and Q"):
        TorchFeatureExtractor(CFG)(torch.zeros(1, 1, 1000))


def test_non_finite_input_raises() -> None:
    x = _noise(np.random.default_rng(4), -120.0, (2, 1000)).astype(np.complex64)
    x[1, 500] = np.nan
    for fn, arg in [
        (iq_to_mel_spectrogram, x[1]),
        (receiver_scalars, x[1]),
        (compute_mfcc, x[1]),
        (iq_to_mel_spectrogram_batch, x),
        (receiver_scalars_batch, x),
        (extract_features_batch, x),
    ]:
        with pytest.raises(ValueError, match="non-finite"):
            fn(arg, CFG)
    with pytest.raises(ValueError, match="non-finite"):
        compute_mfcc(np.full((CFG.n_bands, 3), np.nan, np.float32), CFG)


def test_real_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="complex"):
        iq_to_mel_spectrogram(np.ones(T), CFG)
    with pytest.raises(TypeError, match="complex"):
        iq_complex_to_real(np.ones(T))


# ---------------------------------------------------------------------------------------------- scalars


def test_noise_only_floor_is_unbiased_and_not_heard() -> None:
    x = _noise(np.random.default_rng(5), NOISE_DBM, (200, T))
    s = receiver_scalars_batch(x, CFG)
    assert s.shape == (200, len(SCALAR_NAMES)) and s.dtype == np.float32
    err = s[:, 1] - NOISE_DBM
    assert np.abs(err).max() < 0.5
    assert abs(err.mean()) < 0.05  # the order-statistic bias correction is right
    assert np.abs(s[:, 0] - NOISE_DBM).max() < 0.2
    assert s[:, 2].max() < -3.0
    assert not s[:, 3].any()
    single = receiver_scalars(x[0], CFG)
    assert isinstance(single, ReceiverScalars) and single.heard is False


def test_noise_floor_correction_adapts_to_recording_length() -> None:
    x = _noise(np.random.default_rng(6), NOISE_DBM, (300, 1024))
    err = receiver_scalars_batch(x, CFG)[:, 1] - NOISE_DBM
    assert abs(np.median(err)) < 0.1


@pytest.mark.parametrize(
    ("mod_hz", "offset_hz", "snr_db"),
    [(1000.0, 0.0, 15.0), (500.0, 0.0, 15.0), (1000.0, 500.0, 15.0), (1000.0, 0.0, 8.0)],
)
def test_fm_signal_scalars(mod_hz: float, offset_hz: float, snr_db: float) -> None:
    rng = np.random.default_rng(7)
    signal_dbm = NOISE_DBM + snr_db
    x = _fm(signal_dbm, 2500.0, mod_hz, offset_hz, phase=rng.uniform(0, 2 * np.pi))
    x = x + _noise(rng, NOISE_DBM, (T,))
    s = receiver_scalars(x, CFG)
    truth_dbm = 10 * np.log10(10 ** (signal_dbm / 10) + 10 ** (NOISE_DBM / 10))
    assert s.power_dbm == pytest.approx(truth_dbm, abs=0.2)
    assert s.noise_floor_dbm == pytest.approx(NOISE_DBM, abs=0.75)
    assert s.snr_db == pytest.approx(snr_db, abs=1.5)
    assert s.heard is True and s.heard_weight == 1.0  # ≥ 6.5 dB: past the ramp (1.5 dB estimator slack)


# ------------------------------------------------------------------------------------------- torch path


def test_iq_complex_to_real_layout() -> None:
    x = np.array([[1 + 2j, 3 - 4j]], np.complex128)
    out = iq_complex_to_real(x)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [[1, 3], [2, -4]])


def _assert_matches_numpy(out: tuple[np.ndarray, ...], ref: tuple[np.ndarray, ...]) -> None:
    log_mel, mfcc, scalars = out
    np.testing.assert_allclose(log_mel, ref[0], rtol=0, atol=LOGMEL_ATOL)
    np.testing.assert_allclose(mfcc, ref[1], rtol=0, atol=MFCC_ATOL)
    np.testing.assert_allclose(scalars[:, :3], ref[2][:, :3], rtol=0, atol=LOGMEL_ATOL)
    # the heard ramp has slope 1/dB, so its error is bounded by the SNR's
    np.testing.assert_allclose(scalars[:, 3], ref[2][:, 3], rtol=0, atol=LOGMEL_ATOL)


@pytest.mark.parametrize("amplitude", [1e-7, 1.0])
def test_torch_matches_numpy(amplitude: float) -> None:
    rng = np.random.default_rng(8)
    x = amplitude * (rng.standard_normal((4, T)) + 1j * rng.standard_normal((4, T)))
    x[0] += 30 * amplitude * _fm(0.0, 2500.0, 1000.0)  # one heard receiver
    module = TorchFeatureExtractor(CFG)
    with torch.no_grad():
        out = module(torch.from_numpy(iq_complex_to_real(x)))
    assert out.log_mel.dtype == out.mfcc.dtype == out.scalars.dtype == torch.float32
    assert out.log_mel.shape == (4, CFG.n_bands, CFG.n_frames(T))
    assert out.mfcc.shape == (4, CFG.n_mfcc, CFG.n_frames(T))
    assert out.scalars.shape == (4, len(SCALAR_NAMES))
    ref = extract_features_batch(x, CFG)
    assert ref[2][0, 3] == 1.0 and not ref[2][1:, 3].any()
    _assert_matches_numpy(tuple(t.numpy() for t in out), ref)


class _DtypeRecorder(TorchFunctionMode):
    """Records every torch function called and the dtypes of the tensors it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        result = func(*args, **(kwargs or {}))
        results = result if isinstance(result, tuple | list) else (result,)
        for r in results:
            if isinstance(r, torch.Tensor):
                self.calls.append((getattr(func, "__name__", str(func)), r.dtype))
        return result


def test_torch_path_uses_only_real_ops() -> None:
    module = TorchFeatureExtractor(CFG)
    for name, buf in module.named_buffers():
        assert buf.dtype == torch.float32 and not buf.is_complex(), name
    recorder = _DtypeRecorder()
    with torch.no_grad(), recorder:
        module(torch.randn(2, 2, 1000) * 1e-7)
    assert recorder.calls
    assert not [c for c in recorder.calls if c[1].is_complex], "complex tensors in the torch path"
    assert not [c for c in recorder.calls if "stft" in c[0] or "fft" in c[0]]


def test_onnx_export_dynamic_batch_matches(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = TorchFeatureExtractor(CFG).eval()
    rng = np.random.default_rng(9)
    example = torch.from_numpy(iq_complex_to_real(_noise(rng, NOISE_DBM, (2, T))))
    path = tmp_path / "features.onnx"
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=True,
        input_names=["iq"],
        output_names=["log_mel", "mfcc", "scalars"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _noise(rng, NOISE_DBM, (3, T))
    x[1] += _fm(NOISE_DBM + 15.0, 2500.0, 1000.0)
    real = iq_complex_to_real(x)
    onnx_out = session.run(None, {"iq": real})
    with torch.no_grad():
        torch_out = module(torch.from_numpy(real))
    for got, want in zip(onnx_out, torch_out, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-3)
    _assert_matches_numpy(tuple(onnx_out), extract_features_batch(x, CFG))
