"""Stopping a training from outside, and reporting its progress, from inside Lightning's loop.

:class:`JobControl` is a Lightning callback: after every training batch it asks ``should_stop`` (a cheap
callable, e.g. reading a flag a heartbeat thread sets) and raises :class:`TrainingCancelled`, so a
cancelled run stops at the next batch instead of finishing its epoch, exporting and registering. At
every epoch end it hands ``on_progress`` the epoch, losses and an ETA.

A front door (the Celery worker) reaches a training started deep inside ``jobs.train.train`` through
:func:`job_callbacks`: callbacks installed there for the current context join every Trainer that
:mod:`heimdall.training.runner` builds in that context, without a parameter threaded through each layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pytorch_lightning as pl

from heimdall.errors import HeimdallError

_AMBIENT: ContextVar[tuple[pl.Callback, ...]] = ContextVar("heimdall_job_callbacks", default=())


class TrainingCancelled(HeimdallError):
    """Raised inside the training loop when the job was cancelled; carries the last batch seen.

    A HeimdallError: a cancel is asked for from outside, and a front door shows it as one line."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch = epoch
        self.step = step
        super().__init__(f"cancelled at epoch {epoch + 1}, step {step}")


@contextmanager
def job_callbacks(*callbacks: pl.Callback) -> Iterator[None]:
    """Within the block, every Trainer the runner builds also gets ``callbacks``."""
    token = _AMBIENT.set(_AMBIENT.get() + tuple(callbacks))
    try:
        yield
    finally:
        _AMBIENT.reset(token)


def ambient_callbacks() -> tuple[pl.Callback, ...]:
    """The callbacks :func:`job_callbacks` installed for the current context (none by default)."""
    return _AMBIENT.get()


class JobControl(pl.Callback):
    """Cancellation at every batch, progress at every epoch (see the module docstring).

    ``snapshot`` always holds the latest figures (``epoch`` is the number of epochs completed, ``step``
    the optimizer steps), for a heartbeat thread to write between epochs.
    """

    def __init__(
        self,
        should_stop: Callable[[], bool],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.snapshot: dict[str, Any] = {}
        self._t_fit = time.perf_counter()
        self._epochs_timed = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_fit = time.perf_counter()
        self._epochs_timed = 0
        self.snapshot.update(
            max_epochs=trainer.max_epochs, epoch=trainer.current_epoch, step=trainer.global_step
        )
        self._check(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.snapshot["step"] = trainer.global_step
        self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epochs_timed += 1
        done = trainer.current_epoch + 1
        per_epoch = (time.perf_counter() - self._t_fit) / self._epochs_timed
        left = max(0, int(trainer.max_epochs or done) - done)
        m = trainer.callback_metrics
        self.snapshot.update(
            epoch=done,
            step=trainer.global_step,
            train_loss=float(m["train_loss"]) if "train_loss" in m else None,
            val_loss=float(m["val_loss"]) if "val_loss" in m else None,
            eta_s=round(per_epoch * left, 3),
        )
        if self.on_progress is not None:
            self.on_progress(dict(self.snapshot))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)  # a cancel during the last epoch: no calibration, export or registration

    def _check(self, trainer: pl.Trainer) -> None:
        if self.should_stop():
            raise TrainingCancelled(trainer.current_epoch, trainer.global_step)
