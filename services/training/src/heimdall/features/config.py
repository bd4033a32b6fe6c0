"""Feature configuration, its cache key, and the fixed matrices both paths share (mel filterbanks, DCT).

The conventions are stated once in :mod:`heimdall.features`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.special

from heimdall.detection import HEARD_SNR_DB

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
