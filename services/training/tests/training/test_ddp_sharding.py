"""heimdall.training.distributed without processes: batch shares, loss weights, ranks and threads."""

from __future__ import annotations

import pytest
import torch

from heimdall.data.arrays import SessionArrays, load_session_arrays
from heimdall.data.dataset import HeimdallDataModule
from heimdall.features import FeatureConfig
from heimdall.training.distributed import (
    GlobalBatchShards,
    is_rank_zero,
    processes_per_node,
    threads_per_process,
)


def _single_process_batches(
    arrays: SessionArrays, batch: int, seed: int, epochs: int
) -> list[list[list[int]]]:
    """The batches HeimdallDataModule's one-process loader yields (what DDP must reproduce), read back
    from the loader through the session targets it returns."""
    dm = HeimdallDataModule(arrays, batch_size=batch, seed=seed)
    targets = dm.datasets["train"].target
    loader = dm.train_dataloader()
    out = []
    for _ in range(epochs):
        out.append([[_row(targets, t) for t in b[4]] for b in loader])  # b[4]: the targets
    return out


def _row(targets: torch.Tensor, t: torch.Tensor) -> int:
    (hit,) = torch.nonzero((targets == t).all(dim=1), as_tuple=True)
    assert hit.numel() == 1
    return int(hit)


@pytest.fixture(scope="module")
def arrays(sim_services) -> SessionArrays:  # type: ignore[no-untyped-def]
    return load_session_arrays(
        sim_services.db,
        sim_services.store,
        ["sim:nw-italy-v1"],
        FeatureConfig(),
        sim_services.settings.data_dir,
    )


@pytest.mark.parametrize(("per_rank", "world"), [(8, 2), (5, 2), (4, 3), (10, 2), (3, 4)])
def test_shares_of_each_step_make_up_the_single_process_batch(
    arrays: SessionArrays, per_rank: int, world: int
) -> None:
    n = int(arrays.indices("train").size)
    expected = _single_process_batches(arrays, per_rank * world, seed=7, epochs=3)
    samplers = [GlobalBatchShards(n, per_rank * world, 7, r, world) for r in range(world)]
    for epoch in range(3):
        steps = [list(s) for s in samplers]
        assert all(len(st) == len(expected[epoch]) == len(s) for st, s in zip(steps, samplers, strict=True))
        for i, batch in enumerate(expected[epoch]):
            shares = [steps[r][i] for r in range(world)]
            real = sorted(j for (idx, w) in shares if w > 0 for j in idx)
            assert real == sorted(batch)
            assert sum(w for _, w in shares) == pytest.approx(world)  # Σ W·share/batch = W


@pytest.mark.parametrize(("n", "per_rank", "world"), [(37, 5, 2), (31, 4, 3), (9, 4, 2)])
def test_weighted_rank_gradients_average_to_the_global_batch_gradient(
    n: int, per_rank: int, world: int
) -> None:
    """DDP averages the ranks' gradients; with the weights that average is the gradient of the global
    batch's mean loss, also for uneven and empty last shares (known answer: autograd on the batch)."""
    rng = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, generator=rng), torch.randn(n, generator=rng)
    w0 = torch.randn(3, generator=rng)

    def grad(idx: list[int], scale: float) -> torch.Tensor:
        w = w0.clone().requires_grad_(True)
        (((x[idx] @ w - y[idx]) ** 2).mean() * scale).backward()
        return w.grad  # type: ignore[return-value]

    samplers = [list(GlobalBatchShards(n, per_rank * world, 3, r, world)) for r in range(world)]
    assert len(samplers[0]) == -(-n // (per_rank * world))
    order = [j for step in zip(*samplers, strict=True) for idx, w in step if w > 0 for j in idx]
    assert sorted(order) == list(range(n))  # an epoch visits every session once
    batches = [sorted(j for idx, w in step if w > 0 for j in idx) for step in zip(*samplers, strict=True)]
    for step, batch in enumerate(batches):
        averaged = sum(grad(*samplers[r][step]) for r in range(world)) / world
        torch.testing.assert_close(averaged, grad(batch, 1.0), rtol=1e-5, atol=1e-6)


def test_rank_zero_is_told_by_the_environment() -> None:
    assert is_rank_zero({})
    assert is_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"})
    assert not is_rank_zero({"LOCAL_RANK": "1", "NODE_RANK": "0"})
    assert not is_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "1"})  # the main process of node 1
    assert not is_rank_zero({"RANK": "3"})  # torchrun


def test_ranks_of_a_node_share_its_cores() -> None:
    assert processes_per_node("cpu", "2", "ddp") == 2
    assert processes_per_node("cpu", "2", "auto") == 1 and processes_per_node("gpu", "4", "ddp") == 1
    assert threads_per_process(2, cores=2) == 1 and threads_per_process(4, cores=16) == 4
    assert threads_per_process(3, cores=2) == 1  # never 0
