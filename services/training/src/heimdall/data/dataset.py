"""`HeimdallDataset` and the Lightning data module over a set of loaded sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from heimdall.data.arrays import SessionArrays, load_session_arrays
from heimdall.data.normalization import NormStats
from heimdall.data.recordings import arrays_frequencies
from heimdall.errors import DataError
from heimdall.features import FeatureConfig
from heimdall.storage.database import Database
from heimdall.storage.objectstore import ObjectStore

#: spectrogram, scalars, mask, frequency_hz, target_enu_m, target_sigma_m
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


IN_MEMORY_SPECTROGRAM_BYTES = 128 * 2**20  # a split's spectrograms above this are standardised per batch


class StandardisedRows:
    """The standardised spectrograms of some sessions of a (possibly memory-mapped) array, per request.

    Indexing (an int, a slice, a list or tensor of positions) reads those sessions' rows and returns
    them standardised as a float32 tensor, so a split's spectrograms are never copied whole into memory.
    """

    def __init__(self, spectrogram: np.ndarray, rows: np.ndarray, mask: np.ndarray, stats: NormStats) -> None:
        self.source, self.rows, self.mask, self.stats = spectrogram, rows, mask, stats
        self.shape = (rows.size, *spectrogram.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int | slice | list[int] | torch.Tensor) -> torch.Tensor:
        pick = self.rows[i.numpy() if isinstance(i, torch.Tensor) else i]
        rows = np.atleast_1d(pick)
        out = self.stats.apply_spectrogram(np.asarray(self.source[rows]), self.mask[rows])
        return torch.from_numpy(out if np.ndim(pick) else out[0])


class HeimdallDataset(Dataset[Batch]):
    """Sessions of one split as tensors: (spectrogram, scalars, mask, frequency_hz, target_enu_m,
    target_sigma_m).

    Features are standardised with training-split statistics: the scalars once at construction, the
    spectrograms too when they are small, else per batch (:class:`StandardisedRows`, read from the
    disk-backed row file: memory does not grow with the data set). Every epoch after loading touches no
    IQ at all. ``frequency_hz`` is the session's carrier in Hz (NaN = unknown: the network then reads
    its training median carrier).
    """

    def __init__(self, arrays: SessionArrays, split: str, stats: NormStats) -> None:
        idx = arrays.indices(split)
        source = arrays.spectrogram
        lazy = source[:1].nbytes * idx.size > IN_MEMORY_SPECTROGRAM_BYTES  # a RowFile reads small ones whole
        self.split = split
        self.session_ids = [arrays.session_ids[i] for i in idx]
        scal = stats.apply_scalars(arrays.scalars[idx], arrays.mask[idx])
        self.spectrogram: torch.Tensor | StandardisedRows = (
            StandardisedRows(source, idx, arrays.mask, stats)
            if lazy
            else torch.from_numpy(stats.apply_spectrogram(source[idx], arrays.mask[idx]))
        )
        self.scalars = torch.from_numpy(scal)
        self.mask = torch.from_numpy(arrays.mask[idx])
        self.frequency_hz = torch.from_numpy(arrays_frequencies(arrays, idx))
        self.target = torch.from_numpy(arrays.target_enu_m[idx].astype(np.float32))
        self.sigma = torch.from_numpy(arrays.target_sigma_m[idx].astype(np.float32))

    @classmethod
    def from_database(
        cls,
        db: Database,
        store: ObjectStore,
        datasets: list[str],
        split: str,
        feature_config: FeatureConfig | None = None,
        cache_root: Path = Path("heimdall-data/feature-cache"),
        stats: NormStats | None = None,
    ) -> HeimdallDataset:
        """The approved sessions of `datasets` (SQL query) in `split`; stats default to the train split's."""
        arrays = load_session_arrays(db, store, datasets, feature_config or FeatureConfig(), cache_root)
        if stats is None:
            train = arrays.indices("train")
            stats = NormStats.fit(arrays.spectrogram, arrays.scalars, arrays.mask, train)
        return cls(arrays, split, stats)

    def __len__(self) -> int:
        return len(self.session_ids)

    def __getitem__(self, i: int | list[int]) -> Batch:
        """One session, or a whole batch when given a list of indices (one gather, no collation)."""
        return (
            self.spectrogram[i],
            self.scalars[i],
            self.mask[i],
            self.frequency_hz[i],
            self.target[i],
            self.sigma[i],
        )


class HeimdallDataModule(pl.LightningDataModule):
    """Train/val/test loaders with the training split's normalisation statistics."""

    def __init__(self, arrays: SessionArrays, batch_size: int, seed: int, num_workers: int = 0) -> None:
        super().__init__()
        self.arrays = arrays
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        train = arrays.indices("train")
        if train.size == 0:
            raise DataError("the training split is empty: simulate or import more approved sessions")
        self.stats = NormStats.fit(arrays.spectrogram, arrays.scalars, arrays.mask, train)
        self.datasets = {s: HeimdallDataset(arrays, s, self.stats) for s in ("train", "val", "test")}

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        """Batches are gathered with one tensor index each (per-item collation cost 5x the model step)."""
        dataset = self.datasets[split]
        gen = torch.Generator().manual_seed(self.seed)
        order = RandomSampler(dataset, generator=gen) if shuffle else SequentialSampler(dataset)
        return DataLoader(
            dataset,
            sampler=BatchSampler(order, batch_size=self.batch_size, drop_last=False),
            batch_size=None,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test", shuffle=False)
