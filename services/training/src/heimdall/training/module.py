"""The LightningModule: a network injected from outside, one shared step for every stage."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from heimdall.loss import gaussian_nll_2d

#: spectrogram, scalars, mask, frequency_hz, target, sigma[, loss weight of a DDP rank's share]
Batch = tuple[Tensor, ...]
#: Index of a DDP rank's loss weight in a batch (heimdall.training.distributed.WeightedShards)
WEIGHT = 6


class LocalizationModule(pl.LightningModule):
    """Gaussian-NLL training of a localisation network; validation reports median error in metres."""

    def __init__(self, net: nn.Module, learning_rate: float, weight_decay: float, epochs: int) -> None:
        super().__init__()
        self.net = net
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.save_hyperparameters(ignore=["net"])
        self._val_errors: list[Tensor] = []
        self.history: list[dict[str, float]] = []

    def forward(
        self, spectrogram: Tensor, scalars: Tensor, mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor]:
        return self.net(spectrogram, scalars, mask, frequency_hz)

    def model_step(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Loss and per-session error (m) of one batch; shared by train, validation and test.

        A seventh element (a DDP rank's share of a global batch, heimdall.training.distributed) is its
        loss weight and is applied by :meth:`training_step`, not here.
        """
        spec, scal, mask, frequency_hz, target, sigma = batch[:WEIGHT]
        position, scale_tril = self.net(spec, scal, mask, frequency_hz)
        nll = gaussian_nll_2d(position, scale_tril, target, sigma)
        error = torch.linalg.vector_norm(position.detach() - target, dim=-1)
        return nll.mean(), error

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, _ = self.model_step(batch)
        # epoch means are averaged over DDP ranks (a no-op in one process)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch[0].shape[0],
            sync_dist=True,
        )
        # a rank's share of a global batch: weight = world_size · share / batch, so that DDP's gradient
        # average equals the gradient of the global batch's mean loss
        return loss * batch[WEIGHT] if len(batch) > WEIGHT else loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, error = self.model_step(batch)
        # every DDP rank validates on the whole split (not sharded): the same value on every rank
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0], sync_dist=True)
        self._val_errors.append(error)

    def on_validation_epoch_end(self) -> None:
        if self._val_errors:
            median = torch.cat(self._val_errors).median()
            self.log("val_median_error_m", median, prog_bar=True, sync_dist=True)
            self._val_errors.clear()

    def on_train_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        row = {"epoch": float(self.current_epoch)}
        for key in ("train_loss", "val_loss", "val_median_error_m"):
            if key in metrics:
                row[key] = float(metrics[key])
        self.history.append(row)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, self.epochs), eta_min=self.learning_rate * 0.02
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
