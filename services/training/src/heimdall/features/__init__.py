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

from typing import TYPE_CHECKING, Any

from heimdall.features.config import (
    FEATURE_VERSION,
    MAX_IQ_COMPONENT,
    SCALAR_NAMES,
    FeatureConfig,
    band_center_frequencies,
    dct_matrix,
    mel_filterbank_two_sided,
    noise_floor_correction,
    slaney_mel_filterbank,
)
from heimdall.features.numpy_path import (
    ReceiverScalars,
    compute_mfcc,
    extract_features_batch,
    heard_scalar,
    iq_complex_to_real,
    iq_to_mel_spectrogram,
    iq_to_mel_spectrogram_batch,
    power_spectrogram,
    receiver_scalars,
    receiver_scalars_batch,
)

if TYPE_CHECKING:
    from heimdall.features.torch_path import TorchFeatureExtractor, TorchFeatures

__all__ = [
    "FEATURE_VERSION",
    "MAX_IQ_COMPONENT",
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

_LAZY = {"TorchFeatureExtractor", "TorchFeatures"}


def __getattr__(name: str) -> Any:
    """The torch path on first use: importing the package must not load torch."""
    if name in _LAZY:
        from heimdall.features import torch_path

        return getattr(torch_path, name)
    raise AttributeError(f"module 'heimdall.features' has no attribute {name!r}")
