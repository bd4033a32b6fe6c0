"""The network and the radio map as one model: a validation-weighted mixture of their two Gaussians.

Position ``w·p_map + (1−w)·p_net`` and the mixture's covariance ``w·Σ_map + (1−w)·Σ_net +
w(1−w)·ΔΔᵀ`` (Δ = p_map − p_net: when the two disagree the ellipse grows). ``w`` is fitted on
validation (:mod:`heimdall.training.champion`); ``w = 0`` or ``1`` is simply one member, which is
shipped alone instead. Same signature and attributes as either member, so the inference graph,
ONNX export and calibration treat it like any network.
"""

from __future__ import annotations

from torch import Tensor, nn

from heimdall.loss import covariance_from_tril
from heimdall.radiomap.localizer import RadioMapLocalizer, cholesky_2x2

__all__ = ["FusedLocalizer"]

_FLOOR_M2 = 1.0


class FusedLocalizer(nn.Module):
    def __init__(self, net: nn.Module, radio_map: RadioMapLocalizer, weight: float) -> None:
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ValueError(f"fusion weight must be strictly between 0 and 1, got {weight}")
        self.net = net
        self.radio_map = radio_map
        self.weight = float(weight)
        self.n_receivers = radio_map.n_receivers
        self.n_scalars = int(getattr(net, "n_scalars", radio_map.n_scalars))
        self.n_bands = int(getattr(net, "n_bands", 0))
        self.use_spectrogram = bool(getattr(net, "use_spectrogram", False))
        self.use_frequency = bool(getattr(net, "use_frequency", False) or radio_map.use_frequency)
        fill = getattr(net, "frequency_fill_hz", None) if getattr(net, "use_frequency", False) else None
        self.frequency_fill_hz = float(fill) if fill is not None else radio_map.frequency_fill_hz
        self.max_batch = radio_map.max_batch  # the radio map's memory bounds the pair's batch

    def forward(
        self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor]:
        position, tril, _ = self.localize(spectrogram, scalars, mask, frequency_hz)
        return position, tril

    def localize(
        self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` plus the radio map's trust in each receiver (B, R)."""
        p_net, l_net = self.net(spectrogram, scalars, mask, frequency_hz)
        p_map, l_map, trust = self.radio_map.localize(spectrogram, scalars, mask, frequency_hz)
        w = self.weight
        pos = w * p_map + (1.0 - w) * p_net
        c = w * covariance_from_tril(l_map) + (1.0 - w) * covariance_from_tril(l_net)
        d = p_map - p_net
        k = w * (1.0 - w)
        tril = cholesky_2x2(
            c[:, 0, 0] + k * d[:, 0] ** 2,
            c[:, 0, 1] + k * d[:, 0] * d[:, 1],
            c[:, 1, 1] + k * d[:, 1] ** 2,
            _FLOOR_M2,
        )
        return pos, tril, trust
