"""The numpy reference path: log-mel, MFCC and receiver scalars from complex IQ (float64 inside)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heimdall.detection import HEARD_SNR_DB, heard, heard_weight
from heimdall.features.config import (
    _NUMPY_CHUNK,
    _SNR_MAX_DB,
    _SNR_MIN_DB,
    _SNR_RATIO_FLOOR,
    MAX_IQ_COMPONENT,
    SCALAR_NAMES,
    FeatureConfig,
    _mel_matrix_t,
    _power_scale,
    _window,
    dct_matrix,
    noise_floor_correction,
)


def _check_iq(iq: np.ndarray, ndim: int, config: FeatureConfig) -> np.ndarray:
    iq = np.asarray(iq)
    if not np.iscomplexobj(iq):
        raise TypeError(f"iq must be complex IQ (got dtype {iq.dtype}); never pass abs(iq) or I only")
    if iq.ndim != ndim:
        shape = "(T,)" if ndim == 1 else "(N, T)"
        raise ValueError(f"iq must have shape {shape}, got {iq.shape}")
    config.n_frames(iq.shape[-1])  # raises ValueError naming the length when too short
    finite = np.isfinite(iq)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        first = tuple(int(i) for i in np.unravel_index(bad[0], iq.shape))
        where = first[0] if ndim == 1 else first
        raise ValueError(
            f"iq contains {bad.size} non-finite value(s) (NaN or inf), the first at index {where}"
        )
    if iq.dtype != np.complex64 and iq.size:
        peak = max(float(np.abs(iq.real).max()), float(np.abs(iq.imag).max()))
        if peak > MAX_IQ_COMPONENT:
            raise ValueError(
                f"iq has a component of magnitude {peak:.3g} > {MAX_IQ_COMPONENT:g}: its power would "
                "overflow float64 (calibrated IQ is sqrt(mW), typically ~1e-6)"
            )
    return iq


def _power_frames(iq: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Bin power (mW) ``(N, F, n_fft)`` float64 in FFT order for a validated ``(N, T)`` chunk."""
    frames = np.lib.stride_tricks.sliding_window_view(iq, config.n_fft, axis=-1)[:, :: config.hop_length]
    spec = np.fft.fft(frames.astype(np.complex128) * _window(config), axis=-1)
    power = spec.real**2
    power += spec.imag**2
    power *= _power_scale(config)
    return power


def power_spectrogram(iq: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Two-sided STFT bin power in mW, shape ``(n_fft, n_frames)``, FFT bin order, float64."""
    iq = _check_iq(iq, 1, config)
    return _power_frames(iq[None], config)[0].T


def _db(x: np.ndarray, floor: float) -> np.ndarray:
    return 10.0 * np.log10(x + floor)


def _scalars_from_power(
    time_avg_bin_power: np.ndarray, mean_power: np.ndarray, n_frames: int, config: FeatureConfig
) -> np.ndarray:
    """Scalars ``(N, 4)`` from time-averaged bin power ``(N, n_fft)`` and mean power ``(N,)`` (float64)."""
    groups = time_avg_bin_power.reshape(len(time_avg_bin_power), config.n_noise_groups, -1).mean(-1)
    rank = config.noise_rank
    stat = np.partition(groups, rank, axis=-1)[:, rank]
    noise = stat * (config.n_fft / noise_floor_correction(config, n_frames))
    power_dbm = _db(mean_power, config.log_floor_mw)
    noise_dbm = _db(noise, config.log_floor_mw)
    ratio = (mean_power + config.log_floor_mw) / (noise + config.log_floor_mw) - 1.0
    snr = np.clip(10.0 * np.log10(np.maximum(ratio, _SNR_RATIO_FLOOR)), _SNR_MIN_DB, _SNR_MAX_DB)
    # the ramp reads the float32 SNR the scalars store, so `heard >= 0.5` is exactly `snr >= threshold`
    snr = snr.astype(np.float32).astype(np.float64)
    return np.stack([power_dbm, noise_dbm, snr, heard_scalar(snr, config)], axis=-1)


def heard_scalar(snr_db: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """The ``heard`` feature: :func:`heimdall.detection.heard_weight` centred on ``config.heard_snr_db``.

    With the default configuration this *is* ``heard_weight(snr_db)`` (a 1 dB ramp around 6 dB, 0.5 at
    the threshold), so ``heard >= 0.5`` ⟺ ``detection.heard(snr_db)``. A step would flip between float32
    PyTorch and ONNX Runtime for a recording on the threshold; the ramp moves by at most |Δsnr| / 1 dB.
    """
    return heard_weight(np.asarray(snr_db, np.float64) + (HEARD_SNR_DB - config.heard_snr_db))


def extract_features_batch(
    iq: np.ndarray, config: FeatureConfig = FeatureConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything from one FFT pass over a complex batch ``(N, T)``.

    Returns float32 ``log_mel (N, 2*n_mels, F)``, ``mfcc (N, n_mfcc, F)``, ``scalars (N, 4)``.
    Recordings are processed in small chunks so the float64 frame tensor stays cache friendly.
    """
    iq = _check_iq(iq, 2, config)
    n, t = iq.shape
    n_frames = config.n_frames(t)
    mel_t = _mel_matrix_t(config)
    dct = dct_matrix(config)
    log_mel = np.empty((n, config.n_bands, n_frames), np.float32)
    mfcc = np.empty((n, config.n_mfcc, n_frames), np.float32)
    scalars = np.empty((n, len(SCALAR_NAMES)), np.float32)
    for s in range(0, n, _NUMPY_CHUNK):
        chunk = iq[s : s + _NUMPY_CHUNK]
        power = _power_frames(chunk, config)
        lm = _db(power @ mel_t, config.log_floor_mw).transpose(0, 2, 1)
        log_mel[s : s + len(chunk)] = lm
        mfcc[s : s + len(chunk)] = dct @ lm
        mean_power = chunk.real.astype(np.float64) ** 2 + chunk.imag.astype(np.float64) ** 2
        scalars[s : s + len(chunk)] = _scalars_from_power(
            power.mean(axis=1), mean_power.mean(axis=-1), n_frames, config
        )
    return log_mel, mfcc, scalars


def iq_to_mel_spectrogram_batch(iq: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Batched :func:`iq_to_mel_spectrogram`: ``(N, T)`` complex -> ``(N, 2*n_mels, n_frames)`` float32."""
    iq = _check_iq(iq, 2, config)
    n, t = iq.shape
    mel_t = _mel_matrix_t(config)
    out = np.empty((n, config.n_bands, config.n_frames(t)), np.float32)
    for s in range(0, n, _NUMPY_CHUNK):
        power = _power_frames(iq[s : s + _NUMPY_CHUNK], config)
        out[s : s + len(power)] = _db(power @ mel_t, config.log_floor_mw).transpose(0, 2, 1)
    return out


def iq_to_mel_spectrogram(iq: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Two-sided log-mel spectrogram (dBm-like) of one complex recording: ``(2*n_mels, n_frames)`` float32."""
    iq = _check_iq(iq, 1, config)
    return iq_to_mel_spectrogram_batch(iq[None], config)[0]


def compute_mfcc(iq_or_logmel: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """MFCC ``(n_mfcc, F)`` (or ``(N, n_mfcc, F)``) via the orthonormal DCT-II matrix over the band axis.

    Accepts complex IQ ``(T,)``/``(N, T)`` (log-mel computed first) or a real dB log-mel
    ``(2*n_mels, F)``/``(N, 2*n_mels, F)``.
    """
    x = np.asarray(iq_or_logmel)
    if np.iscomplexobj(x):
        if x.ndim == 1:
            x = iq_to_mel_spectrogram(x, config)
        elif x.ndim == 2:
            x = iq_to_mel_spectrogram_batch(x, config)
        else:
            raise ValueError(f"complex IQ must have shape (T,) or (N, T), got {x.shape}")
    else:
        if x.ndim not in (2, 3) or x.shape[-2] != config.n_bands:
            raise ValueError(f"log-mel must have shape (..., {config.n_bands}, n_frames), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("log-mel contains non-finite values (NaN or inf)")
    return (dct_matrix(config) @ x.astype(np.float64)).astype(np.float32)


@dataclass(frozen=True)
class ReceiverScalars:
    """Per-recording scalars; ``heard`` is the rule (estimated SNR ≥ the threshold), ``heard_weight`` the
    soft feature the model reads (:func:`heard_scalar`)."""

    power_dbm: float
    noise_floor_dbm: float
    snr_db: float
    heard: bool
    heard_weight: float

    def as_array(self) -> np.ndarray:
        """``(4,)`` float32 in :data:`SCALAR_NAMES` order (the heard column is ``heard_weight``)."""
        return np.array([self.power_dbm, self.noise_floor_dbm, self.snr_db, self.heard_weight], np.float32)


def receiver_scalars_batch(iq: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Scalars ``(N, 4)`` float32 (:data:`SCALAR_NAMES`) for a batch ``(N, T)`` of complex recordings.

    * ``power_dbm = 10*log10(mean|x|^2)`` over the whole recording.
    * ``noise_floor_dbm``: total noise power over the full two-sided band, estimated blind. The time-averaged
      bin powers are averaged in ``n_fft/noise_group_bins`` contiguous groups (8 bins ≈ 390 Hz by default,
      cutting the estimator's variance ~4x versus single bins), the ``noise_quantile`` order statistic of the
      groups (4th smallest of 32) is taken, multiplied by ``n_fft`` and divided by its analytically computed
      white-noise bias (:func:`noise_floor_correction`). A low order statistic ignores the occupied bins: an
      FM signal with ±2.5 kHz deviation spanning up to ±4 kHz leaves ~11 of the 32 groups as noise, and
      using their 4th smallest instead of the ~10th-percentile one biases the floor up by only ~0.2-0.3 dB.
      It works wherever the signal sits in the band, unlike a fixed band-edge estimator.
    * ``snr_db = 10*log10(max(P/N - 1, 1e-3))`` clipped to [-30, 60].
    * ``heard = heard_weight(snr_db)`` (:func:`heard_scalar`): 0 below 5.5 dB, 1 above 6.5 dB, linear in
      between and 0.5 at the rule's 6 dB (:mod:`heimdall.detection`), so ``heard >= 0.5`` is the rule
      ``snr_db >= 6``. Noise-only recordings give ``P/N - 1 ≈ 0``, i.e. far below 0 dB: weight 0.
    """
    return extract_features_batch(iq, config)[2]


def receiver_scalars(iq: np.ndarray, config: FeatureConfig = FeatureConfig()) -> ReceiverScalars:
    """Scalars of one complex recording ``(T,)``; definition in :func:`receiver_scalars_batch`."""
    iq = _check_iq(iq, 1, config)
    power = _power_frames(iq[None], config)
    mean_power = np.mean(iq.real.astype(np.float64) ** 2 + iq.imag.astype(np.float64) ** 2)
    row = _scalars_from_power(power.mean(axis=1), np.array([mean_power]), power.shape[1], config)[0]
    rule = bool(heard(row[2] + (HEARD_SNR_DB - config.heard_snr_db)))
    return ReceiverScalars(float(row[0]), float(row[1]), float(row[2]), rule, float(row[3]))


def iq_complex_to_real(iq: np.ndarray) -> np.ndarray:
    """Complex ``(..., T)`` -> float32 ``(..., 2, T)`` with I then Q channels (input of the torch path)."""
    iq = np.asarray(iq)
    if not np.iscomplexobj(iq):
        raise TypeError(f"iq must be complex, got dtype {iq.dtype}")
    return np.stack([iq.real, iq.imag], axis=-2).astype(np.float32)
