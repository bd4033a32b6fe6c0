"""Set-based neural network that localises a transmitter from a variable subset of receivers.

Architecture (all receiver-level modules are shared across receivers):

1. **Spectrogram encoder** (optional): 1-D convolutions over time with the mel bands as channels,
   followed by global average + max pooling over time, plus the time-averaged input spectrum (the
   PSD, a direct shortcut for absolute band powers). Works for any number of frames.
2. **Token MLP**: spectrogram features ⊕ scalars ⊕ learned receiver-identity embedding ⊕ receiver
   position (km, divided by the position scale) → one token of ``embed_dim`` per receiver.
3. **Masked set pooling**:
   ``"attention"`` — a few pre-norm self-attention blocks (receivers compare each other's powers),
   then a learned query attends over the tokens; ``"mean"`` — DeepSets: masked mean of tokens.
   Attention is written with plain matmul/softmax (clean ONNX export); missing receivers are
   zeroed at the input *and* receive exactly zero attention weight, so their features have no
   influence at all (even NaN/inf). An all-missing row yields a finite prior that depends on
   nothing but the carrier band.
4. **Carrier band** (``use_frequency``): one per-session feature, ``log10(f / 1 MHz)`` standardised with
   constants fitted on the training carriers (:func:`band_constants`), concatenated to every receiver
   token input and to the head input, so band-dependent path loss (433.5 MHz loses ~9.5 dB more than
   145.5 MHz over the same path, 20·log10 of their ratio) can be learned per receiver. An unknown
   carrier (NaN, ≤ 0, inf) becomes the training set's median carrier (the buffer ``frequency_fill_hz``).
5. **Head**: position = ``position_scale_m`` · (anchor + offset) where the anchor is a learned
   attention-weighted centroid of the present receivers' positions (the classic weighted-centroid
   estimator as inductive bias; at initialisation it is ≈ the plain centroid), and a Cholesky factor
   ``L`` with softplus diagonal (plus a 1 m floor) and free off-diagonal, all in metres.

The network works internally in O(1) units (km / (position_scale_m / 1000)); only the outputs are
converted to metres, the units of :func:`heimdall.loss.gaussian_nll_2d`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heimdall.loss import covariance_from_tril

__all__ = ["LocalizationNet", "band_constants", "predict_arrays"]

_POOLING_MODES = ("attention", "mean")
_COVARIANCE_MODES = ("full", "diagonal")


def _masked_softmax(scores: Tensor, key_mask: Tensor) -> Tensor:
    """Softmax over the last axis where ``key_mask`` (broadcastable bool) is False → weight exactly 0.

    Masked scores are replaced by the dtype's most negative finite value (never ``-inf``) so that an
    all-masked row gives a uniform, finite softmax, whose weights are then zeroed: no NaN in the
    forward or backward pass.
    """
    neg = torch.finfo(scores.dtype).min
    scores = torch.where(key_mask, scores, torch.full_like(scores, neg))
    weights = torch.softmax(scores, dim=-1)
    return torch.where(key_mask, weights, torch.zeros_like(weights))


class _MaskedMultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention with a key padding mask.

    Hand-written (rather than ``nn.MultiheadAttention``) so that the masking semantics are exact
    (zero weight, never NaN) and the ONNX graph is plain MatMul/Softmax/Where.
    """

    def __init__(self, embed_dim: int, n_heads: int) -> None:
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = embed_dim // n_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _split(self, x: Tensor) -> Tensor:
        # (B, N, D) -> (B, H, N, Dh)
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def forward(self, query: Tensor, tokens: Tensor, key_mask: Tensor) -> Tensor:
        """``query`` (B, Q, D) attends over ``tokens`` (B, R, D); ``key_mask`` (B, R) bool → (B, Q, D)."""
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(tokens))
        v = self._split(self.v_proj(tokens))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, Q, R)
        weights = _masked_softmax(scores, key_mask[:, None, None, :])
        out = (weights @ v).transpose(1, 2).flatten(-2)  # (B, Q, D)
        return self.out_proj(out)


class _SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block over receiver tokens; lets receivers compare each other."""

    def __init__(self, embed_dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = _MaskedMultiheadAttention(embed_dim, n_heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ff = nn.Sequential(
            nn.Linear(embed_dim, 2 * embed_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * embed_dim, embed_dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, present: Tensor) -> Tensor:
        h = self.norm1(tokens)
        tokens = tokens + self.dropout(self.attn(h, h, present))
        tokens = tokens + self.dropout(self.ff(self.norm2(tokens)))
        # Missing receivers' rows are recomputed from constants; zero them again for hygiene.
        return torch.where(present.unsqueeze(-1), tokens, torch.zeros_like(tokens))


class _SpectrogramEncoder(nn.Module):
    """1-D CNN over time (mel bands as channels) → fixed-size vector for any number of frames."""

    def __init__(self, n_bands: int, channels: int) -> None:
        super().__init__()
        # Stride 2 halves the frames early: the localisation cues are band levels and their slow
        # evolution, not frame-level detail, and small CPU convolutions dominate inference time.
        self.stem = nn.Conv1d(n_bands, channels, kernel_size=3, stride=2, padding=1)
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(channels, channels, kernel_size=3, padding=1),
                nn.Conv1d(channels, channels, kernel_size=3, padding=2, dilation=2),
            ]
        )
        # average + max over time of the CNN features, plus the time-averaged input spectrum (PSD).
        self.out_dim = 2 * channels + n_bands

    def forward(self, spec: Tensor) -> Tensor:
        """``spec`` (N, C, F) → (N, out_dim)."""
        h = F.gelu(self.stem(spec))
        for conv in self.convs:
            h = h + F.gelu(conv(h))  # residual: keeps the absolute-level information of the stem
        return torch.cat([h.mean(dim=-1), h.amax(dim=-1), spec.mean(dim=-1)], dim=-1)


#: Below this spread of log10(f / 1 MHz) the training carriers are one band: the feature is not scaled up.
_MIN_BAND_STD = 1e-3


def band_constants(frequency_hz: Sequence[float] | np.ndarray | None) -> dict[str, float]:
    """The band feature's constants fitted on the training sessions' carriers (Hz; NaN = unknown).

    Returns the :class:`LocalizationNet` keyword arguments ``frequency_log_mean`` / ``frequency_log_std``
    (of ``log10(f / 1 MHz)``; std 1 when every carrier is one band) and ``frequency_fill_hz``, the
    median known carrier, which stands in for a session whose carrier is unknown. With no known carrier
    the defaults (0, 1, 1 MHz: a constant feature 0) are returned.
    """
    f = np.asarray([] if frequency_hz is None else frequency_hz, dtype=np.float64).reshape(-1)
    f = f[np.isfinite(f) & (f > 0)]
    if f.size == 0:
        return {"frequency_log_mean": 0.0, "frequency_log_std": 1.0, "frequency_fill_hz": 1e6}
    logs = np.log10(f / 1e6)
    std = float(logs.std())
    return {
        "frequency_log_mean": float(logs.mean()),
        "frequency_log_std": std if std >= _MIN_BAND_STD else 1.0,
        "frequency_fill_hz": float(np.median(f)),
    }


class LocalizationNet(nn.Module):
    """Predict transmitter position (metres, local ENU) and a 2x2 Cholesky factor from receivers.

    Args:
        n_receivers: number of receivers R of the network (fixes the identity embedding table).
        receiver_positions_km: (R, 2) receiver east/north positions in km relative to the network
            centroid (stored as a buffer, so it travels with the state dict and the ONNX graph).
        n_scalars: number S of per-receiver scalar features.
        n_bands: number C of spectrogram bands (2 * n_mels for the feature pipeline).
        use_spectrogram: False for power-only datasets; the spectrogram input is then ignored.
        embed_dim: token width.
        pooling: ``"attention"`` (self-attention + learned-query pooling) or ``"mean"`` (DeepSets).
        covariance: ``"full"`` (correlated 2x2) or ``"diagonal"`` (off-diagonal fixed to 0).
        position_scale_m: metres per internal unit; should be ≈ the network's extent.
        dropout: dropout probability in the token MLP, attention blocks and head.
        cnn_channels: width of the spectrogram CNN.
        id_embed_dim: width of the learned receiver-identity embedding.
        n_heads: attention heads (must divide ``embed_dim``).
        n_attention_layers: self-attention blocks before pooling (``pooling="attention"`` only).
        min_sigma_m: floor added to the Cholesky diagonal (metres) so Σ stays positive definite.
        use_frequency: feed the session's carrier band to the tokens and the head (False: the
            ``frequency_hz`` input is ignored and the state dict is that of a band-blind network).
        frequency_log_mean, frequency_log_std: standardisation of ``log10(f / 1 MHz)``, fitted on
            the training carriers (:func:`band_constants`); buffers.
        frequency_fill_hz: the carrier an unknown one (NaN, ≤ 0, inf) is replaced by: the training
            set's median (:func:`band_constants`); None = the carrier whose feature is 0.
    """

    band_mean: Tensor
    band_std: Tensor
    frequency_fill_hz: Tensor
    #: :func:`band_constants`, reachable from the class (its keyword arguments' fit)
    band_constants = staticmethod(band_constants)

    def __init__(
        self,
        n_receivers: int,
        receiver_positions_km: Sequence[tuple[float, float]] | Tensor,
        n_scalars: int,
        n_bands: int = 64,
        use_spectrogram: bool = True,
        embed_dim: int = 64,
        pooling: str = "attention",
        covariance: str = "full",
        position_scale_m: float = 50_000.0,
        dropout: float = 0.0,
        *,
        cnn_channels: int = 64,
        id_embed_dim: int = 16,
        n_heads: int = 4,
        n_attention_layers: int = 1,
        min_sigma_m: float = 1.0,
        use_frequency: bool = True,
        frequency_log_mean: float = 0.0,
        frequency_log_std: float = 1.0,
        frequency_fill_hz: float | None = None,
    ) -> None:
        super().__init__()
        if pooling not in _POOLING_MODES:
            raise ValueError(f"pooling must be one of {_POOLING_MODES}, got {pooling!r}")
        if covariance not in _COVARIANCE_MODES:
            raise ValueError(f"covariance must be one of {_COVARIANCE_MODES}, got {covariance!r}")
        if n_receivers < 1 or n_scalars < 0 or position_scale_m <= 0 or min_sigma_m < 0:
            raise ValueError("need n_receivers >= 1, n_scalars >= 0, position_scale_m > 0, min_sigma_m >= 0")
        finite = math.isfinite(frequency_log_mean) and math.isfinite(frequency_log_std)
        if not (finite and frequency_log_std > 0):
            raise ValueError(
                f"need a finite frequency_log_mean and frequency_log_std > 0, got "
                f"{frequency_log_mean!r}, {frequency_log_std!r}"
            )
        if frequency_fill_hz is None:
            frequency_fill_hz = 10.0 ** (6.0 + frequency_log_mean)
        if not (math.isfinite(frequency_fill_hz) and frequency_fill_hz > 0):
            raise ValueError(f"frequency_fill_hz must be a finite carrier > 0 Hz, got {frequency_fill_hz!r}")
        positions = torch.as_tensor(receiver_positions_km, dtype=torch.float32)
        if positions.shape != (n_receivers, 2):
            raise ValueError(
                f"receiver_positions_km must have shape ({n_receivers}, 2), got {tuple(positions.shape)}"
            )

        self.n_receivers = n_receivers
        self.n_scalars = n_scalars
        self.n_bands = n_bands
        self.use_spectrogram = use_spectrogram
        self.pooling = pooling
        self.covariance_mode = covariance
        self.position_scale_m = float(position_scale_m)
        self.min_sigma_m = float(min_sigma_m)
        self.use_frequency = bool(use_frequency)

        # Receiver positions in internal units (km / scale_km), O(1) for a well-chosen scale.
        self.register_buffer("receiver_positions", positions / (self.position_scale_m / 1000.0))
        n_band = 1 if self.use_frequency else 0
        if self.use_frequency:  # absent otherwise: a band-blind network keeps its old state dict
            self.register_buffer("band_mean", torch.tensor(float(frequency_log_mean)))
            self.register_buffer("band_std", torch.tensor(float(frequency_log_std)))
            self.register_buffer("frequency_fill_hz", torch.tensor(float(frequency_fill_hz)))

        self.spec_encoder = _SpectrogramEncoder(n_bands, cnn_channels) if use_spectrogram else None
        spec_dim = self.spec_encoder.out_dim if self.spec_encoder is not None else 0
        self.id_embedding = nn.Embedding(n_receivers, id_embed_dim)
        token_in = spec_dim + n_scalars + id_embed_dim + 2 + n_band
        self.token_mlp = nn.Sequential(
            nn.Linear(token_in, 2 * embed_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * embed_dim, embed_dim),
        )

        if pooling == "attention":
            self.blocks = nn.ModuleList(
                [_SelfAttentionBlock(embed_dim, n_heads, dropout) for _ in range(n_attention_layers)]
            )
            self.pool_query = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
            self.pool_attn: _MaskedMultiheadAttention | None = _MaskedMultiheadAttention(embed_dim, n_heads)
            self.pool_norm: nn.Module = nn.LayerNorm(embed_dim)
        else:
            self.blocks = nn.ModuleList()
            self.pool_attn = None
            self.pool_norm = nn.Identity()

        # Weighted-centroid anchor: one score per receiver token. Zero init → plain centroid at start.
        self.anchor_score = nn.Linear(embed_dim, 1)
        nn.init.zeros_(self.anchor_score.weight)
        nn.init.zeros_(self.anchor_score.bias)

        n_out = 5 if covariance == "full" else 4  # 2 position offsets, 2 diagonal, [1 off-diagonal]
        self.head = nn.Sequential(
            nn.Linear(embed_dim + 1 + n_band, embed_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(embed_dim, n_out),
        )
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(0.1)  # start near the centroid with a broad, isotropic ellipse
            last.bias.zero_()
            last.bias[2:4] = math.log(math.expm1(0.5))  # softplus⁻¹(0.5): σ ≈ position_scale_m / 2

    @staticmethod
    def covariance(scale_tril: Tensor) -> Tensor:
        """Covariance ``L Lᵀ`` (m²) of the predicted Cholesky factor."""
        return covariance_from_tril(scale_tril)

    def band_feature(self, frequency_hz: Tensor) -> Tensor:
        """(B,) carriers in Hz → (B, 1) standardised ``log10(f / 1 MHz)``; unknown → the training median."""
        f = frequency_hz.to(self.band_mean.dtype)
        known = torch.isfinite(f) & (f > 0)
        f = torch.where(known, f, self.frequency_fill_hz.expand_as(f))
        return ((torch.log10(f) - 6.0 - self.band_mean) / self.band_std).unsqueeze(-1)

    def forward(
        self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Localise one batch of sessions.

        Args:
            spectrogram: (B, R, C, F) standardised log-mel spectrograms; ignored (any shape) when
                ``use_spectrogram`` is False.
            scalars: (B, R, S) standardised per-receiver scalars.
            mask: (B, R) bool or float (1 = receiver present). Missing receivers' inputs may hold
                anything, including NaN.
            frequency_hz: (B,) float carrier of each session in Hz; NaN (or ≤ 0) = unknown, read as
                the training median carrier. Ignored when ``use_frequency`` is False.

        Returns:
            ``position_enu_m`` (B, 2) in metres and ``scale_tril`` (B, 2, 2) lower-triangular
            Cholesky factor of the position covariance in metres.
        """
        present = mask > 0.5 if mask.is_floating_point() else mask.to(torch.bool)  # (B, R)
        keep = present.unsqueeze(-1)
        n_batch = scalars.shape[0]
        dtype = self.receiver_positions.dtype

        feats: list[Tensor] = []
        if self.spec_encoder is not None:
            spec = spectrogram.to(dtype)
            spec = torch.where(present[:, :, None, None], spec, torch.zeros_like(spec))
            enc = self.spec_encoder(spec.flatten(0, 1)).unflatten(0, (-1, self.n_receivers))
            feats.append(enc)
        scal = scalars.to(dtype)
        feats.append(torch.where(keep, scal, torch.zeros_like(scal)))
        feats.append(self.id_embedding.weight.unsqueeze(0).expand(n_batch, -1, -1))
        feats.append(self.receiver_positions.unsqueeze(0).expand(n_batch, -1, -1))
        head_extra: list[Tensor] = []
        if self.use_frequency:
            if frequency_hz.dim() != 1:
                raise ValueError(f"frequency_hz must have shape (B,), got {tuple(frequency_hz.shape)}")
            band = self.band_feature(frequency_hz)  # (B, 1)
            feats.append(band.unsqueeze(1).expand(-1, self.n_receivers, -1))
            head_extra.append(band)

        tokens = self.token_mlp(torch.cat(feats, dim=-1))
        tokens = torch.where(keep, tokens, torch.zeros_like(tokens))  # (B, R, D)

        count = present.to(dtype).sum(dim=-1, keepdim=True)  # (B, 1)
        if self.pool_attn is not None:
            for block in self.blocks:
                tokens = block(tokens, present)
            query = self.pool_query.expand(n_batch, -1, -1)
            pooled = self.pool_attn(query, tokens, present).squeeze(1)
        else:
            pooled = tokens.sum(dim=1) / count.clamp(min=1.0)  # DeepSets: masked mean
        pooled = self.pool_norm(pooled)

        anchor_w = _masked_softmax(self.anchor_score(tokens).squeeze(-1), present)  # (B, R)
        anchor = anchor_w @ self.receiver_positions  # (B, 2), internal units; 0 if none present

        out = self.head(torch.cat([pooled, count / self.n_receivers, *head_extra], dim=-1))
        scale = self.position_scale_m
        position = (anchor + out[:, 0:2]) * scale
        diag = F.softplus(out[:, 2:4]) * scale + self.min_sigma_m
        off = out[:, 4] * scale if self.covariance_mode == "full" else torch.zeros_like(out[:, 0])
        zero = torch.zeros_like(off)
        scale_tril = torch.stack([diag[:, 0], zero, off, diag[:, 1]], dim=-1).unflatten(-1, (2, 2))
        return position, scale_tril


@torch.no_grad()
def predict_arrays(
    net: nn.Module, spec: Tensor, scal: Tensor, mask: Tensor, frequency_hz: Tensor, batch: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N,2) and covariances (N,2,2) in float64 metres for whole arrays, in eval mode.

    Any localiser with the network's signature (the network, the radio map, their fusion).
    ``frequency_hz`` (N,) is each session's carrier in Hz (NaN = unknown: the training median band).
    A localiser with a ``max_batch`` attribute (the radio map: its memory grows with the batch) is run
    in batches of at most that many sessions, so memory never grows with N.
    """
    batch = min(batch, int(getattr(net, "max_batch", batch)))
    was_training = net.training
    net.eval()
    pos, cov = [], []
    for i in range(0, spec.shape[0], batch):
        rows = slice(i, i + batch)
        p, tril = net(spec[rows], scal[rows], mask[rows], frequency_hz[rows])
        pos.append(p.double().numpy())
        cov.append(covariance_from_tril(tril).double().numpy())
    net.train(was_training)
    return np.concatenate(pos), np.concatenate(cov)
