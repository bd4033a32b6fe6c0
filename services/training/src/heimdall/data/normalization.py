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
    def fit(cls, spectrogram: np.ndarray, scalars: np.ndarray, mask: np.ndarray) -> NormStats:
        """Per-band and per-scalar mean/std over present receivers of the given (training) sessions."""
        if not mask.any():
            raise DataError(
                "cannot fit normalisation statistics: no receiver is present in the training split"
            )
        present = spectrogram[mask]  # (M, C, F)
        if present.shape[1] > 0:
            spec_mean = present.mean(axis=(0, 2), dtype=np.float64)
            spec_std = present.std(axis=(0, 2), dtype=np.float64)
        else:
            spec_mean = spec_std = np.zeros(0)
        sc = scalars[mask].astype(np.float64)  # (M, S)
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

    def apply(
        self, spectrogram: np.ndarray, scalars: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised copies; unknown scalars (NaN) become 0 (the training mean), absent receivers 0."""
        spec = (spectrogram - self.spec_mean[None, None, :, None]) / self.spec_std[None, None, :, None]
        sc = np.nan_to_num((scalars - self.scalar_mean) / self.scalar_std, nan=0.0)
        spec = np.where(mask[:, :, None, None], spec, 0.0).astype(np.float32)
        sc = np.where(mask[:, :, None], sc, 0.0).astype(np.float32)
        return spec, sc

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).astype(float).tolist() for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NormStats:
        return cls(**{k: np.asarray(d[k], np.float32) for k in cls.__dataclass_fields__})
