"""The torch fast path: the same numbers as the numpy path from real-valued ops only (exportable to ONNX).

Imported lazily by :mod:`heimdall.features`, so numpy-only users (the simulator) never load torch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from heimdall.detection import HEARD_RAMP_DB
from heimdall.features.config import (
    _SNR_MAX_DB,
    _SNR_MIN_DB,
    _SNR_RATIO_FLOOR,
    FeatureConfig,
    _power_scale,
    _window,
    dct_matrix,
    mel_filterbank_two_sided,
    noise_floor_correction,
)


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
