"""Receiver dropout on a batch's tensors: what stays heard, that a hidden receiver is an absent one, the
drawn probability, and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heimdall.data.augment import (
    HEARD_CHANNEL,
    ReceiverDropout,
    drop_receivers,
    heard_threshold,
    hide_receivers,
)
from heimdall.data.normalization import NormStats


def _sessions(n: int = 2000, r: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random present (mask) and heard receivers, every session with 0…R present and a subset heard."""
    g = torch.Generator().manual_seed(seed)
    present = torch.rand((n, r), generator=g) < torch.rand((n, 1), generator=g)
    heard = present & (torch.rand((n, r), generator=g) < 0.7)
    return present, heard


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("k", [1, 3])
def test_at_least_k_heard_are_kept_and_nothing_is_added(p: float, k: int) -> None:
    present, heard = _sessions()
    keep = drop_receivers(present, heard, p, k, torch.Generator().manual_seed(1))
    assert not (keep & ~present).any()  # only present receivers can stay
    kept_heard = (keep & heard).sum(dim=1)
    assert (kept_heard >= torch.clamp(heard.sum(dim=1), max=k)).all()
    assert (keep.sum(dim=1) < present.sum(dim=1)).any()  # it does drop


def test_each_present_receiver_is_hidden_with_probability_p() -> None:
    """Where the keep rule never binds (every receiver heard, k = 1, 8 receivers), the hidden fraction is
    p (binomial, 16k draws: ±0.012 at 3σ); not-heard receivers are hidden at the same rate."""
    n, r = 2000, 8
    present = torch.ones((n, r), dtype=torch.bool)
    for p in (0.2, 0.5):
        keep = drop_receivers(present, present, p, 1, torch.Generator().manual_seed(2))
        assert abs(1 - keep.float().mean().item() - p) < 0.012
        heard = present.clone()
        heard[:, :4] = False  # half never heard: dropped as often (an outage does not ask)
        keep = drop_receivers(present, heard, p, 1, torch.Generator().manual_seed(3))
        assert abs(1 - keep[:, :4].float().mean().item() - p) < 0.017


def test_p_zero_keeps_everything() -> None:
    present, heard = _sessions()
    assert torch.equal(drop_receivers(present, heard, 0.0, 3, torch.Generator().manual_seed(0)), present)


def _raw(n: int = 64, r: int = 6, c: int = 4, f: int = 5, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    spec = rng.normal(-90, 10, (n, r, c, f)).astype(np.float32)
    scal = rng.normal(-80, 5, (n, r, 4)).astype(np.float32)
    scal[..., HEARD_CHANNEL] = rng.choice([0.0, 0.3, 0.5, 0.8, 1.0], (n, r))
    mask = rng.random((n, r)) < 0.9
    return spec, scal, mask


def test_a_hidden_receiver_is_exactly_an_absent_one() -> None:
    """Standardising with a receiver hidden equals standardising, then hiding it: bit for bit."""
    spec, scal, mask = _raw()
    stats = NormStats.fit(spec, scal, mask)
    s_spec, s_scal = stats.apply(spec, scal, mask)
    batch = (torch.from_numpy(s_spec), torch.from_numpy(s_scal), torch.from_numpy(mask), torch.arange(64.0))
    before = [t.clone() for t in batch]
    keep = torch.from_numpy(mask) & (torch.rand(mask.shape, generator=torch.Generator().manual_seed(5)) < 0.5)
    spec2, scal2, mask2, rest = hide_receivers(batch, keep)
    want_spec, want_scal = stats.apply(spec, scal, keep.numpy())
    assert np.array_equal(spec2.numpy(), want_spec) and np.array_equal(scal2.numpy(), want_scal)
    assert torch.equal(mask2, keep) and mask2.dtype == torch.bool and rest is batch[3]
    assert all(torch.equal(a, b) for a, b in zip(batch, before, strict=True))  # inputs untouched


def test_heard_threshold_reads_heard_from_standardised_scalars() -> None:
    spec, scal, mask = _raw()
    stats = NormStats.fit(spec, scal, mask)
    raw = np.array([0.0, np.nextafter(np.float32(0.5), np.float32(0)), 0.5, 0.8, 1.0], np.float32)
    scal = np.zeros((1, raw.size, 4), np.float32)
    scal[0, :, HEARD_CHANNEL] = raw
    _, standardised = stats.apply(
        np.zeros((1, raw.size, 4, 5), np.float32), scal, np.ones((1, raw.size), bool)
    )
    heard = standardised[0, :, HEARD_CHANNEL] >= heard_threshold(stats)
    assert heard.tolist() == [False, False, True, True, True]


def _dropout_batch() -> tuple[ReceiverDropout, tuple[torch.Tensor, ...]]:
    spec, scal, mask = _raw(n=256)
    stats = NormStats.fit(spec, scal, mask)
    s_spec, s_scal = stats.apply(spec, scal, mask)
    batch = (torch.from_numpy(s_spec), torch.from_numpy(s_scal), torch.from_numpy(mask))
    return ReceiverDropout.for_run(0.5, 2, seed=7, stats=stats), batch


def test_dropout_is_a_function_of_seed_step_and_rank() -> None:
    dropout, batch = _dropout_batch()
    first = dropout(batch, step=3)
    assert torch.equal(dropout(batch, step=3)[2], first[2])  # same seed and step: the same masks
    assert not torch.equal(dropout(batch, step=4)[2], first[2])
    assert not torch.equal(dropout(batch, step=3, rank=1)[2], first[2])
    other = ReceiverDropout(dropout.p, dropout.min_heard, dropout.seed + 1, dropout.threshold)
    assert not torch.equal(other(batch, step=3)[2], first[2])
    heard = batch[2] & (batch[1][..., HEARD_CHANNEL] >= dropout.threshold)
    kept = first[2] & heard
    assert (kept.sum(dim=1) >= torch.clamp(heard.sum(dim=1), max=2)).all()


def test_dropout_zero_returns_the_batch_and_bad_settings_are_refused() -> None:
    dropout, batch = _dropout_batch()
    none = ReceiverDropout(0.0, 3, 1, dropout.threshold)
    assert none(batch, step=0) is batch
    for p, k in ((1.0, 3), (-0.1, 3), (0.5, 0)):
        with pytest.raises(ValueError, match="need 0 <= p < 1"):
            ReceiverDropout(p, k, 1, 0.0)
