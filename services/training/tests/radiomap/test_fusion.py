"""The network and the radio map as one model: the mixture's moments, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import RECEIVERS, draw
from torch import Tensor, nn

from heimdall.data.normalization import NormStats
from heimdall.loss import covariance_from_tril
from heimdall.radiomap.fit import FieldSettings, fit_radio_map
from heimdall.radiomap.fusion import FusedLocalizer
from heimdall.radiomap.localizer import RadioMapLocalizer
from heimdall.radiomap.observations import observe


class _Constant(nn.Module):
    """A 'network' that always answers (1 km, −2 km) with σ = 3 km: what the fusion mixes in."""

    n_scalars, n_bands, use_spectrogram, use_frequency = 4, 0, False, False

    def forward(self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor):
        b = scalars.shape[0]
        pos = torch.tensor([[1000.0, -2000.0]]).expand(b, -1)
        return pos, torch.eye(2).expand(b, -1, -1) * 3000.0


@pytest.fixture(scope="module")
def parts():
    w = draw(1500, seed=9)
    stats = NormStats.fit(np.zeros((*w.mask.shape, 0, 0), np.float32), w.scalars, w.mask)
    m = fit_radio_map(observe(w.scalars, w.mask, RECEIVERS), w.truth, w.frequency, FieldSettings(3000.0))
    loc = RadioMapLocalizer(m, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    _, sc = stats.apply(np.zeros((20, w.mask.shape[1], 0, 0), np.float32), w.scalars[:20], w.mask[:20])
    args = (
        torch.zeros(1),
        torch.from_numpy(sc),
        torch.from_numpy(w.mask[:20]),
        torch.from_numpy(w.frequency[:20]),
    )
    return loc, args


@pytest.mark.parametrize("weight", [0.25, 0.75])
def test_fusion_is_the_two_gaussians_mixture(parts, weight: float) -> None:
    loc, args = parts
    fused = FusedLocalizer(_Constant(), loc, weight).eval()
    with torch.no_grad():
        pos, tril = fused(*args)
        p_map, l_map = loc(*args)
        p_net, l_net = _Constant()(*args)
    torch.testing.assert_close(pos, weight * p_map + (1 - weight) * p_net)
    d = (p_map - p_net).unsqueeze(-1)
    want = (
        weight * covariance_from_tril(l_map)
        + (1 - weight) * covariance_from_tril(l_net)
        + weight * (1 - weight) * d @ d.transpose(-1, -2)
    )
    torch.testing.assert_close(covariance_from_tril(tril), want, rtol=1e-4, atol=1.0)


def test_fusion_reports_the_maps_trust(parts) -> None:
    loc, args = parts
    with torch.no_grad():
        _, _, trust = FusedLocalizer(_Constant(), loc, 0.5).localize(*args)
        _, _, alone = loc.localize(*args)
    torch.testing.assert_close(trust, alone)


@pytest.mark.parametrize("weight", [0.0, 1.0, -0.1, 1.5])
def test_a_weight_that_is_one_member_is_refused(parts, weight: float) -> None:
    loc, _ = parts
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        FusedLocalizer(_Constant(), loc, weight)
