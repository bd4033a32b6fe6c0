"""Tests for heimdall.loss: exactness against scipy, gradients, numerical robustness, convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from heimdall.loss import DEFAULT_VARIANCE_FLOOR_M2, covariance_from_tril, gaussian_nll_2d


def _random_case(
    gen: torch.Generator, batch: int, scale_m: float, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random means/targets (~scale_m apart) and correlated lower-triangular factors (~scale_m)."""
    mean = torch.randn(batch, 2, generator=gen, dtype=dtype) * 10 * scale_m
    target = mean + torch.randn(batch, 2, generator=gen, dtype=dtype) * scale_m
    tril = torch.randn(batch, 2, 2, generator=gen, dtype=dtype) * scale_m
    tril = torch.tril(tril)
    sigma = torch.rand(batch, generator=gen, dtype=dtype) * scale_m
    return mean, tril, target, sigma


@pytest.mark.parametrize("scale_m", [1.0, 300.0, 2e4])
@pytest.mark.parametrize("use_sigma", [False, True])
@pytest.mark.parametrize("floor", [0.0, DEFAULT_VARIANCE_FLOOR_M2, 250.0])
def test_matches_scipy_logpdf(scale_m: float, use_sigma: bool, floor: float) -> None:
    gen = torch.Generator().manual_seed(1234)
    mean, tril, target, sigma = _random_case(gen, 16, scale_m)
    nll = gaussian_nll_2d(mean, tril, target, sigma if use_sigma else None, variance_floor=floor)
    assert nll.shape == (16,)
    assert nll.dtype == torch.float64
    for i in range(16):
        cov = (tril[i] @ tril[i].T).numpy() + floor * np.eye(2)
        if use_sigma:
            cov += float(sigma[i]) ** 2 * np.eye(2)
        expected = -multivariate_normal(mean=mean[i].numpy(), cov=cov).logpdf(target[i].numpy())
        assert float(nll[i]) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_strongly_correlated_covariance_matches_scipy() -> None:
    # |ρ| = 0.999: the textbook sqrt(s22 - l21²) form loses digits here, the hypot form must not.
    std = np.array([3000.0, 500.0])
    rho = 0.999
    cov = np.array([[std[0] ** 2, rho * std[0] * std[1]], [rho * std[0] * std[1], std[1] ** 2]])
    tril = torch.tensor(np.linalg.cholesky(cov))[None]
    mean = torch.tensor([[1000.0, -2000.0]], dtype=torch.float64)
    target = torch.tensor([[1800.0, -1850.0]], dtype=torch.float64)
    nll = gaussian_nll_2d(mean, tril, target, torch.tensor([40.0], dtype=torch.float64))
    full = cov + (40.0**2 + DEFAULT_VARIANCE_FLOOR_M2) * np.eye(2)
    expected = -multivariate_normal(mean=mean[0].numpy(), cov=full).logpdf(target[0].numpy())
    assert float(nll[0]) == pytest.approx(expected, rel=1e-5)


def test_scalar_target_sigma_and_upper_triangle_ignored() -> None:
    gen = torch.Generator().manual_seed(7)
    mean, tril, target, _ = _random_case(gen, 5, 100.0)
    junk_upper = tril.clone()
    junk_upper[:, 0, 1] = 1e6
    a = gaussian_nll_2d(mean, tril, target, 30.0)
    b = gaussian_nll_2d(mean, junk_upper, target, torch.full((5,), 30.0, dtype=torch.float64))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(covariance_from_tril(junk_upper), tril @ tril.mT)


def test_half_precision_is_promoted() -> None:
    mean = torch.zeros(2, 2, dtype=torch.bfloat16)
    tril = torch.eye(2, dtype=torch.bfloat16).expand(2, 2, 2) * 100
    nll = gaussian_nll_2d(mean, tril, mean + 50)
    assert nll.dtype == torch.float32
    assert torch.isfinite(nll).all()


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="expected mean"):
        gaussian_nll_2d(torch.zeros(3, 3), torch.zeros(3, 2, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="variance_floor"):
        gaussian_nll_2d(torch.zeros(3, 2), torch.zeros(3, 2, 2), torch.zeros(3, 2), variance_floor=-1.0)


@pytest.mark.parametrize("use_sigma", [False, True])
def test_gradcheck(use_sigma: bool) -> None:
    gen = torch.Generator().manual_seed(99)
    mean, tril, target, sigma = _random_case(gen, 4, 2.0)
    tril = tril + torch.diag_embed(torch.full((4, 2), 0.5, dtype=torch.float64))  # away from a=0 kinks
    inputs = [t.clone().requires_grad_(True) for t in (mean, tril, target, sigma)]

    def fn(m: torch.Tensor, lt: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return gaussian_nll_2d(m, lt, t, s if use_sigma else None, variance_floor=0.1)

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_degenerate_factor_is_finite() -> None:
    mean = torch.zeros(3, 2, requires_grad=True)
    tril = torch.zeros(3, 2, 2, requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [1e7, -1e7], [3.0, 4.0]])
    nll = gaussian_nll_2d(mean, tril, target)
    nll.sum().backward()
    assert torch.isfinite(nll).all()
    assert mean.grad is not None and torch.isfinite(mean.grad).all()
    assert tril.grad is not None and torch.isfinite(tril.grad).all()
    # With L = 0 only the 1 m² floor remains: NLL = |d|²/2 + log(2π).
    assert float(nll[2].detach()) == pytest.approx(12.5 + math.log(2 * math.pi), rel=1e-6)


_log_mag = st.floats(min_value=-6.0, max_value=6.0)


@settings(max_examples=50, deadline=None)
@given(
    offset_log10=st.floats(min_value=-3.0, max_value=7.0),
    base_log10=st.floats(min_value=0.0, max_value=5.0),
    a_log10=_log_mag,
    c_log10=_log_mag,
    b=st.floats(min_value=-1e6, max_value=1e6),
    sigma=st.floats(min_value=0.0, max_value=1e4),
    signs=st.tuples(st.sampled_from([-1.0, 1.0]), st.sampled_from([-1.0, 1.0])),
)
def test_extreme_inputs_give_finite_loss_and_gradients(
    offset_log10: float,
    base_log10: float,
    a_log10: float,
    c_log10: float,
    b: float,
    sigma: float,
    signs: tuple[float, float],
) -> None:
    base = 10.0**base_log10
    offset = 10.0**offset_log10
    mean = torch.tensor([[base, -base]], dtype=torch.float32, requires_grad=True)
    target = torch.tensor([[base + signs[0] * offset, -base + signs[1] * offset]], dtype=torch.float32)
    tril = torch.tensor([[[10.0**a_log10, 0.0], [b, 10.0**c_log10]]], dtype=torch.float32, requires_grad=True)
    nll = gaussian_nll_2d(mean, tril, target, torch.tensor([sigma]))
    nll.sum().backward()
    assert torch.isfinite(nll).all()
    assert mean.grad is not None and torch.isfinite(mean.grad).all()
    assert tril.grad is not None and torch.isfinite(tril.grad).all()


def test_float32_precision_at_large_coordinates() -> None:
    # Positions ~1e5 m with a 50 m ellipse: float32 must still agree with float64 closely.
    gen = torch.Generator().manual_seed(5)
    mean = torch.tensor([[98_765.4, -87_654.3]], dtype=torch.float64).repeat(8, 1)
    target = mean + torch.randn(8, 2, generator=gen, dtype=torch.float64) * 50.0
    tril = torch.tensor([[50.0, 0.0], [20.0, 40.0]], dtype=torch.float64).expand(8, 2, 2)
    ref = gaussian_nll_2d(mean, tril, target)
    f32 = gaussian_nll_2d(mean.float(), tril.float(), target.float())
    torch.testing.assert_close(f32.double(), ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("target_sigma", [None, 300.0])
def test_adam_recovers_known_covariance(target_sigma: float | None) -> None:
    """Fit a constant mean and full covariance to samples of a known correlated Gaussian.

    With a label uncertainty σ_t the samples' covariance is L Lᵀ + σ_t² I, so the fitted factor
    must explain only the remainder.
    """
    torch.manual_seed(0)
    true_mean = torch.tensor([1_500.0, -800.0], dtype=torch.float64)
    true_cov = torch.tensor([[4.0e6, 1.5e6], [1.5e6, 1.0e6]], dtype=torch.float64)  # ρ = 0.75
    n = 4000
    samples = torch.distributions.MultivariateNormal(true_mean, true_cov).sample((n,))
    extra = 0.0 if target_sigma is None else target_sigma**2
    expected_cov = true_cov - extra * torch.eye(2, dtype=torch.float64)

    # Parametrise in km (O(1) units) like the network does.
    mean_km = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    log_diag = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    off = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mean_km, log_diag, off], lr=0.05)
    sigma = None if target_sigma is None else torch.full((n,), target_sigma, dtype=torch.float64)
    for _ in range(400):
        opt.zero_grad()
        tril = torch.zeros(2, 2, dtype=torch.float64)
        tril = tril + torch.diag(torch.exp(log_diag))
        tril = tril + torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64) * off
        loss = gaussian_nll_2d(
            (mean_km * 1000).expand(n, 2), (tril * 1000).expand(n, 2, 2), samples, sigma
        ).mean()
        loss.backward()
        opt.step()

    with torch.no_grad():
        fitted = covariance_from_tril(tril * 1000)
        norm = torch.sqrt(torch.diag(expected_cov)[:, None] * torch.diag(expected_cov)[None, :])
        rel_err = ((fitted - expected_cov).abs() / norm).max()
        assert float(rel_err) < 0.10, (fitted, expected_cov)
        assert torch.allclose(mean_km * 1000, true_mean, atol=100.0)
