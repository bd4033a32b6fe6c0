"""Spectral features and per-receiver scalars computed from calibrated complex IQ.

Conventions (shared by the numpy reference path and the torch/ONNX fast path):

* IQ is calibrated so that ``mean(|x|^2)`` is the received power in mW. Absolute level is the location
  signal, so nothing here normalises a recording by its own statistics: scaling the IQ amplitude by ``a``
  shifts every dB output by exactly ``20*log10(a)`` (until values reach ``log_floor_mw``).
* STFT: two-sided FFT of the complex IQ (``np.fft.fft`` bin order), no centering or padding, so
  ``n_frames = 1 + (T - n_fft) // hop_length``. Bin power is ``|X_k|^2 / (n_fft * sum(w^2))`` in mW: by
  Parseval, the sum over all ``n_fft`` bins of one frame equals the window-weighted mean power
  ``sum(w^2 |x|^2) / sum(w^2)`` of that frame, so for white noise of power ``P`` mW the per-frame bin sum is
  ``P`` on average and each bin holds ``P / n_fft``.
* Mel bands: the Slaney mel filterbank (``librosa.filters.mel(..., htk=False, norm='slaney')``,
  re-implemented here so librosa is only a test dependency) weights the positive half (bins
  ``0..n_fft/2``, DC and Nyquist included, as librosa defines them); its mirror image weights the negative
  frequencies (bins ``n_fft-1..n_fft/2+1`` for ``-f_1..-f_{n_fft/2-1}``). DC and Nyquist are *not* mirrored,
  so no bin is counted twice. Bands are ordered by increasing frequency: the ``n_mels`` negative bands from
  most to least negative, then the ``n_mels`` positive bands from low to high. Band values are
  ``10*log10(band_power + log_floor_mw)``; with Slaney area normalisation a band power is a weighted bin sum
  (weights ``~2/bandwidth_Hz``), i.e. dBm-like absolute units, not the band's total power.
* MFCC: orthonormal DCT-II over the ``2*n_mels`` band axis of the dB log-mel, first ``n_mfcc`` kept.
* Receiver scalars ``(power_dbm, noise_floor_dbm, snr_db, heard)``: see :func:`receiver_scalars_batch`.
  ``heard`` is the *soft* weight of :func:`heimdall.detection.heard_weight` (a 1 dB ramp centred on the
  6 dB rule), identical in both paths, so no hard step sits inside an exported graph.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.signal
import scipy.special
import torch
from torch import nn

from heimdall.detection import HEARD_RAMP_DB, HEARD_SNR_DB, heard, heard_weight

__all__ = [
    "SCALAR_NAMES",
    "FeatureConfig",
    "ReceiverScalars",
    "TorchFeatureExtractor",
    "TorchFeatures",
    "band_center_frequencies",
    "compute_mfcc",
    "dct_matrix",
    "extract_features_batch",
    "heard_scalar",
    "iq_complex_to_real",
    "iq_to_mel_spectrogram",
    "iq_to_mel_spectrogram_batch",
    "mel_filterbank_two_sided",
    "noise_floor_correction",
    "power_spectrogram",
    "receiver_scalars",
    "receiver_scalars_batch",
    "slaney_mel_filterbank",
]

#: Bumped whenever the feature *algorithm* changes, so cached features keyed by ``config_hash`` go stale.
#: 2: ``heard`` became the soft ramp of :func:`heimdall.detection.heard_weight` (was a 3 dB step).
FEATURE_VERSION = 2

#: Column order of the scalar arrays returned by the batch/torch paths.
SCALAR_NAMES: tuple[str, ...] = ("power_dbm", "noise_floor_dbm", "snr_db", "heard")

_SNR_MIN_DB = -30.0
_SNR_MAX_DB = 60.0
_SNR_RATIO_FLOOR = 1e-3
#: Largest ``|real|`` or ``|imag|`` of an IQ sample the numpy path accepts: the float64 bin powers of
#: larger (complex128) samples would overflow to inf. complex64 IQ (at most 3.4e38) never comes near it.
MAX_IQ_COMPONENT = 1e140
# Recordings per numpy FFT chunk: keeps the complex128 frame tensor (~3 MB per 32 recordings of 6250
# samples) cache friendly; larger chunks were measured slower due to page faults.
_NUMPY_CHUNK = 32


@dataclass(frozen=True)
class FeatureConfig:
    """Feature parameters; ``config_hash`` is the cache key of everything derived from them.

    ``noise_group_bins``, ``noise_quantile`` and ``heard_snr_db`` parametrise the noise-floor estimator and
    the heard ramp's centre (see :func:`receiver_scalars_batch`); they are fields so that changing them
    invalidates cached scalars. ``heard_snr_db`` defaults to the project's one rule,
    :data:`heimdall.detection.HEARD_SNR_DB`; the baselines and the oracle read that rule, so only
    experiments should move it.
    """

    sample_rate: float = 12500.0
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 32
    n_mfcc: int = 20
    window: str = "hann"
    fmin: float = 0.0
    fmax: float | None = None
    log_floor_mw: float = 1e-20
    noise_group_bins: int = 8
    noise_quantile: float = 0.1
    heard_snr_db: float = HEARD_SNR_DB

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.n_fft < 4 or self.n_fft % 2:
            raise ValueError(f"n_fft must be an even integer >= 4, got {self.n_fft}")
        if not 0 < self.hop_length <= self.n_fft:
            raise ValueError(f"hop_length must be in (0, n_fft={self.n_fft}], got {self.hop_length}")
        if self.n_mels < 1:
            raise ValueError(f"n_mels must be >= 1, got {self.n_mels}")
        if not 1 <= self.n_mfcc <= 2 * self.n_mels:
            raise ValueError(f"n_mfcc must be in [1, 2*n_mels={2 * self.n_mels}], got {self.n_mfcc}")
        if not 0.0 <= self.fmin < self.fmax_hz <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax_hz}"
            )
        if self.log_floor_mw <= 0:
            raise ValueError(f"log_floor_mw must be > 0, got {self.log_floor_mw}")
        if self.noise_group_bins < 1 or self.n_fft % self.noise_group_bins:
            raise ValueError(f"noise_group_bins must divide n_fft={self.n_fft}, got {self.noise_group_bins}")
        if not 0.0 <= self.noise_quantile < 1.0:
            raise ValueError(f"noise_quantile must be in [0, 1), got {self.noise_quantile}")

    @property
    def fmax_hz(self) -> float:
        """Upper mel edge in Hz (``fmax`` or Nyquist when ``fmax`` is None)."""
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    @property
    def n_bands(self) -> int:
        """Number of two-sided mel bands (``2*n_mels``)."""
        return 2 * self.n_mels

    @property
    def n_noise_groups(self) -> int:
        return self.n_fft // self.noise_group_bins

    @property
    def noise_rank(self) -> int:
        """0-based order statistic of the sorted noise groups used as the noise-floor estimate."""
        return min(int(self.noise_quantile * self.n_noise_groups), self.n_noise_groups - 1)

    def config_hash(self) -> str:
        """Stable cache key: sha256 of the canonical JSON of all fields plus ``FEATURE_VERSION``."""
        payload = {"feature_version": FEATURE_VERSION, **dataclasses.asdict(self)}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def n_frames(self, n_samples: int) -> int:
        """STFT frames for ``n_samples`` (no padding); raises ValueError when shorter than ``n_fft``."""
        if n_samples < self.n_fft:
            raise ValueError(
                f"recording length {n_samples} samples is shorter than n_fft={self.n_fft}; "
                "cannot compute a single STFT frame"
            )
        return 1 + (n_samples - self.n_fft) // self.hop_length


# --------------------------------------------------------------------------------------------------------
# Constant matrices (cached per config, returned read-only so the cache cannot be corrupted)
# --------------------------------------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=32)
def _window(config: FeatureConfig) -> np.ndarray:
    """Periodic (DFT-even) window, e.g. ``scipy.signal.get_window('hann', n_fft)``."""
    return _readonly(np.asarray(scipy.signal.get_window(config.window, config.n_fft, fftbins=True), float))


def _power_scale(config: FeatureConfig) -> float:
    """``1 / (n_fft * sum(w^2))``: makes the per-frame sum over all bins the frame's mean power in mW."""
    w = _window(config)
    return 1.0 / (config.n_fft * float(np.sum(w * w)))


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = f / f_sp
    log_t = f >= min_log_hz
    return np.where(log_t, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mel)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def _mel_edges_hz(config: FeatureConfig) -> np.ndarray:
    """``n_mels + 2`` band edge/centre frequencies, uniformly spaced on the Slaney mel scale."""
    lo, hi = _hz_to_mel_slaney(np.array([config.fmin, config.fmax_hz]))
    return _mel_to_hz_slaney(np.linspace(lo, hi, config.n_mels + 2))


@functools.lru_cache(maxsize=32)
def slaney_mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """One-sided Slaney mel filterbank ``(n_mels, n_fft//2 + 1)``, float64.

    Numerically equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm='slaney')``
    without importing librosa at runtime.
    """
    fftfreqs = np.arange(config.n_fft // 2 + 1) * (config.sample_rate / config.n_fft)
    mel_f = _mel_edges_hz(config)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return _readonly(weights)


@functools.lru_cache(maxsize=32)
def mel_filterbank_two_sided(config: FeatureConfig) -> np.ndarray:
    """Two-sided mel matrix ``(2*n_mels, n_fft)`` acting on an FFT-ordered (``np.fft.fft``) power spectrum.

    Rows are in increasing band frequency: mirrored bands ``n_mels-1..0`` (most negative first), then the
    positive bands ``0..n_mels-1``. Positive rows use bins ``0..n_fft/2`` exactly as librosa; negative rows
    mirror only bins ``1..n_fft/2-1`` onto ``n_fft-1..n_fft/2+1`` so DC and Nyquist stay in the positive
    half only (each bin is used by one half, and the positive half is bit-identical to librosa).
    """
    n_fft, half = config.n_fft, config.n_fft // 2
    pos_one = slaney_mel_filterbank(config)
    pos = np.zeros((config.n_mels, n_fft))
    pos[:, : half + 1] = pos_one
    neg = np.zeros((config.n_mels, n_fft))
    k = np.arange(1, half)
    neg[:, n_fft - k] = pos_one[:, k]
    return _readonly(np.concatenate([neg[::-1], pos], axis=0))


@functools.lru_cache(maxsize=32)
def _mel_matrix_t(config: FeatureConfig) -> np.ndarray:
    """C-contiguous ``(n_fft, 2*n_mels)``: a transposed view makes numpy skip BLAS (measured ~100x slower)."""
    return _readonly(np.ascontiguousarray(mel_filterbank_two_sided(config).T))


def band_center_frequencies(config: FeatureConfig) -> np.ndarray:
    """Signed centre frequency (Hz) of each two-sided band, in output order (increasing)."""
    centres = _mel_edges_hz(config)[1:-1]
    return np.concatenate([-centres[::-1], centres])


@functools.lru_cache(maxsize=32)
def dct_matrix(config: FeatureConfig) -> np.ndarray:
    """Orthonormal DCT-II rows ``(n_mfcc, 2*n_mels)``.

    ``D @ x == scipy.fft.dct(x, type=2, norm='ortho', axis=0)[:n_mfcc]``; a matrix so torch/ONNX share it.
    """
    n = config.n_bands
    k = np.arange(config.n_mfcc)[:, None]
    m = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * m + 1) / (2 * n))
    d[0] *= np.sqrt(0.5)
    return _readonly(d)


@functools.lru_cache(maxsize=256)
def noise_floor_correction(config: FeatureConfig, n_frames: int) -> float:
    """Expected ratio (median sense) of the noise-floor order statistic to the true floor for white noise.

    The statistic is the ``noise_rank``-th smallest of ``n_fft/noise_group_bins`` group means of the
    time-averaged bin power. For circular white Gaussian noise each group mean is close to Gamma
    distributed; its exact relative variance follows from the window:
    ``cov(|X_a|^2, |X_b|^2) = |E X_a X_b*|^2`` with
    ``|E X_{k,t} X*_{k+d,t+m}| ∝ |sum_n w[n] w[n+m*hop] exp(-2j*pi*d*n/n_fft)|``. The Gamma shape
    ``k = 1/var_rel`` and the median rank of the order statistic, ``p = (r + 2/3) / (n + 1/3)``, give the
    bias ``gammaincinv(k, p) / k`` that is divided out.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    w = _window(config)
    n_fft, hop, g = config.n_fft, config.hop_length, config.noise_group_bins
    norm = float(np.sum(w * w))
    n = np.arange(n_fft)
    var_sum = 0.0
    max_lag = min(n_frames - 1, (n_fft - 1) // hop)  # frames further apart do not overlap
    for m in range(-max_lag, max_lag + 1):
        shift = abs(m) * hop
        lag = np.zeros(n_fft)
        lag[: n_fft - shift] = w[: n_fft - shift] * w[shift:]
        for d in range(-(g - 1), g):
            c = np.sum(lag * np.exp(-2j * np.pi * d * n / n_fft)) / norm
            var_sum += (g - abs(d)) * (n_frames - abs(m)) * float(abs(c) ** 2)
    var_rel = var_sum / (g * n_frames) ** 2
    shape = 1.0 / var_rel
    n_groups, rank = config.n_noise_groups, config.noise_rank
    p = (rank + 2.0 / 3.0) / (n_groups + 1.0 / 3.0)
    return float(scipy.special.gammaincinv(shape, p) / shape)


# --------------------------------------------------------------------------------------------------------
# numpy reference path
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# torch fast path (real-valued ops only: exportable to ONNX)
# --------------------------------------------------------------------------------------------------------


class TorchFeatures(NamedTuple):
    log_mel: torch.Tensor  # (B, 2*n_mels, F)
    mfcc: torch.Tensor  # (B, n_mfcc, F)
    scalars: torch.Tensor  # (B, 4), SCALAR_NAMES order, heard as the soft weight in [0, 1]


class TorchFeatureExtractor(nn.Module):
    """Batched float32 feature extractor equal to the numpy path, built from real-valued ops only.

    The complex STFT is a strided ``conv1d`` over the I and Q channels with window-multiplied cos/sin
    kernels, scaled by ``1/sqrt(n_fft*sum(w^2))`` so ``re^2 + im^2`` is the bin power (mW per bin).

    The input is first multiplied by the fixed gain ``1/sqrt(log_floor_mw)`` (1e10), so every power is
    expressed in units of the log floor and ``10*log10(p + floor)`` becomes ``10*log10(p' + 1) + floor_db``.
    Why: float32 handles 1e-13 mW fine, but the ONNX exporter's graph optimiser treats an ``Add`` of 1e-20
    as adding zero and deletes it, which moved near-floor bands by up to ~1.4 dB after export. With the
    floor at 1.0 nothing can be folded; calibrated IQ power maps to ~1e7 and 1.0-amplitude IQ to ~1e20
    (float32 max 3e38).

    The noise-floor bias correction depends on the frame count and is computed from the (static) input
    length, so export with a dynamic batch axis and a fixed recording length.

    ``heard`` is the same clipped ramp as :func:`heard_scalar` (``Clip`` in ONNX), never a comparison: a
    step would turn float32 rounding of an SNR on the threshold into a 0/1 flip between runtimes.
    """

    stft_weight: torch.Tensor
    mel: torch.Tensor
    dct: torch.Tensor

    def __init__(self, config: FeatureConfig = FeatureConfig()) -> None:
        super().__init__()
        self.config = config
        self.input_gain = float(1.0 / math.sqrt(config.log_floor_mw))
        self.floor_db = float(10.0 * math.log10(config.log_floor_mw))
        n_fft = config.n_fft
        w = _window(config) * math.sqrt(_power_scale(config))
        theta = 2.0 * np.pi * np.outer(np.arange(n_fft), np.arange(n_fft)) / n_fft
        cos, sin = w * np.cos(theta), w * np.sin(theta)
        # X_k = sum_n w (I + jQ)(cos - j sin):  Re = I*cos + Q*sin,  Im = Q*cos - I*sin
        weight = np.empty((2 * n_fft, 2, n_fft))
        weight[:n_fft, 0], weight[:n_fft, 1] = cos, sin
        weight[n_fft:, 0], weight[n_fft:, 1] = -sin, cos
        self.register_buffer("stft_weight", torch.from_numpy(weight.astype(np.float32)))
        self.register_buffer("mel", torch.from_numpy(mel_filterbank_two_sided(config).astype(np.float32)))
        self.register_buffer("dct", torch.from_numpy(dct_matrix(config).astype(np.float32)))

    def forward(self, iq: torch.Tensor) -> TorchFeatures:
        """``iq``: ``(B, 2, T)`` float32 (I, Q channels) -> :class:`TorchFeatures`.

        Unlike the numpy path, non-finite input is not checked here (a data-dependent check cannot be
        exported); validate IQ where it is loaded.
        """
        if iq.dim() != 3 or iq.shape[1] != 2:
            raise ValueError(f"iq must have shape (B, 2, T) with I and Q channels, got {tuple(iq.shape)}")
        cfg = self.config
        n_fft = cfg.n_fft
        n_frames = cfg.n_frames(int(iq.shape[-1]))
        # Work in units of log_floor_mw: x -> x/sqrt(floor) makes the floor exactly 1.0 (see class docstring).
        x = iq * self.input_gain
        spec = nn.functional.conv1d(x, self.stft_weight, stride=cfg.hop_length)  # (B, 2*n_fft, F)
        power = spec[:, :n_fft] ** 2 + spec[:, n_fft:] ** 2  # (B, n_fft, F), bin power / floor
        log_mel = 10.0 * torch.log10(torch.matmul(self.mel, power) + 1.0) + self.floor_db
        mfcc = torch.matmul(self.dct, log_mel)

        mean_power = (x * x).sum(dim=1).mean(dim=-1)  # (B,)
        groups = power.mean(dim=-1).reshape(-1, cfg.n_noise_groups, cfg.noise_group_bins)
        lowest = torch.topk(groups.mean(dim=-1), cfg.noise_rank + 1, dim=-1, largest=False, sorted=True)
        noise = lowest.values[:, cfg.noise_rank] * (n_fft / noise_floor_correction(cfg, n_frames))
        power_dbm = 10.0 * torch.log10(mean_power + 1.0) + self.floor_db
        noise_dbm = 10.0 * torch.log10(noise + 1.0) + self.floor_db
        ratio = (mean_power + 1.0) / (noise + 1.0) - 1.0
        snr = 10.0 * torch.log10(torch.clamp(ratio, min=_SNR_RATIO_FLOOR))
        snr = torch.clamp(snr, _SNR_MIN_DB, _SNR_MAX_DB)
        heard_w = torch.clamp((snr - cfg.heard_snr_db) / HEARD_RAMP_DB + 0.5, 0.0, 1.0)
        scalars = torch.stack([power_dbm, noise_dbm, snr, heard_w], dim=-1)
        return TorchFeatures(log_mel, mfcc, scalars)
