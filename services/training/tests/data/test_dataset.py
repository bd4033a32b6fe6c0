"""heimdall.data.dataset: the training batches carry each session's carrier beside its features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from heimdall.data.arrays import SessionArrays, load_session_arrays
from heimdall.data.dataset import HeimdallDataModule, HeimdallDataset
from heimdall.data.recordings import arrays_frequencies
from heimdall.features import FeatureConfig


def _load(sim_services, store_root=None) -> SessionArrays:  # type: ignore[no-untyped-def]
    """The simulated v1 sessions, in memory or (``store_root``) through the disk-backed array store."""
    return load_session_arrays(
        sim_services.db,
        sim_services.store,
        ["sim:nw-italy-v1"],
        FeatureConfig(),
        sim_services.settings.data_dir,
        store_root=store_root,
    )


@pytest.fixture(scope="module")
def arrays(sim_services) -> SessionArrays:  # type: ignore[no-untyped-def]
    return _load(sim_services)


def test_batches_carry_the_sessions_carrier(arrays: SessionArrays) -> None:
    assert arrays.frequency_hz is not None
    assert set(np.unique(arrays.frequency_hz)) <= {145.5e6, 433.5e6}  # nw-italy-v1's two bands
    dm = HeimdallDataModule(arrays, batch_size=8, seed=0)
    test = dm.datasets["test"]
    idx = arrays.indices("test")
    np.testing.assert_array_equal(test.frequency_hz.numpy(), arrays.frequency_hz[idx].astype(np.float32))
    spec, scal, mask, freq, target, sigma = next(iter(dm.test_dataloader()))
    assert freq.dtype == torch.float32 and freq.shape == (min(8, len(idx)),)
    torch.testing.assert_close(freq, test.frequency_hz[: len(freq)])
    torch.testing.assert_close(target, test.target[: len(freq)])
    assert spec.shape[0] == scal.shape[0] == mask.shape[0] == sigma.shape[0] == len(freq)


def test_an_unknown_carrier_stays_nan(arrays: SessionArrays) -> None:
    """NaN is passed on (the network reads it as its training median); no carrier at all is all NaN."""
    freq = np.asarray(arrays.frequency_hz, float).copy()
    freq[::3] = np.nan
    some = HeimdallDataset(
        replace(arrays, frequency_hz=freq), "train", HeimdallDataModule(arrays, 4, 0).stats
    )
    train = arrays.indices("train")
    got = some.frequency_hz.numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(freq[train]))
    none = arrays_frequencies(replace(arrays, frequency_hz=None), train)
    assert none.dtype == np.float32 and none.shape == train.shape and np.isnan(none).all()


def test_a_large_split_is_read_and_standardised_per_batch(
    sim_services, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """From the disk-backed row file, batch by batch: the same batches as the in-memory arrays give."""
    import heimdall.data.dataset as dataset_module
    from heimdall.data.dataset import StandardisedRows
    from heimdall.data.row_file import RowFile

    in_memory, on_disk = _load(sim_services), _load(sim_services, tmp_path / "arrays")
    assert isinstance(on_disk.spectrogram, RowFile) and not isinstance(in_memory.spectrogram, RowFile)
    eager = HeimdallDataModule(in_memory, batch_size=8, seed=0)
    monkeypatch.setattr(dataset_module, "IN_MEMORY_SPECTROGRAM_BYTES", 0)
    lazy = HeimdallDataModule(on_disk, batch_size=8, seed=0)
    assert isinstance(lazy.datasets["train"].spectrogram, StandardisedRows)
    for a, b in zip(eager.train_dataloader(), lazy.train_dataloader(), strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
