"""The feature cache is derived data: unreadable entries are misses, killed writers leave no debris."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from heimdall.data.arrays import load_session_arrays
from heimdall.data.feature_cache import STALE_TMP_S, CachedFeatures, FeatureCache
from heimdall.features import FeatureConfig

LABEL = ["sim:nw-italy-v1"]


def _features(n: int = 3) -> CachedFeatures:
    rng = np.random.default_rng(0)
    return CachedFeatures(
        np.arange(1, n + 1, dtype=np.int64),
        rng.standard_normal((n, 4, 5)).astype(np.float32),
        rng.standard_normal((n, 4)).astype(np.float32),
    )


def _corruptions(path: Path) -> dict[str, bytes]:
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2 : len(good) // 2 + 64] = os.urandom(64)
    return {
        "truncated": good[: len(good) // 3],
        "empty": b"",
        "garbage": b"not a zip file at all",
        "flipped": bytes(flipped),
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "flipped"])
def test_unreadable_entry_is_a_miss_then_healed(tmp_path: Path, kind: str) -> None:
    cache = FeatureCache(tmp_path, FeatureConfig())
    sid = uuid.uuid4()
    cache.save(sid, _features())
    path = cache._path(sid)
    path.write_bytes(_corruptions(path)[kind])
    got = cache.load(sid, [1, 2, 3])
    if kind == "flipped" and got is not None:  # the flip may hit only array payload: still well-formed
        assert got.log_mel.shape == (3, 4, 5)
        return
    assert got is None and cache.unreadable == 1 and cache.misses == 1
    cache.save(sid, _features())  # what the loader does after a miss
    healed = cache.load(sid, [1, 2, 3])
    assert healed is not None and np.array_equal(healed.log_mel, _features().log_mel)


def test_wrong_layout_is_unreadable(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, FeatureConfig())
    sid = uuid.uuid4()
    path = cache._path(sid)
    path.parent.mkdir(parents=True)
    np.savez(path, station_ids=np.arange(3), log_mel=np.zeros((2, 4, 5)), scalars=np.zeros((3, 4)))
    assert cache.load(sid, [0]) is None and cache.unreadable == 1


def test_unreadable_entries_are_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = FeatureCache(tmp_path, FeatureConfig())
    ids = [uuid.uuid4() for _ in range(3)]
    for sid in ids:
        cache.save(sid, _features())
        cache._path(sid).write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        assert all(cache.load(sid, [1]) is None for sid in ids)
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and str(cache._path(ids[0])) in warnings[0].getMessage()
    assert cache.unreadable == 3


def test_killed_writers_tmp_files_are_swept(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, FeatureConfig())
    sid = uuid.uuid4()
    cache.save(sid, _features())
    folder = cache._path(sid).parent
    stale, fresh = folder / ".tmp-123-dead.npz", folder / ".tmp-456-live.npz"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - STALE_TMP_S - 60
    os.utime(stale, (old, old))
    FeatureCache(tmp_path, FeatureConfig())  # the next run
    assert not stale.exists(), "a dead writer's temporary file survived"
    assert fresh.exists(), "a live writer's temporary file was removed"
    assert cache.load(sid, [1]) is not None


def test_entries_have_ordinary_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        cache = FeatureCache(tmp_path, FeatureConfig())
        sid = uuid.uuid4()
        cache.save(sid, _features())
    finally:
        os.umask(umask)
    assert cache._path(sid).stat().st_mode & 0o777 == 0o644


def test_training_load_survives_corrupt_cache(sim_services, cache_root) -> None:
    """A truncated cache file no longer crashes loading with BadZipFile: it is recomputed, same numbers."""
    fresh = load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(), cache_root)
    files = sorted(Path(cache_root).rglob("*.npz"))
    assert files
    for path in files[::3]:
        path.write_bytes(path.read_bytes()[:100])
    again = load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(), cache_root)
    np.testing.assert_array_equal(again.spectrogram, fresh.spectrogram)
    np.testing.assert_array_equal(again.scalars, fresh.scalars)
    for path in files[::3]:
        np.load(path, allow_pickle=False).close()  # healed on disk too
