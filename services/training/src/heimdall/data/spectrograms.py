"""A load's spectrograms: where each session's come from (feature cache or IQ) and where they go.

:func:`features_for` gives one session's features from the feature cache, or computes them from its
IQ objects (and caches them); :class:`Spectrograms` receives them session by session, in memory or, for
a disk-backed load, in a :class:`~heimdall.data.row_file.RowFile` (never all held in memory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heimdall.data.feature_cache import CachedFeatures, FeatureCache
from heimdall.data.row_file import RowFile, RowWriter
from heimdall.data.splits import DatasetError
from heimdall.features import FeatureConfig, extract_features_batch
from heimdall.storage.iq import load_iq
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.queries import StoredSession

SPECTROGRAM_FILE = "spectrogram.npy"  # the RowFile of a disk-backed load (array_store)


def features_for(
    session: StoredSession, store: ObjectStore, cache: FeatureCache, config: FeatureConfig, variant: str
) -> CachedFeatures | None:
    """Features of a session's IQ rows, from the cache or computed (and cached); None if no IQ."""
    rows = [m for m in session.measurements if m.iq_bucket_key is not None]
    if not rows:
        return None
    ids = [m.station_id for m in rows]
    cached = cache.load(session.id, ids, variant)
    if cached is not None:
        return cached
    counts = {m.iq_samples_count for m in rows}
    if len(counts) != 1:
        raise DatasetError(f"session {session.id}: receivers recorded different lengths {sorted(counts)}")
    iq = np.stack(
        [
            load_iq(
                store,
                *m.iq_bucket_key,
                m.iq_samples_count,
                context=f"session {session.id}, station {m.station_id}",
            )  # type: ignore[misc]
            for m in rows
        ]
    )
    log_mel, _, scalars = extract_features_batch(iq, config)
    feats = CachedFeatures(np.asarray(ids, np.int64), log_mel.astype(np.float32), scalars.astype(np.float32))
    cache.save(session.id, feats, variant)
    return feats


class Spectrograms:
    """Where a load puts each session's spectrograms: memory, or a :class:`RowFile` in ``spill``."""

    def __init__(self, bound: int, row_shape: tuple[int, ...], spill: Path | None) -> None:
        self.row_shape = row_shape
        self.writer = RowWriter(spill / SPECTROGRAM_FILE, bound, row_shape) if spill is not None else None
        self.memory = np.zeros((bound, *row_shape), np.float32) if spill is None else None

    def block(self) -> np.ndarray:
        return np.zeros(self.row_shape, np.float32)

    def put(self, i: int, block: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.write(i, block)
        else:
            self.memory[i] = block  # type: ignore[index]

    def take(self, sel: np.ndarray) -> np.ndarray | RowFile:
        if self.writer is not None:
            return self.writer.close().take(sel)
        return self.memory[sel]  # type: ignore[index]
