"""JobControl in a real Lightning fit: it stops at the very batch the flag turns, reports each epoch."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from heimdall.training.cancel import JobControl, TrainingCancelled, ambient_callbacks, job_callbacks

BATCHES_PER_EPOCH = 5


class Counting(pl.LightningModule):
    """A linear fit that counts the batches it was given (the truth the callback is checked against)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.batches = 0

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.batches += 1
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * BATCHES_PER_EPOCH, 2, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def _fit(control: JobControl, epochs: int) -> Counting:
    module = Counting()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[control],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, _loader(), _loader())
    return module


@pytest.mark.parametrize("stop_after", [1, 7, 12])
def test_the_fit_stops_at_the_batch_the_flag_turns(stop_after: int) -> None:
    seen = {"module": None}
    control = JobControl(
        should_stop=lambda: seen["module"] is not None and seen["module"].batches >= stop_after
    )
    module = Counting()
    seen["module"] = module
    trainer = pl.Trainer(
        max_epochs=10,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[control],
        num_sanity_val_steps=0,
    )
    with pytest.raises(TrainingCancelled) as caught:
        trainer.fit(module, _loader(), _loader())
    assert module.batches == stop_after  # not one batch more
    assert caught.value.step == stop_after and caught.value.epoch == (stop_after - 1) // BATCHES_PER_EPOCH


def test_progress_once_per_epoch_with_losses_and_an_eta_that_reaches_zero() -> None:
    reports: list[dict] = []
    _fit(JobControl(should_stop=lambda: False, on_progress=reports.append), epochs=3)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert [r["step"] for r in reports] == [5, 10, 15]
    assert all(r["max_epochs"] == 3 and r["train_loss"] > 0 and r["val_loss"] > 0 for r in reports)
    assert reports[-1]["eta_s"] == 0.0 and reports[0]["eta_s"] > 0


def test_a_flag_set_before_training_stops_before_the_first_batch() -> None:
    module = None
    with pytest.raises(TrainingCancelled):
        module = _fit(JobControl(should_stop=lambda: True), epochs=2)
    assert module is None


def test_job_callbacks_apply_inside_the_block_only() -> None:
    control = JobControl(should_stop=lambda: False)
    assert ambient_callbacks() == ()
    with job_callbacks(control):
        assert ambient_callbacks() == (control,)
    assert ambient_callbacks() == ()
