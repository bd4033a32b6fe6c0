"""Atomic, idempotent session writes and reads, on SQLite + folder and PostgreSQL + S3."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from factories import make_session_record
from sqlalchemy import func, select

from heimdall.storage.database import open_database
from heimdall.storage.iq import IQDataError, load_iq
from heimdall.storage.objectstore import FileObjectStore, S3ObjectStore
from heimdall.storage.queries import SessionNotFoundError, dataset_labels, get_session, list_sessions
from heimdall.storage.recordings import RecordingWriteError, write_sessions
from heimdall.storage.schema import KnownSource, Measurement, RecordingSession

BUCKET = "heimdall-raw-iq"


@pytest.fixture(params=["embedded", "servers"])
def backends(request: pytest.FixtureRequest, tmp_path):
    if request.param == "embedded":
        db = open_database(f"sqlite:///{tmp_path}/h.db")
        store = FileObjectStore(tmp_path / "objects")
    else:
        db = open_database(request.getfixturevalue("postgres_url"))
        store = S3ObjectStore(endpoint_url=request.getfixturevalue("s3_env"), connect_timeout_s=2)
    bucket = f"raw-{uuid.uuid4().hex[:10]}"
    yield db, store, bucket
    db.dispose()


def _count(db, table) -> int:
    with db.sessions() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_write_then_read_back(backends) -> None:
    db, store, bucket = backends
    records = [make_session_record(i) for i in range(3)]
    assert write_sessions(db, store, bucket, records) == (3, 0)
    got = list_sessions(db, ["test:unit"])
    assert [s.id for s in got] == [r.id for r in records]
    one = get_session(db, records[1].id)
    assert one.source is not None and one.source.latitude == records[1].source.latitude
    assert one.approval_status == "approved" and one.dataset == "test:unit"
    assert [m.station_id for m in one.measurements] == [1, 2, 3]
    m = one.measurements[0]
    assert m.iq_data_location == f"{bucket}/sessions/{records[1].acquisition_task_id}/websdr_1.npy"
    assert m.iq_samples_count == 512 and m.iq_data_format == "npy-complex64"
    assert m.receiver_latitude == 45.02 and not m.moving_receiver  # station position holds
    b, k = m.iq_bucket_key
    iq = load_iq(store, b, k, m.iq_samples_count)
    assert np.array_equal(iq, records[1].measurements[0].iq)
    assert dataset_labels(db) == {"test:unit": 3}


def test_rewrite_is_idempotent(backends) -> None:
    db, store, bucket = backends
    records = [make_session_record(i) for i in range(2)]
    write_sessions(db, store, bucket, records)
    assert write_sessions(db, store, bucket, [*records, make_session_record(5)]) == (1, 2)
    assert _count(db, RecordingSession) == 3
    assert _count(db, Measurement) == 9
    assert len(store.list_keys(bucket, "sessions/")) == 9


def test_failed_transaction_leaves_nothing(backends) -> None:
    db, store, bucket = backends
    good = make_session_record(0)
    write_sessions(db, store, bucket, [good])
    other = make_session_record(1)
    # a second session reusing the first one's measurement keys makes the transaction fail
    dup = dataclasses.replace(make_session_record(2), measurements=other.measurements)
    with pytest.raises(RecordingWriteError, match="nothing kept"):
        write_sessions(db, store, bucket, [other, dup])
    assert _count(db, RecordingSession) == 1
    assert store.list_keys(bucket, "sessions/") == sorted(
        f"sessions/{good.acquisition_task_id}/websdr_{s}.npy" for s in (1, 2, 3)
    )


def test_bad_iq_writes_nothing(backends) -> None:
    db, store, bucket = backends
    rec = make_session_record(0)
    bad_m = dataclasses.replace(rec.measurements[2], iq=rec.measurements[2].iq.astype(np.complex128))
    bad = dataclasses.replace(rec, measurements=(*rec.measurements[:2], bad_m))
    with pytest.raises(IQDataError, match="station 3"):
        write_sessions(db, store, bucket, [make_session_record(1), bad])
    assert _count(db, RecordingSession) == 0 and store.list_keys(bucket) == []


def test_unknown_station_is_refused(backends) -> None:
    db, store, bucket = backends
    with pytest.raises(RecordingWriteError, match=r"unknown station id\(s\) \[42\]"):
        write_sessions(db, store, bucket, [make_session_record(0, stations=(1, 42))])
    assert _count(db, RecordingSession) == 0 and store.list_keys(bucket) == []


def test_power_only_and_moving_receiver(backends) -> None:
    db, store, bucket = backends
    rec = make_session_record(0, with_iq=False)
    moved = dataclasses.replace(rec.measurements[0], receiver_latitude=45.5, receiver_longitude=7.5)
    rec = dataclasses.replace(rec, measurements=(moved, *rec.measurements[1:]))
    write_sessions(db, store, bucket, [rec])
    got = get_session(db, str(rec.id))
    assert got.measurements[0].moving_receiver and got.measurements[0].receiver_latitude == 45.5
    assert all(m.iq_data_location is None and m.iq_bucket_key is None for m in got.measurements)
    assert store.list_keys(bucket) == []


def test_shared_source_written_once(backends) -> None:
    db, store, bucket = backends
    a = make_session_record(0)
    b = dataclasses.replace(make_session_record(1), source=a.source)
    write_sessions(db, store, bucket, [a])
    write_sessions(db, store, bucket, [b])
    assert _count(db, KnownSource) == 1


def test_only_approved_sessions_of_selected_labels(backends) -> None:
    db, store, bucket = backends
    write_sessions(
        db,
        store,
        bucket,
        [
            make_session_record(0),
            dataclasses.replace(make_session_record(1), approval_status="pending"),
            make_session_record(2, dataset="other"),
        ],
    )
    assert len(list_sessions(db, ["test:unit"])) == 1
    assert len(list_sessions(db, ["test:unit", "other"])) == 2
    assert list_sessions(db, ["nothing"]) == []


def test_unknown_session_id(backends) -> None:
    db, _, _ = backends
    with pytest.raises(SessionNotFoundError, match="no recording session"):
        get_session(db, uuid.uuid4())
    with pytest.raises(SessionNotFoundError, match="not a session id"):
        get_session(db, "12; DROP TABLE measurements")


def test_task_id_of_another_session_is_refused(backends) -> None:
    db, store, bucket = backends
    good = make_session_record(0)
    write_sessions(db, store, bucket, [good])
    thief = dataclasses.replace(make_session_record(1), acquisition_task_id=good.acquisition_task_id)
    with pytest.raises(RecordingWriteError, match="already belongs to session"):
        write_sessions(db, store, bucket, [thief])
    twins = [make_session_record(2), dataclasses.replace(make_session_record(3), acquisition_task_id="same")]
    twins[0] = dataclasses.replace(twins[0], acquisition_task_id="same")
    with pytest.raises(RecordingWriteError, match="duplicate acquisition task ids"):
        write_sessions(db, store, bucket, twins)
    got = load_iq(store, bucket, f"sessions/{good.acquisition_task_id}/websdr_1.npy", 512)
    assert np.array_equal(got, good.measurements[0].iq)
    assert _count(db, RecordingSession) == 1
