"""Several training processes (Lightning DDP) that train the model one process would train.

With ``--strategy ddp`` Lightning re-runs the whole ``heimdall train`` command once per extra rank
(its subprocess launcher), and every other node runs the same command itself. Three things make the
ranks add up to the single-process run with the same effective batch size (``devices × num_nodes ×
batch_size``):

* every rank loads the same data and derives the same split (the split is a function of the data);
  :class:`ShardedDataModule` checks it at setup by comparing the split digests of all ranks;
* :class:`GlobalBatchShards` draws the single-process shuffle of the *global* batch
  (``world_size × batch_size``) and gives each rank its share, with a loss weight
  ``world_size · share / batch`` so that DDP's gradient average is exactly the mean over the global
  batch, even for an uneven (or, for tiny last batches, empty) share;
* validation is not sharded: each rank validates on the whole split, so every rank sees the same
  ``val_loss`` and early stopping / best checkpoint decide as one process would.

Only rank 0 writes anything (checkpoints, report, ONNX, MLflow): :func:`is_rank_zero` tells a
process from its environment, before Lightning is set up, whether it is rank 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from heimdall.data.arrays import SessionArrays
from heimdall.data.dataset import HeimdallDataModule
from heimdall.errors import DataError
from heimdall.settings import RANK_VARIABLES, launcher_rank_environment


class SplitMismatchError(DataError):
    """The ranks of one distributed run read different data or split it differently."""


def is_rank_zero(environ: Mapping[str, str] | None = None) -> bool:
    """True unless the environment names this process a non-zero rank (or node) of a distributed run.

    Rank 0 is the process on node 0 with local rank 0; every other rank trains only (it exits after
    ``fit``) and never creates MLflow runs or writes files.
    """
    env = launcher_rank_environment() if environ is None else environ
    return all(env.get(name, "0").strip() in ("", "0") for name in RANK_VARIABLES)


#: cgroup v2 and v1 files of the CPU bandwidth quota (a container's ``--cpus``)
CGROUP_CPU_FILES = (Path("/sys/fs/cgroup/cpu.max"), Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))


def cgroup_cpu_limit(files: tuple[Path, ...] = CGROUP_CPU_FILES) -> int | None:
    """Whole cores the cgroup's CPU quota allows (rounded up), None when unlimited or unknown.

    A container limited with ``--cpus 2`` on a 64-core host still sees 64 cores in its affinity mask:
    only the quota (``cpu.max`` "QUOTA PERIOD", or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) says 2.
    """
    for path in files:
        try:
            text = path.read_text().split()
            if path.name == "cpu.max":
                quota, period = text[0], text[1] if len(text) > 1 else "100000"
            else:
                quota, period = text[0], (path.parent / "cpu.cfs_period_us").read_text().split()[0]
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            q, p = int(quota), int(period)
        except ValueError:
            continue
        if q > 0 and p > 0:
            return max(1, -(-q // p))
    return None


def available_cores() -> int:
    """CPU cores this process may really use: its affinity mask (a cpuset), capped by the cgroup quota."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    return min(cores, quota) if quota is not None else cores


def processes_per_node(accelerator: str, devices: str, strategy: str) -> int:
    """Training processes this node runs: ``devices`` for a multi-process CPU strategy, else 1."""
    if accelerator == "cpu" and devices.isdigit() and strategy.startswith("ddp"):
        return max(1, int(devices))
    return 1


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """Intra-op threads per rank so that the ranks of one node share its cores without oversubscribing."""
    return max(1, (available_cores() if cores is None else cores) // max(1, processes))


def limit_torch_threads(processes: int = 1) -> tuple[int, int]:
    """Cap torch's intra- and inter-op threads at this process's share of the available cores.

    torch starts one thread per core it sees, which ignores a cgroup quota and other ranks on the node:
    on a loaded 2-core machine that oversubscription made an epoch take minutes instead of seconds. The
    cap never raises a lower count (``OMP_NUM_THREADS``, an earlier call); inter-op threads can only be
    set before torch's first parallel work, so a later call leaves them. Returns (intra, inter).
    """
    share = threads_per_process(processes)
    if torch.get_num_threads() > share:
        torch.set_num_threads(share)
    if torch.get_num_interop_threads() > share:
        # RuntimeError: parallel work has started in this process, the count is fixed until it exits
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(share)
    return torch.get_num_threads(), torch.get_num_interop_threads()


class GlobalBatchShards(Sampler[tuple[list[int], float]]):
    """Rank ``rank``'s share of each global batch of the single-process shuffle, with its loss weight.

    Epoch ``e`` uses the ``e``-th permutation of a generator seeded with ``seed``, exactly as
    :class:`~heimdall.data.dataset.HeimdallDataModule`'s single-process loader does, cut into batches of
    ``global_batch``; rank ``r`` takes items ``r, r + W, …`` of each. The weight ``W · share / batch``
    makes the mean of the ranks' weighted losses (DDP averages gradients) the global batch mean. A rank
    with an empty share (a last batch smaller than W) gets one item with weight 0: DDP needs every rank
    to step, and a zero weight keeps its gradient out of the sum.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n = n
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(seed)

    def global_batches(self) -> Iterator[list[int]]:
        """The single-process batches of one epoch (advances the generator by one permutation)."""
        order = RandomSampler(range(self.n), generator=self.generator)
        yield from BatchSampler(order, batch_size=self.global_batch, drop_last=False)

    def __iter__(self) -> Iterator[tuple[list[int], float]]:
        for batch in self.global_batches():
            share = batch[self.rank :: self.world_size]
            if share:
                yield share, self.world_size * len(share) / len(batch)
            else:
                yield batch[:1], 0.0

    def __len__(self) -> int:
        return -(-self.n // self.global_batch)


class WeightedShards(Dataset[tuple[Any, ...]]):
    """A training dataset indexed by ``(indices, weight)``: the batch with its loss weight appended
    (element :data:`heimdall.training.module.WEIGHT`, after spectrogram … sigma)."""

    def __init__(self, base: Dataset[Any]) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[list[int], float]) -> tuple[Any, ...]:
        indices, weight = item
        return (*self.base[indices], torch.tensor(weight, dtype=torch.float32))


class ShardedDataModule(HeimdallDataModule):
    """:class:`HeimdallDataModule` whose training batches are shared out among the ranks of a DDP run.

    In a single process it is the plain data module (same loaders, same order).
    """

    def __init__(self, arrays: SessionArrays, batch_size: int, seed: int, num_workers: int = 0) -> None:
        super().__init__(arrays, batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.split_digest = split_digest(arrays, self.stats.to_dict())

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def setup(self, stage: str) -> None:
        rank, world = self._world()
        if world > 1:
            check_same_split(self.split_digest, rank, world)

    def train_dataloader(self) -> DataLoader[Any]:
        rank, world = self._world()
        if world == 1:
            return super().train_dataloader()
        dataset = self.datasets["train"]
        shards = GlobalBatchShards(len(dataset), self.batch_size * world, self.seed, rank, world)
        return DataLoader(
            WeightedShards(dataset), sampler=shards, batch_size=None, num_workers=self.num_workers
        )


def split_digest(arrays: SessionArrays, stats: Mapping[str, Any]) -> str:
    """A hash of each split's session ids in order and of the training normalisation statistics.

    Equal on two ranks iff they hold the same sessions in the same order (the shuffle indexes them)
    with the same features (the statistics are computed from them).
    """
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        h.update(f"{split}:".encode())
        for i in arrays.indices(split):
            h.update(f"{arrays.session_ids[i]}\n".encode())
    h.update(json.dumps(stats, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def check_same_split(digest: str, rank: int, world: int) -> None:
    """Every rank must hold the split rank 0 holds; SplitMismatchError otherwise (on every rank)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, digest)
    bad = [r for r, d in enumerate(gathered) if d != gathered[0]]
    if bad:
        raise SplitMismatchError(
            f"rank(s) {bad} read a different train/val/test split than rank 0 (rank {rank} of {world}): "
            "every node must reach the same database and object store, with the same data"
        )


def end_non_zero_rank(trainer: Any) -> None:
    """After ``fit``, a non-zero rank's work is done: it exits 0 here, before evaluation, export,
    report and MLflow logging, which rank 0 does alone on the whole test split."""
    if not trainer.is_global_zero:
        raise SystemExit(0)
