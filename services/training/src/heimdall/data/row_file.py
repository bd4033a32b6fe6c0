"""A disk-backed array of per-session rows, read with plain file reads instead of being held in memory.

The spectrograms of a large data set (20k sessions × 7 receivers × 64 bands × 47 frames is 1.6 GB) do
not fit the memory a training run may use. They are written once, session after session, to a ``.npy``
file and read back by the rows a batch needs (``os.pread``). Unlike a memory map, what is read lands in
the page cache, which the kernel may drop, not in the process's resident memory.

A :class:`RowFile` indexes like the numpy array it stands for (``shape``, ``dtype``, an int, slice or
index array gives an ``ndarray``), and :meth:`take` makes a view of some rows without copying any.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


class RowFile:
    """Rows ``rows`` (logical order) of the ``.npy`` file ``path`` of shape (N, *row_shape)."""

    def __init__(self, path: Path, rows: np.ndarray | None = None) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{self.path}: a Fortran-ordered array is not a row file")
        self.dtype = np.dtype(dtype)
        self.row_shape: tuple[int, ...] = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.rows = np.arange(shape[0], dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= shape[0]):
            raise ValueError(f"{self.path}: row index out of range (the file holds {shape[0]} rows)")

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.rows.size), *self.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return int(self.rows.size)

    def take(self, sel: Any) -> RowFile:
        """The rows ``sel`` (indices into this view) as a new view of the same file."""
        return RowFile.__new__(RowFile)._view(self, self.rows[np.asarray(sel, np.int64)])

    def _view(self, parent: RowFile, rows: np.ndarray) -> RowFile:
        self.path, self.offset, self.dtype = parent.path, parent.offset, parent.dtype
        self.row_shape, self.row_bytes, self.rows = parent.row_shape, parent.row_bytes, rows
        return self

    def __getitem__(self, i: Any) -> np.ndarray:
        picked = self.rows[i]
        flat = np.atleast_1d(picked)
        out = np.empty((flat.size, *self.row_shape), self.dtype)
        if self.row_bytes and flat.size:
            view = out.reshape(flat.size, -1).view(np.uint8)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for k, row in enumerate(flat.tolist()):
                    got = os.preadv(fd, [memoryview(view[k])], self.offset + row * self.row_bytes)
                    if got != self.row_bytes:
                        raise OSError(f"{self.path}: row {row} is truncated")
            finally:
                os.close(fd)
        return out if np.ndim(picked) else out[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[slice(None)]
        return whole if dtype is None else whole.astype(dtype)


class RowWriter:
    """Write ``n`` rows of ``row_shape`` to a new ``.npy`` file in order (rows never written stay zero)."""

    def __init__(self, path: Path, n: int, row_shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        self.path, self.n, self.row_shape, self.dtype = Path(path), n, tuple(row_shape), np.dtype(dtype)
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (n, *row_shape),
        }
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        np.lib.format.write_array_header_1_0(self.file, header)
        self.offset = self.file.tell()
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.file.truncate(self.offset + n * self.row_bytes)  # sparse: unwritten rows read as zeros

    def write(self, index: int, row: np.ndarray) -> None:
        self.file.seek(self.offset + index * self.row_bytes)
        self.file.write(np.ascontiguousarray(row, self.dtype).tobytes())

    def close(self) -> RowFile:
        self.file.close()
        return RowFile(self.path)
