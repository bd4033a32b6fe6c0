"""On-disk feature cache keyed by (session, station, feature-config hash).

Features of a recording depend only on its IQ and the feature configuration, so they are
computed once; later epochs and later runs read these files instead of the object store.
One file per session and configuration holds the rows of each of its stations.
The cache is derived data, so it heals itself: an entry that cannot be read (truncated, corrupted,
wrong shapes) is a miss that is recomputed and overwritten, and temporary files left by a killed
writer are removed on the next run.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heimdall.errors import UserError
from heimdall.features import FeatureConfig

log = logging.getLogger("heimdall.data")

STALE_TMP_S = 3600.0  # a temporary file this old belongs to a writer that died
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


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
    """Folder `root/{config_hash}/{id[:2]}/{session_id}[.{variant}].npz`; writes are atomic renames.

    `variant` tells apart sessions that share an id but not their recordings: simulated session ids
    derive from the scenario's name, seed and index, so two stores (or one store rebuilt) can hold the
    same id simulated from two contents; their entries are keyed by the scenario's content hash too.
    """

    def __init__(self, root: Path, config: FeatureConfig) -> None:
        self.config_hash = config.config_hash()
        self.dir = Path(root) / self.config_hash
        self.hits = 0
        self.misses = 0
        self.unreadable = 0
        self._sweep_stale_tmp()

    def _sweep_stale_tmp(self) -> None:
        """Remove `.tmp-*` files of writers that were killed before their rename."""
        if not self.dir.is_dir():
            return
        cutoff = time.time() - STALE_TMP_S
        for tmp in self.dir.glob("*/.tmp-*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                pass  # another process removed or renamed it meanwhile

    def _path(self, session_id: uuid.UUID, variant: str = "") -> Path:
        s = str(session_id)
        return self.dir / s[:2] / (f"{s}.{variant[:16]}.npz" if variant else f"{s}.npz")

    def load(self, session_id: uuid.UUID, station_ids: list[int], variant: str = "") -> CachedFeatures | None:
        """The cached rows if every requested station is present, else None (recompute).

        An unreadable entry is a miss too: it is logged once per cache and overwritten on save.
        """
        path = self._path(session_id, variant)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                cached = CachedFeatures(z["station_ids"], z["log_mel"], z["scalars"])
            _check_shapes(cached)
        except _UNREADABLE as exc:
            self.misses += 1
            self.unreadable += 1
            if self.unreadable == 1:
                log.warning(
                    "feature cache entry %s is unreadable (%s); recomputing it (further unreadable "
                    "entries are recomputed without a message)",
                    path,
                    type(exc).__name__,
                )
            return None
        if not set(station_ids) <= set(cached.station_ids.tolist()):
            self.misses += 1
            return None
        self.hits += 1
        return cached

    def save(self, session_id: uuid.UUID, features: CachedFeatures, variant: str = "") -> None:
        """Write one entry atomically; an OS error (unwritable folder, disk full) is a UserError naming it."""
        path = self._path(session_id, variant)
        # open(…, "xb") gives the file the ordinary mode (0666 & ~umask), unlike mkstemp's 0600
        tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                np.savez(
                    f, station_ids=features.station_ids, log_mel=features.log_mel, scalars=features.scalars
                )
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise UserError(
                    f"cannot write the feature cache {path} (under HEIMDALL_DATA_DIR): {exc.strerror or exc}"
                ) from None
            raise


def _check_shapes(cached: CachedFeatures) -> None:
    """A readable file with the wrong layout (another version, a bit flip in a header) is unreadable."""
    n = cached.station_ids.shape[0] if cached.station_ids.ndim == 1 else -1
    if (
        n < 0
        or cached.log_mel.ndim != 3
        or cached.log_mel.shape[0] != n
        or cached.scalars.ndim != 2
        or cached.scalars.shape[0] != n
        or cached.station_ids.dtype.kind not in "iu"
    ):
        raise ValueError("feature cache entry has the wrong layout")
