"""Receiver dropout in a real training run: on every training batch, never on validation, the same twice."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from heimdall.data.augment import HEARD_CHANNEL
from heimdall.training.config import ConfigError, load_config
from heimdall.training.runner import run_training


class Batches(pl.Callback):
    """The masks (and heard receivers) the network sees, per stage, and the datasets' own masks."""

    def __init__(self) -> None:
        self.train: list[torch.Tensor] = []
        self.val: list[torch.Tensor] = []
        self.heard: list[torch.Tensor] = []
        self.hidden_features: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        dm = trainer.datamodule
        self.train.append(batch[2].clone())
        self.heard.append(batch[2] & (batch[1][..., HEARD_CHANNEL] >= dm.dropout.threshold))
        hidden = ~batch[2]
        self.hidden_features.append(float(batch[0][hidden].abs().sum() + batch[1][hidden].abs().sum()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[no-untyped-def]
        self.val.append(batch[2].clone())

    def on_train_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        self.datasets = {s: d.mask.clone() for s, d in trainer.datamodule.datasets.items()}


def _run(sim_services, out, p: float) -> Batches:  # type: ignore[no-untyped-def]
    seen = Batches()
    cfg = load_config(
        None,
        {"epochs": 2, "batch_size": 8, "output_dir": out, "seed": 3, "receiver_dropout": p, "patience": 5},
    )
    run_training(cfg, sim_services, progress=False, callbacks=[seen])
    return seen


@pytest.fixture(scope="module")
def dropped(sim_services, tmp_path_factory) -> Batches:
    return _run(sim_services, tmp_path_factory.mktemp("dropout") / "m", 0.6)


def test_training_batches_lose_receivers_but_keep_three_heard(dropped) -> None:
    train = torch.cat(dropped.train)
    epochs = 2
    assert train.shape[0] == epochs * dropped.datasets["train"].shape[0]
    assert train.sum() < 0.7 * epochs * dropped.datasets["train"].sum()  # p = 0.6 hides many
    heard = torch.cat(dropped.heard)
    assert (heard.sum(dim=1) >= 3).all()  # min_receivers heard kept in every session
    assert dropped.hidden_features == [0.0] * len(dropped.train)  # hidden = absent: features exactly 0


def test_validation_batches_are_untouched(dropped) -> None:
    val = torch.cat(dropped.val)
    n = dropped.datasets["val"].shape[0]
    assert val.shape[0] == 2 * n  # validated after each of the two epochs
    assert torch.equal(val[:n], dropped.datasets["val"]) and torch.equal(val[n:], dropped.datasets["val"])


def test_the_same_seed_drops_the_same_receivers(dropped, sim_services, tmp_path) -> None:
    again = _run(sim_services, tmp_path / "again", 0.6)
    assert torch.equal(torch.cat(again.train), torch.cat(dropped.train))


def test_dropout_outside_its_range_is_a_configuration_error() -> None:
    for p in (0.95, -0.1):
        with pytest.raises(ConfigError, match="receiver_dropout"):
            load_config(None, {"receiver_dropout": p})
