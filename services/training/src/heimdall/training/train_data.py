"""The training run's data module: the sharded loaders plus what a run may change about its inputs.

Two things, both only here so that :mod:`heimdall.data.dataset` stays the plain split-to-tensors view:

* ``stats``: normalisation statistics given from outside (a fine-tuning run keeps its source's, see
  :mod:`heimdall.training.init_from`) instead of those fitted on this run's training split;
* ``receiver_dropout``: :class:`heimdall.data.augment.ReceiverDropout` applied to every *training*
  batch after it reaches the device (Lightning's ``on_after_batch_transfer``), seeded by the run's seed
  and the trainer's step; validation and test batches pass untouched.
"""

from __future__ import annotations

from typing import Any

from heimdall.data.arrays import SessionArrays
from heimdall.data.augment import ReceiverDropout
from heimdall.data.dataset import HeimdallDataset
from heimdall.data.normalization import NormStats
from heimdall.training.distributed import ShardedDataModule, split_digest


class TrainingDataModule(ShardedDataModule):
    """:class:`ShardedDataModule` with optional given normalisation and training-only receiver dropout."""

    def __init__(
        self,
        arrays: SessionArrays,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        *,
        stats: NormStats | None = None,
        receiver_dropout: float = 0.0,
        min_heard: int = 3,
    ) -> None:
        super().__init__(arrays, batch_size=batch_size, seed=seed, num_workers=num_workers)
        if stats is not None:
            self.stats = stats
            self.datasets = {s: HeimdallDataset(arrays, s, stats) for s in ("train", "val", "test")}
            self.split_digest = split_digest(arrays, stats.to_dict())
        self.dropout = (
            ReceiverDropout.for_run(receiver_dropout, min_heard, seed, self.stats)
            if receiver_dropout > 0
            else None
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if self.dropout is None or trainer is None or not trainer.training:
            return batch
        return self.dropout(tuple(batch), step=trainer.global_step, rank=trainer.global_rank)
