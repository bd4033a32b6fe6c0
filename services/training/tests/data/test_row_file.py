"""heimdall.data.row_file: rows written session by session read back like the array they stand for,
views without copies, and a truncated file is an error naming it, never rows of zeros."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heimdall.data.dataset import StandardisedRows
from heimdall.data.normalization import NormStats
from heimdall.data.row_file import RowWriter


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(-100, 10, (9, 3, 4, 5)).astype(np.float32)
    w = RowWriter(tmp_path / "rows.npy", 10, (3, 4, 5))
    for i, row in enumerate(data):
        w.write(i, row)
    return data, w.close()


def test_rows_read_back_like_the_array(written) -> None:
    data, rows = written
    assert rows.shape == (10, 3, 4, 5) and rows.dtype == np.float32
    assert np.array_equal(rows[:9], data) and np.array_equal(rows[9], np.zeros((3, 4, 5)))  # never written
    assert np.array_equal(rows[[4, 0, 4]], data[[4, 0, 4]]) and np.array_equal(rows[2], data[2])
    assert np.array_equal(np.load(rows.path), np.asarray(rows))  # an ordinary .npy file


def test_a_view_reads_its_rows_only(written) -> None:
    data, rows = written
    view = rows.take([7, 1, 3])
    assert view.shape == (3, 3, 4, 5) and np.array_equal(view[1:], data[[1, 3]])
    assert np.array_equal(view.take([2])[0], data[3])
    with pytest.raises(IndexError):
        view[3]


def test_a_truncated_file_is_an_error_naming_it(written) -> None:
    _, rows = written
    with open(rows.path, "r+b") as f:
        f.truncate(rows.offset + 2 * rows.row_bytes + 7)
    assert np.asarray(rows[1]).shape == (3, 4, 5)
    with pytest.raises(OSError, match=r"rows\.npy: row 5 is truncated"):
        rows[5]


def test_fitting_and_standardising_by_chunks_equals_the_whole_array(written, monkeypatch) -> None:
    import heimdall.data.normalization as normalization

    _, rows = written
    mask = np.ones((10, 3), bool)
    mask[[2, 9], 1] = False
    scalars = np.random.default_rng(1).normal(size=(10, 3, 4)).astype(np.float32)
    train = np.array([0, 2, 3, 5, 8])
    whole = NormStats.fit(np.asarray(rows)[train], scalars[train], mask[train])
    monkeypatch.setattr(normalization, "FIT_CHUNK", 2)
    chunked = NormStats.fit(rows, scalars, mask, train)
    for k in ("spec_mean", "spec_std", "scalar_mean", "scalar_std"):
        np.testing.assert_allclose(getattr(chunked, k), getattr(whole, k), rtol=1e-6)
    present = np.asarray(rows)[train][mask[train]]
    np.testing.assert_allclose(whole.spec_mean, present.mean(axis=(0, 2)), rtol=1e-6)
    lazy = StandardisedRows(rows, train, mask, whole)
    eager = whole.apply_spectrogram(np.asarray(rows)[train], mask[train])
    assert len(lazy) == 5 and lazy.shape == eager.shape
    assert torch.equal(lazy[[3, 0]], torch.from_numpy(eager[[3, 0]])) and torch.equal(
        lazy[1:3], torch.from_numpy(eager[1:3])
    )
    assert torch.equal(lazy[torch.tensor([4])], torch.from_numpy(eager[[4]])) and lazy[2].shape == (3, 4, 5)
