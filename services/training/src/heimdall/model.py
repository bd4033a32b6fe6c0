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
   influence at all (even NaN/inf). An all-missing row yields a finite, input-independent prior.
4. **Head**: position = ``position_scale_m`` · (anchor + offset) where the anchor is a learned
   attention-weighted centroid of the present receivers' positions (the classic weighted-centroid
   estimator as inductive bias; at initialisation it is ≈ the plain centroid), and a Cholesky factor
   ``L`` with softplus diagonal (plus a 1 m floor) and free off-diagonal, all in metres.

The network works internally in O(1) units (km / (position_scale_m / 1000)); only the outputs are
converted to metres, the units of :func:`heimdall.loss.gaussian_nll_2d`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heimdall.loss import covariance_from_tril

__all__ = ["LocalizationNet"]

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
    """

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
    ) -> None:
        super().__init__()
        if pooling not in _POOLING_MODES:
            raise ValueError(f"pooling must be one of {_POOLING_MODES}, got {pooling!r}")
        if covariance not in _COVARIANCE_MODES:
            raise ValueError(f"covariance must be one of {_COVARIANCE_MODES}, got {covariance!r}")
        if n_receivers < 1 or n_scalars < 0 or position_scale_m <= 0 or min_sigma_m < 0:
            raise ValueError("need n_receivers >= 1, n_scalars >= 0, position_scale_m > 0, min_sigma_m >= 0")
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

        # Receiver positions in internal units (km / scale_km), O(1) for a well-chosen scale.
        self.register_buffer("receiver_positions", positions / (self.position_scale_m / 1000.0))

        self.spec_encoder = _SpectrogramEncoder(n_bands, cnn_channels) if use_spectrogram else None
        spec_dim = self.spec_encoder.out_dim if self.spec_encoder is not None else 0
        self.id_embedding = nn.Embedding(n_receivers, id_embed_dim)
        token_in = spec_dim + n_scalars + id_embed_dim + 2
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
            nn.Linear(embed_dim + 1, embed_dim),
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

    def forward(self, spectrogram: Tensor, scalars: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Localise one batch of sessions.

        Args:
            spectrogram: (B, R, C, F) standardised log-mel spectrograms; ignored (any shape) when
                ``use_spectrogram`` is False.
            scalars: (B, R, S) standardised per-receiver scalars.
            mask: (B, R) bool or float (1 = receiver present). Missing receivers' inputs may hold
                anything, including NaN.

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

        out = self.head(torch.cat([pooled, count / self.n_receivers], dim=-1))
        scale = self.position_scale_m
        position = (anchor + out[:, 0:2]) * scale
        diag = F.softplus(out[:, 2:4]) * scale + self.min_sigma_m
        off = out[:, 4] * scale if self.covariance_mode == "full" else torch.zeros_like(out[:, 0])
        zero = torch.zeros_like(off)
        scale_tril = torch.stack([diag[:, 0], zero, off, diag[:, 1]], dim=-1).unflatten(-1, (2, 2))
        return position, scale_tril
