"""On-disk feature cache keyed by (session, station, feature-config hash).

Features of a recording depend only on its IQ and the feature configuration, so they are
computed once; later epochs and later runs read these files instead of the object store.
One file per session and configuration holds the rows of each of its stations.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heimdall.features import FeatureConfig


@dataclass(frozen=True)
class CachedFeatures:
    station_ids: np.ndarray  # (n,) int64
    log_mel: np.ndarray  # (n, C, F) float32
    scalars: np.ndarray  # (n, 4) float32

    def row(self, station_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        hit = np.flatnonzero(self.station_ids == station_id)
        if hit.size == 0:
            return None
        return self.log_mel[hit[0]], self.scalars[hit[0]]


class FeatureCache:
    """Folder `root/{config_hash}/{id[:2]}/{session_id}.npz`; writes are atomic renames."""

    def __init__(self, root: Path, config: FeatureConfig) -> None:
        self.config_hash = config.config_hash()
        self.dir = Path(root) / self.config_hash
        self.hits = 0
        self.misses = 0

    def _path(self, session_id: uuid.UUID) -> Path:
        s = str(session_id)
        return self.dir / s[:2] / f"{s}.npz"

    def load(self, session_id: uuid.UUID, station_ids: list[int]) -> CachedFeatures | None:
        """The cached rows if every requested station is present, else None (recompute)."""
        path = self._path(session_id)
        try:
            with np.load(path, allow_pickle=False) as z:
                cached = CachedFeatures(z["station_ids"], z["log_mel"], z["scalars"])
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        if not set(station_ids) <= set(cached.station_ids.tolist()):
            self.misses += 1
            return None
        self.hits += 1
        return cached

    def save(self, session_id: uuid.UUID, features: CachedFeatures) -> None:
        path = self._path(session_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f, station_ids=features.station_ids, log_mel=features.log_mel, scalars=features.scalars
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
