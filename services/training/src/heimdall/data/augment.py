"""Training-time augmentation of a batch: random receiver dropout, so that an outage is in distribution.

A receiver that is down (powered off, disconnected, jammed) is absent from a session whether or not it
would have heard the transmitter, exactly as the outage study removes it (:mod:`heimdall.evaluate.outage`).
So every *present* receiver of a training session is hidden with probability ``p``, under one constraint:
a session keeps at least ``min_heard`` heard receivers (the loader's keep rule, ``min_receivers``), or
all of them when it has fewer. A hidden receiver is indistinguishable from an absent one: mask False and
its standardised features exactly 0, as :meth:`heimdall.data.normalization.NormStats.apply` writes them.

The draw is a pure function of ``(seed, step, rank)``: the same run draws the same masks, also across a
``--resume`` (the step comes from the trainer), whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from heimdall.data.normalization import NormStats
from heimdall.features import SCALAR_NAMES

__all__ = ["HEARD_CHANNEL", "ReceiverDropout", "drop_receivers", "heard_threshold", "hide_receivers"]

#: The ``heard`` channel of the per-receiver scalars (its raw value is ≥ 0.5 iff the receiver heard).
HEARD_CHANNEL = SCALAR_NAMES.index("heard")


def heard_threshold(stats: NormStats) -> float:
    """The standardised ``heard`` value of a raw 0.5, computed as ``NormStats.apply`` computes it (float32),
    so ``standardised >= threshold`` ⟺ ``raw >= 0.5`` bit for bit."""
    raw = np.full((1, 1, stats.scalar_mean.shape[0]), 0.5, np.float32)
    return float(((raw - stats.scalar_mean) / stats.scalar_std)[0, 0, HEARD_CHANNEL])


def drop_receivers(
    mask: Tensor, heard: Tensor, p: float, min_heard: int, generator: torch.Generator
) -> Tensor:
    """``mask`` (B, R) with each present receiver hidden with probability ``p``, keeping per session at
    least ``min(min_heard, heard receivers)`` heard ones.

    One uniform draw per receiver decides: those below ``p`` are hidden, except the ``min_heard`` heard
    receivers with the highest draws, which are always kept. When enough heard receivers survive this
    changes nothing; otherwise it restores a uniformly random subset of the hidden heard ones (given the
    hidden set, their draws are i.i.d. uniform on ``[0, p)``).
    """
    present = mask.bool()
    heard = heard.bool() & present
    u = torch.rand(present.shape, generator=generator, device="cpu").to(present.device)
    score = torch.where(heard, u, torch.full_like(u, -1.0))  # heard receivers first, by their draw
    rank = torch.argsort(torch.argsort(score, dim=1, descending=True), dim=1)
    protected = heard & (rank < min_heard)
    return present & ~((u < p) & ~protected)


def hide_receivers(batch: tuple[Tensor, ...], keep: Tensor) -> tuple[Tensor, ...]:
    """The batch with only the receivers ``keep`` (B, R): mask, and spectrogram and scalars zeroed as for
    an absent receiver; elements after the mask (carrier, target, σ, a DDP weight) pass unchanged. The
    input tensors are not modified (they may be views of the dataset's storage)."""
    spec, scal, mask, *rest = batch
    spec = torch.where(keep[:, :, None, None], spec, torch.zeros((), dtype=spec.dtype, device=spec.device))
    scal = torch.where(keep[:, :, None], scal, torch.zeros((), dtype=scal.dtype, device=scal.device))
    return (spec, scal, keep.to(mask.dtype), *rest)


@dataclass(frozen=True)
class ReceiverDropout:
    """Receiver dropout of one run: probability, the heard receivers kept, the seed, and where "heard" is.

    ``threshold`` is :func:`heard_threshold` of the run's normalisation: in a batch, a present receiver
    heard the session iff its standardised ``heard`` scalar is at least that.
    """

    p: float
    min_heard: int
    seed: int
    threshold: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0 or self.min_heard < 1:
            raise ValueError(
                f"need 0 <= p < 1 and min_heard >= 1, got p={self.p}, min_heard={self.min_heard}"
            )

    @classmethod
    def for_run(cls, p: float, min_heard: int, seed: int, stats: NormStats) -> ReceiverDropout:
        return cls(float(p), int(min_heard), int(seed), heard_threshold(stats))

    def generator(self, step: int, rank: int = 0) -> torch.Generator:
        """The generator of one training step (of one DDP rank): a function of (seed, step, rank) only."""
        state = np.random.SeedSequence([self.seed, int(step), int(rank)]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, batch: tuple[Tensor, ...], step: int, rank: int = 0) -> tuple[Tensor, ...]:
        """The training batch of step ``step`` with its receivers dropped (p = 0: the batch itself)."""
        if self.p == 0.0:
            return batch
        scal, mask = batch[1], batch[2]
        heard = mask.bool() & (scal[..., HEARD_CHANNEL] >= self.threshold)
        keep = drop_receivers(mask, heard, self.p, self.min_heard, self.generator(step, rank))
        return hide_receivers(batch, keep)
