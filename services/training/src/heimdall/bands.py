"""Carrier bands: sessions whose carriers lie within a few percent share path loss and shadowing.

Used by the classical baselines and the radio map alike, so both group 145.5 MHz and 433.5 MHz
sessions the same way (and one band's slight channel offsets never split it).
"""

from __future__ import annotations

import numpy as np

#: carriers closer than this ratio belong to one band (145.5 and 433.5 MHz are two; 145.5 ± 50 kHz one)
BAND_RATIO = 1.1

__all__ = ["BAND_RATIO", "band_centres", "band_index"]


def band_centres(frequency_hz: np.ndarray) -> np.ndarray:
    """One carrier per band found among `frequency_hz` (a band: neighbours within :data:`BAND_RATIO`)."""
    f = np.unique(frequency_hz[np.isfinite(frequency_hz) & (frequency_hz > 0)])
    if f.size == 0:
        return np.array([np.nan])
    starts = np.r_[0, np.flatnonzero(f[1:] / f[:-1] > BAND_RATIO) + 1]
    ends = np.r_[starts[1:], f.size]
    return np.array([np.sqrt(f[a] * f[b - 1]) for a, b in zip(starts, ends, strict=True)])


def band_index(frequency_hz: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The nearest band (in log frequency) of each carrier; unknown carriers go to band 0."""
    if not np.isfinite(centres).all():
        return np.zeros(frequency_hz.shape, np.int64)
    logf = np.log(np.where(np.isfinite(frequency_hz) & (frequency_hz > 0), frequency_hz, centres[0]))
    return np.argmin(np.abs(logf[:, None] - np.log(centres)[None, :]), axis=1)
