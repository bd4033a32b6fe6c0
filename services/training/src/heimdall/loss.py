"""Loss functions for probabilistic transmitter localisation.

The network predicts a 2-D Gaussian over the transmitter position (east/north, metres) through a
mean and a lower-triangular Cholesky factor ``L`` of its covariance. Training minimises the exact
negative log-likelihood of the ground-truth position, where the truth's own uncertainty (e.g. a
source's ``error_margin_meters``) is added to the predicted covariance so that imprecise labels are
not over-fitted.

Numerical design (the loss must stay finite for any output of an untrained network):

* the 2x2 covariance is never formed explicitly; its Cholesky factor is computed in closed form
  with :func:`torch.hypot`, which neither overflows for huge scales (1e20 m) nor suffers the
  cancellation of the textbook ``sqrt(s22 - l21**2)`` (see :func:`_cholesky_2x2_plus_diag`);
* an isotropic variance floor (default 1 m², i.e. 1 m standard deviation — far below any achievable
  RF localisation accuracy, so it does not bias the fit) bounds the log-determinant from below and
  keeps the Mahalanobis term and all gradients finite when the predicted scale collapses to zero;
* the Mahalanobis distance uses forward substitution on the factor, never an inverse;
* the result has the inputs' dtype (half precision promoted to float32), but it is computed in
  float64 (except on MPS, which has none): in float32 the chain rule's intermediates (e.g.
  ``∂NLL/∂m22 · b``, about distance² · scale) overflow long before the gradient itself does — a
  property test found distances of 1e11 m with 1e11 m scales giving an infinite gradient — and
  the residual ``target - mean`` then carries no float32 rounding either.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DEFAULT_VARIANCE_FLOOR_M2", "covariance_from_tril", "gaussian_nll_2d"]

#: Default isotropic variance floor in m² (1 m standard deviation) added to every covariance.
DEFAULT_VARIANCE_FLOOR_M2: float = 1.0

_LOG_2PI: float = math.log(2.0 * math.pi)


def covariance_from_tril(scale_tril: Tensor) -> Tensor:
    """Return ``Σ = L Lᵀ`` for lower-triangular factors of shape (..., 2, 2).

    Entries above the diagonal are ignored (as in :func:`gaussian_nll_2d`) so that both functions
    agree on the same input.
    """
    lower = torch.tril(scale_tril)
    return lower @ lower.mT


def _cholesky_2x2_plus_diag(scale_tril: Tensor, extra_var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form Cholesky factor ``M`` of ``Σ = L Lᵀ + v I`` with ``v = extra_var ≥ 0``.

    With ``L = [[a, 0], [b, c]]``: ``Σ = [[a² + v, a b], [a b, b² + c² + v]]`` and

    * ``m11 = sqrt(a² + v)``
    * ``m21 = a b / m11``
    * ``m22² = s22 - m21² = c² + v + b² v / (a² + v)``  (cancellation-free rewrite, always ≥ v).

    Every square root of a sum of squares is a :func:`torch.hypot`, so nothing is squared
    explicitly: no overflow for huge scales, no underflow-to-zero for tiny ones.
    Returns ``(m11, m21, m22)``, each of shape (...,).
    """
    a = scale_tril[..., 0, 0]
    b = scale_tril[..., 1, 0]
    c = scale_tril[..., 1, 1]
    sqrt_v = torch.sqrt(extra_var)
    m11 = torch.hypot(a, sqrt_v)
    m21 = b * (a / m11)
    m22 = torch.hypot(torch.hypot(c, sqrt_v), b * (sqrt_v / m11))
    return m11, m21, m22


def gaussian_nll_2d(
    mean: Tensor,
    scale_tril: Tensor,
    target: Tensor,
    target_sigma: Tensor | float | None = None,
    variance_floor: float = DEFAULT_VARIANCE_FLOOR_M2,
) -> Tensor:
    """Per-sample negative log-likelihood of ``target`` under ``N(mean, L Lᵀ + (σ_t² + floor) I)``.

    Includes the ``log(2π)`` constant, so it equals ``-scipy.stats.multivariate_normal.logpdf``
    with the same covariance.

    Args:
        mean: predicted position, shape (..., 2), metres.
        scale_tril: predicted Cholesky factor, shape (..., 2, 2), metres; only the lower triangle is
            used and the diagonal's sign is irrelevant (``L Lᵀ`` is what matters).
        target: ground-truth position, shape (..., 2), metres.
        target_sigma: isotropic standard deviation of the ground truth in metres, shape (...,) or a
            scalar; ``None`` means an exact label. It widens the likelihood so that a label known to
            ±500 m does not push the prediction to a 1 m ellipse.
        variance_floor: isotropic variance (m²) always added to the covariance; must be ≥ 0. The
            default 1 m² keeps loss and gradients finite for degenerate predicted factors; 0
            disables that protection.

    Returns:
        Tensor of shape (...,) with the NLL of each sample (reduce it yourself).
    """
    if mean.shape[-1] != 2 or target.shape[-1] != 2 or scale_tril.shape[-2:] != (2, 2):
        raise ValueError(
            f"expected mean/target (..., 2) and scale_tril (..., 2, 2); got {tuple(mean.shape)}, "
            f"{tuple(target.shape)}, {tuple(scale_tril.shape)}"
        )
    if variance_floor < 0:
        raise ValueError(f"variance_floor must be >= 0, got {variance_floor}")

    out_dtype = torch.promote_types(torch.promote_types(mean.dtype, scale_tril.dtype), torch.float32)
    dtype = out_dtype if mean.device.type == "mps" else torch.float64
    mean = mean.to(dtype)
    target = target.to(dtype)
    scale_tril = scale_tril.to(dtype)

    batch_shape = torch.broadcast_shapes(mean.shape[:-1], target.shape[:-1], scale_tril.shape[:-2])
    extra_var = torch.full(batch_shape, float(variance_floor), dtype=dtype, device=mean.device)
    if target_sigma is not None:
        sigma = torch.as_tensor(target_sigma, dtype=dtype, device=mean.device)
        extra_var = extra_var + sigma * sigma

    m11, m21, m22 = _cholesky_2x2_plus_diag(scale_tril, extra_var)

    # Residual: the only place where absolute magnitudes (≈1e5 m) meet.
    diff = target - mean
    z1 = diff[..., 0] / m11
    z2 = (diff[..., 1] - m21 * z1) / m22
    mahalanobis_sq = z1 * z1 + z2 * z2
    log_det = 2.0 * (torch.log(m11) + torch.log(m22))
    return (0.5 * (mahalanobis_sq + log_det) + _LOG_2PI).to(out_dtype)
