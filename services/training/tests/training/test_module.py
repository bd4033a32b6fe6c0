"""heimdall.training.module: the step and predict_arrays feed the carrier to the network; the runner's net
is fitted to the training split's carriers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heimdall.data.arrays import SessionArrays, load_session_arrays
from heimdall.data.dataset import HeimdallDataModule
from heimdall.features import FeatureConfig
from heimdall.model import predict_arrays
from heimdall.training.config import load_config
from heimdall.training.module import WEIGHT, LocalizationModule
from heimdall.training.runner import build_net


@pytest.fixture(scope="module")
def arrays(sim_services) -> SessionArrays:  # type: ignore[no-untyped-def]
    return load_session_arrays(
        sim_services.db,
        sim_services.store,
        ["sim:nw-italy-v1"],
        FeatureConfig(),
        sim_services.settings.data_dir,
    )


def test_the_runners_net_reads_the_band_fitted_on_train(arrays: SessionArrays) -> None:
    net = build_net(load_config(None, {}), arrays)
    train = arrays.indices("train")
    logs = np.log10(arrays.frequency_hz[train] / 1e6)
    assert net.use_frequency
    assert float(net.band_mean) == pytest.approx(logs.mean(), rel=1e-6)
    assert float(net.band_std) == pytest.approx(logs.std() if logs.std() >= 1e-3 else 1.0, rel=1e-5)
    assert float(net.frequency_fill_hz) == np.median(arrays.frequency_hz[train])
    blind = build_net(load_config(None, {"model": {"use_frequency": False}}), arrays)
    assert not blind.use_frequency and "band_mean" not in blind.state_dict()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning")  # no Trainer here
def test_step_and_predict_arrays_use_the_carrier(arrays: SessionArrays) -> None:
    """The loss of a batch changes with its carriers; predict_arrays equals the net on the same carriers."""
    torch.manual_seed(0)
    net = build_net(load_config(None, {"model": {"embed_dim": 16, "cnn_channels": 8}}), arrays)
    module = LocalizationModule(net, 1e-3, 0.0, 1)
    dm = HeimdallDataModule(arrays, batch_size=16, seed=0)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == WEIGHT == 6
    loss, error = module.model_step(batch)
    swapped = list(batch)
    swapped[3] = torch.where(batch[3] > 300e6, torch.tensor(145.5e6), torch.tensor(433.5e6))
    other, _ = module.model_step(tuple(swapped))
    assert torch.isfinite(loss) and error.shape == (len(batch[0]),)
    assert not torch.isclose(loss, other)  # the carrier reaches the loss
    weighted = module.training_step((*batch, torch.tensor(0.5)), 0)
    torch.testing.assert_close(weighted, 0.5 * loss)
    test = dm.datasets["test"]
    pos, cov = predict_arrays(net, test.spectrogram, test.scalars, test.mask, test.frequency_hz, batch=3)
    net.eval()
    with torch.no_grad():
        want, _ = net(test.spectrogram, test.scalars, test.mask, test.frequency_hz)
    np.testing.assert_allclose(pos, want.double().numpy(), rtol=1e-5, atol=1e-2)
    assert cov.shape == (len(test), 2, 2)


def test_predict_arrays_keeps_to_a_localisers_max_batch() -> None:
    """A localiser whose memory grows with the batch (the radio map) is never handed more than max_batch."""
    import torch

    class Recorder(torch.nn.Module):
        max_batch = 4

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def forward(self, spec, scal, mask, freq):  # type: ignore[no-untyped-def]
            self.sizes.append(scal.shape[0])
            b = scal.shape[0]
            return torch.zeros(b, 2), torch.eye(2).expand(b, 2, 2)

    net = Recorder()
    pos, cov = predict_arrays(
        net, torch.zeros(10, 1), torch.zeros(10, 3, 4), torch.ones(10, 3), torch.zeros(10)
    )
    assert net.sizes == [4, 4, 2] and pos.shape == (10, 2) and cov.shape == (10, 2, 2)
