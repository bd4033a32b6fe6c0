"""Feature standardisation with statistics of the training split only.

Absolute level is the location signal, so no recording is normalised by its own statistics;
one affine map per band and per scalar, fitted on training sessions, travels with the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.errors import DataError

_MIN_STD = 1e-3


@dataclass(frozen=True)
class NormStats:
    spec_mean: np.ndarray  # (C,)
    spec_std: np.ndarray  # (C,)
    scalar_mean: np.ndarray  # (S,)
    scalar_std: np.ndarray  # (S,)

    @classmethod
    def fit(
        cls, spectrogram: np.ndarray, scalars: np.ndarray, mask: np.ndarray, rows: np.ndarray | None = None
    ) -> NormStats:
        """Per-band and per-scalar mean/std over present receivers of the (training) sessions ``rows``
        (default: all). The spectrogram is read FIT_CHUNK sessions at a time, so a disk-backed one is
        never copied whole into memory."""
        rows = np.arange(mask.shape[0]) if rows is None else np.asarray(rows)
        present = mask[rows]
        if not present.any():
            raise DataError(
                "cannot fit normalisation statistics: no receiver is present in the training split"
            )
        spec_mean, spec_std = _band_stats(spectrogram, mask, rows)
        sc = scalars[rows][present].astype(np.float64)  # (M, S)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(sc)
            cnt = finite.sum(axis=0)
            sc0 = np.where(finite, sc, 0.0)
            scalar_mean = np.where(cnt > 0, sc0.sum(axis=0) / np.maximum(cnt, 1), 0.0)
            var = np.where(finite, (sc0 - scalar_mean) ** 2, 0.0).sum(axis=0) / np.maximum(cnt, 1)
        return cls(
            spec_mean.astype(np.float32),
            np.maximum(spec_std, _MIN_STD).astype(np.float32),
            scalar_mean.astype(np.float32),
            np.maximum(np.sqrt(var), _MIN_STD).astype(np.float32),
        )

    def apply_spectrogram(self, spectrogram: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The standardised spectrogram part of :meth:`apply` (absent receivers 0)."""
        spec = (spectrogram - self.spec_mean[None, None, :, None]) / self.spec_std[None, None, :, None]
        return np.where(mask[:, :, None, None], spec, 0.0).astype(np.float32)

    def apply(
        self, spectrogram: np.ndarray, scalars: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised copies; unknown scalars (NaN) become 0 (the training mean), absent receivers 0."""
        return self.apply_spectrogram(spectrogram, mask), self.apply_scalars(scalars, mask)

    def apply_scalars(self, scalars: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The standardised scalar part of :meth:`apply` (unknown and absent 0)."""
        sc = np.nan_to_num((scalars - self.scalar_mean) / self.scalar_std, nan=0.0)
        return np.where(mask[:, :, None], sc, 0.0).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).astype(float).tolist() for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NormStats:
        return cls(**{k: np.asarray(d[k], np.float32) for k in cls.__dataclass_fields__})


FIT_CHUNK = 512  # sessions of spectrogram read at once while fitting


def _band_stats(spectrogram: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per band over present receivers and frames: two passes over chunks."""
    if spectrogram.shape[2] == 0:
        return np.zeros(0), np.zeros(0)
    chunks = [rows[a : a + FIT_CHUNK] for a in range(0, rows.size, FIT_CHUNK)]

    def present(chunk: np.ndarray) -> np.ndarray:
        return np.asarray(spectrogram[chunk])[mask[chunk]]  # (M, C, F)

    count = sum(int(mask[c].sum()) for c in chunks) * spectrogram.shape[3]
    total = sum(present(c).sum(axis=(0, 2), dtype=np.float64) for c in chunks)
    mean = total / count
    dev = sum((((present(c) - mean[None, :, None]) ** 2).sum(axis=(0, 2))) for c in chunks)
    return mean, np.sqrt(dev / count)
