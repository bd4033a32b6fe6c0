"""The radio-map posterior as a torch module with the network's signature (exports to ONNX as is).

For each grid cell x the log-likelihood of a session, with the transmit power P marginalised
analytically under its Gaussian prior N(m_b, τ_b²):

* heard receivers (weights w_r): Gaussian in dB around ``P + μ_br(x)`` (μ: the fitted path loss plus
  the receiver's residual field at x), so P̂(x) is a precision-weighted mean and the heard term is
  the residual sum of squares around it (exactly the marginal, up to a constant in x);
* receivers that heard nothing: log Φ((t_r − P̂(x) − μ_br(x)) / √(σ_br² + var P̂)): the signal stayed
  below its threshold t_r (the censored reading that tells where the transmitter is *not*).

The posterior over cells (uniform prior on the training area) gives the position (its mean) and the
covariance (its spread plus each cell's own, cell²/12). ``forward(spectrogram, scalars, mask,
frequency_hz)`` takes *standardised* scalars, as :class:`~heimdall.inference.graph.InferenceGraph`
feeds every model, and undoes the standardisation with the training statistics it stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from heimdall.radiomap.fit import BLOCK, RadioMap
from heimdall.radiomap.observations import observe_torch

__all__ = ["RadioMapLocalizer", "cholesky_2x2", "log_ndtr"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_ASYMPTOTIC_Z = -4.0
#: Gauss-Hermite nodes for the transmit power in the censored term (enough: its integrand is smooth)
QUADRATURE_NODES = 6
#: blocks scored cell by cell after screening (the posterior's mass sits in a few dozen)
TOP_BLOCKS = 128
_NEG = -1e30
#: leaving one receiver out must raise the best log-likelihood by this much to distrust it (≈ 5σ)
OUTLIER_NATS = 12.5
MIN_FOR_OUTLIER = 4


@dataclass(frozen=True)
class _Terms:
    """What one batch's observations contribute at any cell (all (B, R) or (B,), see _loglik)."""

    signal: Tensor
    threshold: Tensor
    heard: Tensor
    censored: Tensor
    rx: Tensor
    onehot: Tensor
    offset: Tensor
    exponent: Tensor
    sigma: Tensor
    prec: Tensor
    p_mean: Tensor
    prior_prec: Tensor
    total: Tensor  # below: the asymptotic series (float32 erf loses log Φ there)


def log_ndtr(z: Tensor) -> Tensor:
    """log Φ(z) from Erf and an asymptotic series (ONNX has Erf but no log-ndtr); abs error < 1e-3."""
    zc = torch.clamp(z, min=_ASYMPTOTIC_Z)
    direct = torch.log(torch.clamp(0.5 * (1.0 + torch.erf(zc / math.sqrt(2.0))), min=1e-30))
    za = torch.clamp(z, max=_ASYMPTOTIC_Z)
    inv2 = 1.0 / (za * za)
    series = -0.5 * za * za - _LOG_SQRT_2PI - torch.log(-za) + torch.log(1.0 - inv2 + 3.0 * inv2 * inv2)
    return torch.where(z >= _ASYMPTOTIC_Z, direct, series)


def _f32(x: np.ndarray | float) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


class RadioMapLocalizer(nn.Module):
    """Grid posterior of a :class:`~heimdall.radiomap.fit.RadioMap`: position (B, 2), Cholesky L (B, 2, 2)."""

    #: sessions per forward pass for whole arrays (``predict_arrays``, ONNX parity): the censored terms
    #: hold B × R × TOP_BLOCKS·BLOCK² × 6 values, ~25 MB per tensor at 64 sessions (1.4 GB of them at 512)
    max_batch = 64

    cells: Tensor
    field: Tensor
    offset: Tensor
    exponent: Tensor
    sigma: Tensor
    power_mean: Tensor
    power_std: Tensor
    gh_nodes: Tensor
    block_cells: Tensor
    block_field: Tensor
    block_members: Tensor
    gh_log_weights: Tensor
    log_band_centres: Tensor
    receivers: Tensor
    scalar_mean: Tensor
    scalar_std: Tensor

    def __init__(
        self,
        radio_map: RadioMap,
        receivers_enu_m: np.ndarray,
        scalar_mean: np.ndarray,
        scalar_std: np.ndarray,
        n_bands: int = 0,
        robust: bool = True,
        frequency_fill_hz: float | None = None,
    ) -> None:
        super().__init__()
        m = radio_map
        self.radio_map = m
        self.n_receivers = int(receivers_enu_m.shape[0])
        self.n_scalars = int(np.shape(scalar_mean)[0])
        self.n_bands = n_bands
        self.use_spectrogram = False
        self.robust = bool(robust)
        # an unknown carrier is `frequency_fill_hz` (the network's rule: the training median), else band 0
        self.use_frequency = bool(np.isfinite(m.band_centres_hz).all() and m.band_centres_hz.size > 1)
        fill = frequency_fill_hz if frequency_fill_hz is not None else m.band_centres_hz[0]
        self.frequency_fill_hz = float(fill) if self.use_frequency else float("nan")
        self.has_snr = bool(m.has_snr)
        self.min_distance_m = float(m.min_distance_m)
        self.cell_var = float(m.grid.cell**2 / 12.0)
        self.register_buffer("cells", _f32(m.grid.centres()))  # (G, 2)
        self.register_buffer("field", _f32(m.field_db))  # (K, R, G)
        self.register_buffer("offset", _f32(m.offset_db))  # (K, R)
        self.register_buffer("exponent", _f32(m.exponent))  # (K,)
        self.register_buffer("sigma", _f32(m.sigma_db))  # (K, R)
        self.register_buffer("power_mean", _f32(m.power_mean_db))
        self.register_buffer("power_std", _f32(m.power_std_db))
        centres = m.band_centres_hz if np.isfinite(m.band_centres_hz).all() else np.ones(1)
        self.register_buffer("log_band_centres", _f32(np.log(centres)))
        self.register_buffer("receivers", _f32(receivers_enu_m))
        self.register_buffer("scalar_mean", _f32(scalar_mean))
        self.register_buffer("scalar_std", _f32(scalar_std))
        block_cells, members = m.grid.blocks()
        self.register_buffer("block_cells", _f32(block_cells))
        self.register_buffer("block_field", _f32(m.field_db[:, :, members].mean(axis=-1)))
        self.register_buffer("block_members", torch.as_tensor(members, dtype=torch.int64))
        self.top_blocks = int(min(TOP_BLOCKS, block_cells.shape[0]))
        self.log_block_area = float(math.log(BLOCK * BLOCK))
        self.block_var = float((BLOCK * m.grid.cell) ** 2 / 12.0)
        nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)  # ∫ φ(u) g(u) du
        self.register_buffer("gh_nodes", _f32(nodes))
        self.register_buffer("gh_log_weights", _f32(np.log(weights / weights.sum())))

    def _band(self, frequency_hz: Tensor) -> Tensor:
        """(B, K) one-hot of each session's nearest band (an unknown carrier counts as the fill carrier)."""
        k = self.log_band_centres.shape[0]
        if k == 1:
            return torch.ones(frequency_hz.shape[0], 1, dtype=self.field.dtype)
        known = torch.isfinite(frequency_hz) & (frequency_hz > 0)
        fill = torch.full_like(frequency_hz, self.frequency_fill_hz)
        logf = torch.log(torch.where(known, frequency_hz, fill))
        dist = torch.abs(logf[:, None] - self.log_band_centres[None, :])
        return nn.functional.one_hot(torch.argmin(dist, dim=1), k).to(self.field.dtype)

    def _terms(self, scalars: Tensor, mask: Tensor, frequency_hz: Tensor) -> _Terms:
        present = mask > 0.5 if mask.is_floating_point() else mask.to(torch.bool)
        raw = scalars.to(self.field.dtype) * self.scalar_std + self.scalar_mean
        signal, threshold, heard, censored, rx = observe_torch(raw, present, self.receivers, self.has_snr)
        onehot = self._band(frequency_hz.to(self.field.dtype))  # (B, K)
        sigma = onehot @ self.sigma  # (B, R)
        p_mean, p_std = onehot @ self.power_mean, onehot @ self.power_std  # (B,)
        prior_prec = 1.0 / (p_std * p_std)
        prec = heard / (sigma * sigma)
        return _Terms(
            signal=signal,
            threshold=threshold,
            heard=heard,
            censored=censored,
            rx=rx,
            onehot=onehot,
            offset=onehot @ self.offset,
            exponent=onehot @ self.exponent,
            sigma=sigma,
            prec=prec,
            p_mean=p_mean,
            prior_prec=prior_prec,
            total=prec.sum(dim=1) + prior_prec,
        )

    @staticmethod
    def _trusting(t: _Terms, trust: Tensor) -> _Terms:
        """The terms with each receiver's readings weighted by `trust` (B, R) in [0, 1]."""
        prec = t.heard * trust / (t.sigma * t.sigma)
        return replace(
            t,
            heard=t.heard * trust,
            censored=t.censored * trust,
            prec=prec,
            total=prec.sum(dim=1) + t.prior_prec,
        )

    def receiver_trust(self, t: _Terms, coarse_field: Tensor) -> Tensor:
        """(B, R): 0 for the one receiver whose reading no position explains, 1 for every other.

        Each present receiver is left out in turn on the coarse grid; if leaving one out raises the
        best log-likelihood by more than :data:`OUTLIER_NATS` (a reading ≳ 5σ off at every position),
        it is down-weighted. Only sessions with at least :data:`MIN_FOR_OUTLIER` present receivers are
        checked (with three, two always agree with some position). Leaving one out is cheap: the
        heard part's sufficient statistics lose one term each, the censored part one factor each (at
        the full P̂: an approximation that only decides whom to distrust, never the posterior).
        """
        r = t.heard.shape[1]
        present = (t.heard + t.censored) > 0
        mu, _ = self._mean(t, self.block_cells, coarse_field)
        y = t.signal[:, :, None] - mu  # (B, R, M)
        w = t.prec[:, :, None]
        s1 = (w * y).sum(dim=1) + (t.prior_prec * t.p_mean)[:, None]  # (B, M)
        s2 = (w * y * y).sum(dim=1) + (t.prior_prec * t.p_mean * t.p_mean)[:, None]
        dev = s2 - s1 * s1 / t.total[:, None]
        s1r, s2r = s1[:, None, :] - w * y, s2[:, None, :] - w * y * y
        dev_r = s2r - s1r * s1r / (t.total[:, None, None] - w)  # (B, R, M)
        parts = self._censored_parts(t, mu, s1 / t.total[:, None])  # (B, R, M, Q)
        total = parts.sum(dim=1)  # (B, M, Q)
        cens = torch.logsumexp(total + self.gh_log_weights, dim=-1)
        cens_r = torch.logsumexp(total[:, None] - parts + self.gh_log_weights, dim=-1)  # (B, R, M)
        best = (-0.5 * dev + cens).amax(dim=1)  # (B,)
        loo = (-0.5 * dev_r + cens_r).amax(dim=2)  # (B, R)
        gain = torch.where(present, loo - best[:, None], torch.zeros_like(t.heard))
        worst = torch.argmax(gain, dim=1)
        enough = present.sum(dim=1) >= MIN_FOR_OUTLIER
        flagged = (gain.amax(dim=1) > OUTLIER_NATS) & enough
        hit = nn.functional.one_hot(worst, r).to(t.heard.dtype) * flagged[:, None].to(t.heard.dtype)
        return 1.0 - hit

    def _mean(self, t: _Terms, cells: Tensor, field: Tensor) -> tuple[Tensor, Tensor]:
        """Mean signal μ (B, R, M) at `cells` ((M, 2) or (B, M, 2)) and the residual signal − μ."""
        pts = cells if cells.dim() == 3 else cells.unsqueeze(0)
        dist = torch.linalg.vector_norm(pts[:, None, :, :] - t.rx[:, :, None, :], dim=-1)
        logd = torch.log10(torch.clamp(dist, min=self.min_distance_m))  # (B, R, M)
        mu = t.offset[:, :, None] - 10.0 * t.exponent[:, None, None] * logd + field
        return mu, t.signal[:, :, None] - mu

    def _censored_parts(self, t: _Terms, mu: Tensor, p_hat: Tensor) -> Tensor:
        """log Φ of each censored receiver at each Gauss-Hermite node of P ~ N(P̂, 1/total): (B, R, M, Q)."""
        margin = (t.threshold[:, :, None] - mu - p_hat[:, None, :]) / t.sigma[:, :, None]
        p_sd = (1.0 / torch.sqrt(t.total))[:, None, None, None] / t.sigma[:, :, None, None]
        return t.censored[:, :, None, None] * log_ndtr(margin[..., None] - p_sd * self.gh_nodes)

    def _loglik(self, t: _Terms, cells: Tensor, field: Tensor) -> Tensor:
        """Log-likelihood (B, M) at `cells` ((M, 2) or (B, M, 2)) with the session's field (B, R, M)."""
        mu, resid = self._mean(t, cells, field)
        w = t.prec[:, :, None]
        p_hat = ((w * resid).sum(dim=1) + (t.prior_prec * t.p_mean)[:, None]) / t.total[:, None]
        dev = (w * (resid - p_hat[:, None, :]) ** 2).sum(dim=1)
        dev = dev + t.prior_prec[:, None] * (p_hat - t.p_mean[:, None]) ** 2
        # censored receivers: E over P ~ N(P̂(x), 1/total) of Π Φ(·), by Gauss-Hermite quadrature
        cens = self._censored_parts(t, mu, p_hat).sum(dim=1)  # (B, M, Q)
        return -0.5 * dev + torch.logsumexp(cens + self.gh_log_weights, dim=-1)

    def log_posterior(self, scalars: Tensor, mask: Tensor, frequency_hz: Tensor) -> Tensor:
        """Unnormalised log posterior (B, G) over every fine cell (for maps; the forward pass screens)."""
        t = self._terms(scalars, mask, frequency_hz)
        return self._loglik(t, self.cells, torch.einsum("bk,krg->brg", t.onehot, self.field))

    def forward(
        self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Position (B, 2) m and the Cholesky factor (B, 2, 2) of the posterior covariance.

        Coarse-to-fine: every block of BLOCK × BLOCK cells is scored once (block-mean field); the
        `top` best blocks are scored cell by cell and replace their block in the posterior. The
        other blocks keep their coarse mass (their area is BLOCK² cells), so far-off modes still count.
        """
        position, tril, _ = self.localize(spectrogram, scalars, mask, frequency_hz)
        return position, tril

    def localize(
        self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` plus each receiver's trust (B, R): 0 where its reading was set aside."""
        t = self._terms(scalars, mask, frequency_hz)
        coarse_field = torch.einsum("bk,krg->brg", t.onehot, self.block_field)
        trust = torch.ones_like(t.heard)
        if self.robust:
            trust = self.receiver_trust(t, coarse_field)
            t = self._trusting(t, trust)
        coarse = self._loglik(t, self.block_cells, coarse_field)
        top = torch.topk(coarse, self.top_blocks, dim=1).indices  # (B, T)
        fine_idx = self.block_members[top].flatten(1)  # (B, T·BLOCK²)
        field = torch.einsum("bk,krg->brg", t.onehot, self.field)
        fine_field = torch.gather(field, 2, fine_idx[:, None, :].expand(-1, field.shape[1], -1))
        fine = self._loglik(t, self.cells[fine_idx], fine_field)  # (B, M)
        replaced = torch.zeros_like(coarse).scatter(1, top, 1.0) > 0.5
        coarse = torch.where(replaced, torch.full_like(coarse, _NEG), coarse + self.log_block_area)
        logp = torch.cat([coarse, fine], dim=1)
        w = torch.softmax(logp, dim=1)
        centres = torch.cat(
            [self.block_cells.unsqueeze(0).expand(w.shape[0], -1, -1), self.cells[fine_idx]], dim=1
        )
        within = torch.cat(
            [
                torch.full_like(coarse, self.block_var),
                torch.full_like(fine, self.cell_var),
            ],
            dim=1,
        )
        mean = (w[:, :, None] * centres).sum(dim=1)
        d = centres - mean[:, None, :]
        cxx = (w * (d[..., 0] ** 2 + within)).sum(dim=1)
        cyy = (w * (d[..., 1] ** 2 + within)).sum(dim=1)
        cxy = (w * d[..., 0] * d[..., 1]).sum(dim=1)
        return mean, cholesky_2x2(cxx, cxy, cyy, self.cell_var), trust


def cholesky_2x2(cxx: Tensor, cxy: Tensor, cyy: Tensor, floor: float) -> Tensor:
    """Lower Cholesky factor (B, 2, 2) of [[cxx, cxy], [cxy, cyy]]; `floor` bounds the second pivot."""
    l11 = torch.sqrt(torch.clamp(cxx, min=floor))
    l21 = cxy / l11
    l22 = torch.sqrt(torch.clamp(cyy - l21 * l21, min=floor))
    zero = torch.zeros_like(l11)
    return torch.stack([l11, zero, l21, l22], dim=-1).unflatten(-1, (2, 2))
