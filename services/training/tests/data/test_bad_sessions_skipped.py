"""One bad session never aborts a training run: it is skipped, counted and named in a warning."""

from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np
import pytest
from factories import make_session_record

from heimdall.data.arrays import BAD_IQ, BAD_SHAPE, NON_FINITE, load_session_arrays
from heimdall.data.dataset import HeimdallDataset
from heimdall.features import FeatureConfig
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.recordings import write_sessions

LABEL = ["test:unit"]
N_GOOD = 4


@pytest.fixture
def services(tmp_path):
    s = open_services(Settings(data_dir=tmp_path / "hd"))
    yield s
    s.close()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _key(rec, station: int) -> str:
    return f"sessions/{rec.acquisition_task_id}/websdr_{station}.npy"


def _corrupt(kind: str, s, rec) -> None:
    """Spoil one stored object of `rec` after it was written correctly."""
    bucket = s.settings.raw_iq_bucket
    if kind == "garbage":
        s.store.put_bytes(bucket, _key(rec, 2), b"\x93NUMPY garbage")
    elif kind == "nan":
        s.store.put_bytes(bucket, _key(rec, 2), _npy(np.full(512, np.nan, np.complex64)))
    elif kind == "wrong-count":  # a valid array, but not the length its row says
        s.store.put_bytes(bucket, _key(rec, 2), _npy(np.ones(256, np.complex64)))
    elif kind == "missing":
        s.store.delete(bucket, _key(rec, 2))


def _good(n: int = N_GOOD) -> list:
    return [make_session_record(i, n_samples=512) for i in range(n)]


@pytest.mark.parametrize("kind", ["garbage", "nan", "wrong-count", "missing"])
def test_unreadable_iq_session_is_skipped_and_counted(
    services, cache_root, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    bad = make_session_record(7, n_samples=512)
    write_sessions(services.db, services.store, services.settings.raw_iq_bucket, [*_good(), bad])
    _corrupt(kind, services, bad)
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        a = load_session_arrays(services.db, services.store, LABEL, FeatureConfig(), cache_root)
    assert len(a.session_ids) == N_GOOD and bad.id not in a.session_ids
    assert a.skipped == {BAD_IQ: 1}
    named = [r.getMessage() for r in caplog.records if str(bad.id) in r.getMessage()]
    assert named and "station 2" in named[0] and BAD_IQ in named[0]


def test_receivers_of_different_lengths_and_a_session_of_another_length(services, cache_root, caplog) -> None:
    uneven = make_session_record(7, n_samples=512)
    short = make_session_record(8, stations=(1,), n_samples=1024).measurements[0]
    uneven = dataclasses.replace(uneven, measurements=(short, *uneven.measurements[1:]))
    longer = make_session_record(9, n_samples=1024)  # every receiver 1024: a shape the others lack
    write_sessions(services.db, services.store, services.settings.raw_iq_bucket, [*_good(), uneven, longer])
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        a = load_session_arrays(services.db, services.store, LABEL, FeatureConfig(), cache_root)
    assert len(a.session_ids) == N_GOOD
    assert a.skipped == {BAD_IQ: 1, BAD_SHAPE: 1}
    text = caplog.text
    assert f"{uneven.id} ({BAD_IQ}): session {uneven.id}: receivers recorded different lengths" in text
    assert f"{longer.id} ({BAD_SHAPE})" in text


def test_non_finite_power_row_is_skipped(services, cache_root, caplog) -> None:
    recs = [make_session_record(i, with_iq=False) for i in range(N_GOOD)]
    rec = make_session_record(7, with_iq=False)
    inf_row = dataclasses.replace(rec.measurements[0], signal_strength_db=float("inf"))
    bad = dataclasses.replace(rec, measurements=(inf_row, *rec.measurements[1:]))
    write_sessions(services.db, services.store, services.settings.raw_iq_bucket, [*recs, bad])
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        a = load_session_arrays(services.db, services.store, LABEL, FeatureConfig(), cache_root)
    assert len(a.session_ids) == N_GOOD and a.skipped == {NON_FINITE: 1}
    assert f"non-finite features for session {bad.id}, station 1" in caplog.text


def test_training_dataset_loads_around_a_corrupt_session(services, cache_root) -> None:
    bad = make_session_record(20, n_samples=512)
    write_sessions(services.db, services.store, services.settings.raw_iq_bucket, [*_good(8), bad])
    _corrupt("garbage", services, bad)
    ds = HeimdallDataset.from_database(services.db, services.store, LABEL, "train", cache_root=cache_root)
    assert len(ds) > 0 and bad.id not in ds.session_ids
