"""Property tests of the localisation loss: finite value and finite gradients for any finite network output.

"Any" is bounded only by what the output dtype can represent of the answer: in float32, positions,
factor entries and label uncertainties up to 1e15 m (the Earth is 4e7 m around) keep the Mahalanobis
term (≈ distance²/floor) inside float32; float64 is tested up to 1e100 m.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heimdall.loss import covariance_from_tril, gaussian_nll_2d
from heimdall.model import LocalizationNet

PROPS = settings(max_examples=200, deadline=None)
BOUND = {torch.float32: 1e15, torch.float64: 1e100}


@st.composite
def _case(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    bound = BOUND[dtype]
    # Uniform draws rarely leave ±1: mix in log-uniform magnitudes over every decade up to the bound.
    decade = st.builds(
        lambda s, m, e: s * m * 10.0**e,
        st.sampled_from([-1.0, 1.0]),
        st.floats(0.0, 1.0),
        st.integers(-40, int(math.log10(bound))),
    )
    value = st.one_of(st.floats(-bound, bound), decade, st.sampled_from([0.0, -0.0]))
    n = draw(st.integers(1, 4))

    def arr(*shape: int):
        return torch.tensor(draw(hnp.arrays("float64", shape, elements=value)), dtype=dtype)

    sigma = arr(n).abs() if draw(st.booleans()) else None
    floor = draw(st.sampled_from([1.0, 1e-3, 1e4]))
    return arr(n, 2), arr(n, 2, 2), arr(n, 2), sigma, floor


@PROPS
@given(_case())
def test_loss_and_gradients_are_finite_for_any_finite_output(case) -> None:
    mean, tril, target, sigma, floor = case
    mean.requires_grad_(True)
    tril.requires_grad_(True)
    nll = gaussian_nll_2d(mean, tril, target, sigma, variance_floor=floor)
    assert nll.shape == mean.shape[:-1] and nll.dtype == mean.dtype
    assert torch.isfinite(nll).all(), nll
    nll.sum().backward()
    exact = [None if t is None else t.tolist() for t in (mean, tril, target, sigma)]
    assert torch.isfinite(mean.grad).all() and torch.isfinite(tril.grad).all(), exact
    # the NLL is bounded below by the floor's log-determinant: never -inf, never below log(2π) + log(floor)
    assert (nll >= math.log(2 * math.pi) + math.log(floor) - 1e-3).all()


@settings(max_examples=50, deadline=None)
@given(_case())
def test_covariance_is_symmetric_positive_semidefinite(case) -> None:
    _, tril, *_ = case
    tril = tril.to(torch.float64).clamp(-1e100, 1e100) / 1e100 * 1e3  # keep L Lᵀ representable
    cov = covariance_from_tril(tril)
    assert torch.equal(cov, cov.mT)
    assert (torch.linalg.eigvalsh(cov) >= -1e-9 * cov.abs().amax(dim=(-1, -2)).clamp(min=1.0)[:, None]).all()


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(-1e3, 1e3),
    st.integers(1, 3),
)
def test_network_outputs_give_finite_loss_and_gradients(seed: int, scale: float, batch: int) -> None:
    """End to end: any finite features through an untrained network → finite loss and parameter gradients."""
    torch.manual_seed(seed)
    net = LocalizationNet(
        4, torch.randn(4, 2) * 50, n_scalars=4, use_spectrogram=False, embed_dim=16, id_embed_dim=4, n_heads=2
    )
    scalars = torch.randn(batch, 4, 4) * scale
    mask = torch.rand(batch, 4) > 0.3
    position, scale_tril = net(torch.zeros(batch, 4, 0, 0), scalars, mask, torch.full((batch,), 145.5e6))
    nll = gaussian_nll_2d(position, scale_tril, torch.randn(batch, 2) * 1e5, torch.rand(batch) * 100)
    assert torch.isfinite(nll).all()
    nll.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
