"""SigMF interchange: export → validate → import round trips, foreign files, and refused inputs."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import sigmf
from factories import make_session_record
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.errors import UserError
from heimdall.ingest import sigmf_read, sigmf_store
from heimdall.ingest.sigmf import (
    DEFAULT_DATASET,
    EXTENSION,
    SESSION_ID,
    STATION_ID,
    TASK_ID,
    TRUTH,
    InterchangeError,
    Truth,
    export_session_sigmf,
    import_sigmf,
)
from heimdall.ingest.simulated import session_record
from heimdall.settings import Settings
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import simulate_sessions
from heimdall.storage.database import Database, open_database
from heimdall.storage.iq import load_iq
from heimdall.storage.objectstore import FileObjectStore, ObjectStore, S3ObjectStore
from heimdall.storage.queries import SessionNotFoundError, StoredSession, get_session, list_sessions
from heimdall.storage.recordings import RecordingWriteError, write_sessions
from heimdall.storage.schema import RecordingSession, WebSDRStation

BUCKET = "heimdall-raw-iq"
TORINO = (45.044, 7.672)  # station 3 of the seeded network
FAR = (46.5, 11.35)  # no seeded station within 200 m
SID = "6f1e0a52-3c1b-4f7e-8f55-2d9f0b6c1a10"
MEASUREMENT_FIELDS = (
    "id",
    "timestamp",
    "station_name",
    "frequency_hz",
    "signal_strength_db",
    "snr_db",
    "frequency_offset_hz",
    "iq_data_format",
    "iq_sample_rate",
    "iq_samples_count",
    "duration_seconds",
    "receiver_latitude",
    "receiver_longitude",
    "receiver_altitude",
    "moving_receiver",
)


def _embedded(root: Path) -> tuple[Database, ObjectStore]:
    return open_database(f"sqlite:///{root}/h.db"), FileObjectStore(root / "objects")


def _count(db: Database, table: type) -> int:
    with db.sessions() as q:
        return int(q.scalar(select(func.count()).select_from(table)))


def _iq_bytes(store: ObjectStore, session: StoredSession) -> list[bytes]:
    out = []
    for m in session.measurements:
        bucket, key = m.iq_bucket_key  # type: ignore[misc]
        out.append(load_iq(store, bucket, key, m.iq_samples_count).tobytes())
    return out


def _assert_same(a: StoredSession, store_a: ObjectStore, b: StoredSession, store_b: ObjectStore) -> None:
    for f in ("id", "acquisition_task_id", "dataset", "session_start", "duration_seconds", "notes", "source"):
        assert getattr(b, f) == getattr(a, f), f
    assert b.approval_status == "approved" and b.source is not None
    assert [m.station_id for m in b.measurements] == [m.station_id for m in a.measurements]
    for ma, mb in zip(a.measurements, b.measurements, strict=True):
        for f in MEASUREMENT_FIELDS:
            assert getattr(mb, f) == getattr(ma, f), (ma.station_id, f)
    assert _iq_bytes(store_b, b) == _iq_bytes(store_a, a)


def _check_valid_sigmf(meta: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undeclared extension namespace would warn
        rec = sigmf.fromfile(meta)  # also verifies core:sha512 against the data file
        rec.validate()
    g = rec.get_global_info()
    assert g[sigmf.DATATYPE_KEY] == "cf32_le" and g[sigmf.EXTENSIONS_KEY] == [EXTENSION]
    assert g[sigmf.GEOLOCATION_KEY]["type"] == "Point" and len(g[sigmf.GEOLOCATION_KEY]["coordinates"]) == 3
    capture = rec.get_captures()[0]
    assert {sigmf.FREQUENCY_KEY, sigmf.DATETIME_KEY} <= set(capture)
    return g


def _round_trip(src, dst, records, tmp_path: Path) -> None:
    (db_a, store_a, bucket_a), (db_b, store_b, bucket_b) = src, dst
    assert write_sessions(db_a, store_a, bucket_a, records) == (len(records), 0)
    metas: list[Path] = []
    for r in records:
        exported = export_session_sigmf(db_a, store_a, r.id, tmp_path / "out")
        assert [p.name for p in exported] == [f"{r.id}_{m.station_id}.sigmf-meta" for m in r.measurements]
        assert all(p.with_suffix(".sigmf-data").is_file() for p in exported)
        for p in exported:
            assert _check_valid_sigmf(p)[SESSION_ID] == str(r.id)
        metas += exported
    result = import_sigmf(db_b, store_b, bucket_b, metas)
    assert (result.written, result.already_present, result.new_stations) == (len(records), 0, ())
    for r in records:
        _assert_same(get_session(db_a, r.id), store_a, get_session(db_b, r.id), store_b)
    again = import_sigmf(db_b, store_b, bucket_b, [tmp_path / "out"])  # a folder works too
    assert (again.written, again.already_present) == (0, len(records))


def test_simulated_round_trip_embedded(tmp_path: Path) -> None:
    spec = load_scenario("nw-italy-v1")
    records = [session_record(s, spec.name, 1) for s in simulate_sessions(spec, 2, seed=1)]
    db_a, store_a = _embedded(tmp_path / "a")
    db_b, store_b = _embedded(tmp_path / "b")
    _round_trip((db_a, store_a, BUCKET), (db_b, store_b, BUCKET), records, tmp_path)
    assert _count(db_b, WebSDRStation) == _count(db_a, WebSDRStation)  # every receiver matched a station


@pytest.mark.postgres
@pytest.mark.s3
def test_round_trip_postgres_s3(make_postgres_database, s3_env: str, tmp_path: Path) -> None:
    moving = make_session_record(1)
    m0 = dataclasses.replace(moving.measurements[0], receiver_latitude=45.1, receiver_longitude=7.5)
    records = [
        make_session_record(0),
        dataclasses.replace(moving, measurements=(m0, *moving.measurements[1:])),
    ]
    store = S3ObjectStore(endpoint_url=s3_env, connect_timeout_s=2)
    db_a, db_b = open_database(make_postgres_database()), open_database(make_postgres_database())
    try:
        src, dst = (db_a, store, f"raw-{uuid.uuid4().hex[:8]}"), (db_b, store, f"raw-{uuid.uuid4().hex[:8]}")
        _round_trip(src, dst, records, tmp_path)
        assert get_session(db_b, records[1].id).measurements[0].moving_receiver
    finally:
        db_a.dispose()
        db_b.dispose()


# --------------------------------------------------------------------------- foreign recordings


def _iq(seed: int, n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64) * 1e-3


def _foreign(
    folder: Path,
    name: str,
    position: tuple[float, float] = TORINO,
    *,
    iq: np.ndarray | None = None,
    data: bytes | None = None,
    datatype: str = "cf32_le",
    rate: float | str = 12_500.0,
    extra: dict | None = None,
    capture: dict | None = None,
    annotations: list | None = None,
) -> Path:
    """A recording as another tool would write it: SigMF core only unless `extra` adds global keys
    (`capture` keys of the one capture segment, `annotations` the annotation list)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = data if data is not None else (iq if iq is not None else _iq(len(name))).astype("<c8").tobytes()
    (folder / f"{name}.sigmf-data").write_bytes(payload)
    meta = {
        "global": {
            "core:datatype": datatype,
            "core:sample_rate": rate,
            "core:version": "1.2.0",
            "core:hw": f"rx {name}",
            "core:geolocation": {"type": "Point", "coordinates": [position[1], position[0], 250.0]},
            **(extra or {}),
        },
        "captures": [
            {
                "core:sample_start": 0,
                "core:frequency": 145.5e6,
                "core:datetime": "2026-02-01T10:00:00.250Z",
                **(capture or {}),
            }
        ],
        "annotations": annotations or [],
    }
    meta_path = folder / f"{name}.sigmf-meta"
    meta_path.write_text(json.dumps(meta))
    return meta_path


@pytest.fixture
def target(tmp_path: Path):
    db, store = _embedded(tmp_path / "target")
    yield db, store
    db.dispose()


def _nothing_written(db: Database, store: ObjectStore) -> None:
    assert _count(db, RecordingSession) == 0
    assert _count(db, WebSDRStation) == 7  # only the seeded network
    assert store.list_keys(BUCKET) == []


def test_foreign_files_form_one_session_matched_by_position(target, tmp_path: Path) -> None:
    db, store = target
    near_torino = (TORINO[0] + 0.0009, TORINO[1])  # ~100 m north of the Torino station
    paths = [_foreign(tmp_path / "in", "a", near_torino), _foreign(tmp_path / "in", "b", FAR)]
    truth = Truth(45.1, 7.7, error_margin_meters=30.0, power_dbm=37.0)
    result = import_sigmf(db, store, BUCKET, [p.with_suffix("") for p in paths], truth=truth)  # base names
    assert (result.written, result.new_stations, result.without_truth) == (1, ("rx b",), ())
    (record,) = result.records
    stored = get_session(db, record.id)
    assert stored.dataset == DEFAULT_DATASET and stored.approval_status == "approved"
    assert (stored.source.latitude, stored.source.error_margin_meters) == (45.1, 30.0)
    torino, new = stored.measurements
    assert torino.station_id == 3 and torino.moving_receiver  # its own position is kept
    assert new.station_id == 8 and not new.moving_receiver and new.receiver_latitude == FAR[0]
    assert np.array_equal(_iq_bytes(store, stored)[0], _iq(1).tobytes())
    again = import_sigmf(db, store, BUCKET, [p.with_suffix(".sigmf-data") for p in paths], truth=truth)
    assert (again.written, again.already_present, again.new_stations) == (0, 1, ())
    assert again.records[0].id == record.id  # content-addressed id: re-imports are idempotent
    assert _count(db, WebSDRStation) == 8


def test_truth_from_metadata_and_missing_truth_is_pending(target, tmp_path: Path) -> None:
    db, store = target
    truth = {
        "latitude": 45.2,
        "longitude": 7.8,
        "altitude_m": None,
        "error_margin_meters": 10.0,
        "power_dbm": 30.0,
    }
    with_truth = _foreign(tmp_path / "t", "t", extra={TRUTH: truth, SESSION_ID: str(uuid.uuid4())})
    without = _foreign(tmp_path / "u", "u")
    result = import_sigmf(db, store, BUCKET, [with_truth, without], dataset="field:2026")
    labelled, unlabelled = sorted(result.records, key=lambda r: r.source is None)
    assert labelled.approval_status == "approved" and labelled.source.power_dbm == 30.0
    assert unlabelled.approval_status == "pending" and result.without_truth == (unlabelled.id,)
    assert {r.dataset for r in result.records} == {"field:2026"}
    pending = import_sigmf(
        db, store, BUCKET, [_foreign(tmp_path / "v", "v")], truth=Truth(45, 7), approval="pending"
    )
    assert pending.records[0].approval_status == "pending" and pending.records[0].source is not None


def test_fixed_point_samples_are_scaled_to_complex64(target, tmp_path: Path) -> None:
    db, store = target
    ints = np.array([[1000, -2000], [16384, -32768], [7, 9]] * 50, dtype="<i2")
    meta = _foreign(tmp_path, "ci16", data=ints.tobytes(), datatype="ci16_le")
    (record,) = import_sigmf(db, store, BUCKET, [meta], truth=Truth(45, 7)).records
    iq = record.measurements[0].iq
    assert iq.dtype == np.complex64 and iq.size == 150
    np.testing.assert_allclose(iq[:3], (ints[:3, 0] + 1j * ints[:3, 1]) / 32768.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: [
                _foreign(d, "x", extra={SESSION_ID: SID, TRUTH: {"latitude": 45, "longitude": 7}}),
                _foreign(d, "y", FAR, extra={SESSION_ID: SID, TRUTH: {"latitude": 45, "longitude": 8}}),
            ],
            "heimdall:truth differs between",
        ),
        (
            lambda d: [_foreign(d, "x", rate=12_500.0), _foreign(d, "y", FAR, rate=25_000.0)],
            "sample rate differs",
        ),
        (
            lambda d: [_foreign(d, "x", data=np.ones(64, "<f4").tobytes(), datatype="rf32_le")],
            "'rf32_le' is not sup",
        ),
        (lambda d: [_foreign(d, "x", iq=np.full(64, np.nan, np.complex64))], "NaN or Inf"),
        (lambda d: [_foreign(d, "x", iq=np.zeros(64, np.complex64))], "all zeros"),
        (lambda d: [_foreign(d, "x", rate="fast")], "invalid SigMF metadata at global/core:sample_rate"),
        (lambda d: [_foreign(d, "x", extra={"core:sample_rate": None})], "invalid SigMF metadata"),
        (lambda d: [_foreign(d, "x", data=b"")], "holds no samples"),
        (
            lambda d: [_foreign(d, "x", extra={STATION_ID: 3}), _foreign(d, "y", extra={STATION_ID: 3})],
            "both",
        ),
        (lambda d: [_foreign(d, "x", extra={SESSION_ID: "not-a-uuid"})], "is not a UUID"),
        (lambda d: [_foreign(d, "x", extra={TRUTH: {"latitude": 45}})], "longitude is missing"),
        (lambda d: [_foreign(d, "x", extra={"heimdall:snr_db": "loud"})], "heimdall:snr_db must be a finite"),
        (
            lambda d: [_foreign(d, "x", data=_iq(1).astype("<c8").tobytes() + b"\0" * 7)],
            r"x\.sigmf-data is 2055 bytes, not a whole number of cf32_le samples \(8 bytes each\)",
        ),
        (
            lambda d: [_foreign(d, "x", data=np.ones(301, "<i2").tobytes(), datatype="ci16_le")],
            "is 602 bytes, not a whole number of ci16_le samples",
        ),
        (
            lambda d: [_foreign(d, "x", capture={"core:sample_start": 10**12})],
            "capture 0 starts at sample 1000000000000 but the data file holds only 256",
        ),
        (
            lambda d: [
                _foreign(d, "x", annotations=[{"core:sample_start": 200, "core:sample_count": 2**40}])
            ],
            r"annotation 0 covers samples \[200, 1099511627976\) but the data file holds samples \[0, 256\)",
        ),
        (
            lambda d: [
                _foreign(d, "x", annotations=[{"core:sample_start": 5}], extra={"core:offset": 10}),
            ],
            r"annotation 0 covers samples \[5, 5\) but the data file holds samples \[10, 266\)",
        ),
        (
            lambda d: [_foreign(d, "x", annotations=[{"core:sample_start": -1}])],
            "invalid SigMF metadata at annotations/0/core:sample_start",
        ),
        (
            lambda d: [
                _foreign(d, "x", extra={SESSION_ID: SID}),
                _foreign(d, "y", FAR, iq=_iq(2, 512), extra={SESSION_ID: SID}),
            ],
            r"its recordings differ in length: .*x\.sigmf-meta \(256 samples\), .*y\.sigmf-meta \(512",
        ),
        (
            lambda d: [_foreign(d, "x", extra={"core:dataset": "../../etc/passwd"})],
            "core:dataset: non-conforming or metadata-only datasets are not supported",
        ),
        (
            lambda d: [_foreign(d, "x", capture={"core:header_bytes": 16})],
            "core:header_bytes: non-conforming",
        ),
        (
            lambda d: [_write_meta(_foreign(d, "x"), b'{"global": {"core:datatype": "cf32_le",')],
            "metadata is not valid JSON: Expecting",
        ),
        (lambda d: [_write_meta(_foreign(d, "x"), b"\xff\xfe{}")], "metadata is not UTF-8 text"),
        (lambda d: [_write_meta(_foreign(d, "x"), b"[1, 2]")], "metadata must be a JSON object, got list"),
        (
            lambda d: [
                _write_meta(_foreign(d, "x"), b'{"global": {"core:sample_rate": ' + b"9" * 5000 + b"}}")
            ],
            "metadata is not valid JSON: Exceeds the limit",
        ),
        (
            lambda d: [
                _foreign(
                    d,
                    "x",
                    extra={"core:geolocation": {"type": "Point", "coordinates": [7.6, 45.0, math.nan]}},
                )
            ],
            "core:geolocation altitude nan is not a finite number",
        ),
        (lambda d: [_foreign(d, "x", rate=5e-324)], "core:sample_rate 5e-324 is too small"),
    ],
    ids=[
        "truth-differs",
        "rate",
        "datatype",
        "nonfinite",
        "zeros",
        "schema",
        "null-rate",
        "empty",
        "dup-station",
        "sid",
        "truth",
        "snr",
        "size-not-samples",
        "size-not-samples-ci16",
        "capture-index",
        "annotation-index",
        "annotation-before-offset",
        "annotation-negative",
        "lengths-differ",
        "ncd-dataset",
        "ncd-header-bytes",
        "truncated-json",
        "not-utf8",
        "not-object",
        "huge-integer",
        "altitude-nan",
        "rate-tiny",
    ],
)
def test_bad_recordings_are_refused_naming_the_file(target, tmp_path: Path, make, message: str) -> None:
    db, store = target
    paths = make(tmp_path / "in")
    with pytest.raises(InterchangeError, match=message) as err:
        import_sigmf(db, store, BUCKET, paths)
    assert str(paths[-1].parent) in str(err.value)
    _nothing_written(db, store)


def _write_meta(meta: Path, content: bytes) -> Path:
    meta.write_bytes(content)
    return meta


def test_files_over_the_size_cap_are_refused_before_reading(
    target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, store = target
    meta = _foreign(tmp_path, "big", iq=_iq(1, 1000))  # 8000 bytes of data, ~400 of metadata
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    with pytest.raises(
        InterchangeError,
        match=r"big\.sigmf-meta: the data file big\.sigmf-data is 8000 bytes, over the import "
        r"size cap of 4096 bytes \(set HEIMDALL_MAX_IMPORT_BYTES",
    ):
        import_sigmf(db, store, BUCKET, [meta], max_bytes=4096)
    with pytest.raises(
        InterchangeError, match=r"the metadata file is \d+ bytes, over the import size cap of 100"
    ):
        import_sigmf(db, store, BUCKET, [meta], max_bytes=100)
    assert read == []  # refused from stat alone: neither file was read
    monkeypatch.undo()
    monkeypatch.setenv("HEIMDALL_MAX_IMPORT_BYTES", "4096")  # the setting is the default cap
    with pytest.raises(InterchangeError, match="over the import size cap of 4096 bytes"):
        import_sigmf(db, store, BUCKET, [meta])
    assert Settings().max_import_bytes == 4096
    monkeypatch.delenv("HEIMDALL_MAX_IMPORT_BYTES")
    assert Settings().max_import_bytes == 2 * 1024**3
    _nothing_written(db, store)
    assert import_sigmf(db, store, BUCKET, [meta], truth=Truth(45, 7)).written == 1


def test_missing_files_and_empty_input(target, tmp_path: Path) -> None:
    db, store = target
    meta = _foreign(tmp_path, "gone")
    data = meta.with_suffix(".sigmf-data")
    data.unlink()
    with pytest.raises(
        InterchangeError, match=r"gone\.sigmf-meta: its data file .*gone\.sigmf-data is missing"
    ):
        import_sigmf(db, store, BUCKET, [meta])
    with pytest.raises(InterchangeError, match=r"nometa\.sigmf-meta: metadata file not found"):
        import_sigmf(db, store, BUCKET, [tmp_path / "nometa.sigmf-data"])
    (tmp_path / "empty").mkdir()
    for paths in ([], [tmp_path / "empty"]):
        with pytest.raises(InterchangeError, match="no SigMF recordings given"):
            import_sigmf(db, store, BUCKET, paths)
    _nothing_written(db, store)


def test_corrupted_data_fails_the_checksum(target, tmp_path: Path) -> None:
    db, store = target
    out = tmp_path / "out"
    record = make_session_record(0)
    db_a, store_a = _embedded(tmp_path / "a")
    write_sessions(db_a, store_a, BUCKET, [record])
    meta = export_session_sigmf(db_a, store_a, record.id, out)[0]
    data = meta.with_suffix(".sigmf-data")
    data.write_bytes(data.read_bytes()[:-8] + np.complex64(1 + 1j).tobytes())
    with pytest.raises(InterchangeError, match="hash does not match"):
        import_sigmf(db, store, BUCKET, [out])
    _nothing_written(db, store)


def test_truth_override_needs_exactly_one_session(target, tmp_path: Path) -> None:
    db, store = target
    a = _foreign(tmp_path, "a", extra={SESSION_ID: str(uuid.uuid4())})
    b = _foreign(tmp_path, "b", extra={SESSION_ID: str(uuid.uuid4())})
    with pytest.raises(InterchangeError, match="describe one session but the files hold 2"):
        import_sigmf(db, store, BUCKET, [a, b], truth=Truth(45, 7))
    _nothing_written(db, store)


def test_failed_write_removes_the_stations_it_added(target, tmp_path: Path) -> None:
    db, store = target
    taken = make_session_record(0)
    write_sessions(db, store, BUCKET, [taken])
    meta = _foreign(tmp_path, "clash", FAR, extra={TASK_ID: taken.acquisition_task_id})
    with pytest.raises(RecordingWriteError, match="already belongs to session"):
        import_sigmf(db, store, BUCKET, [meta], truth=Truth(45, 7))
    assert _count(db, WebSDRStation) == 7 and _count(db, RecordingSession) == 1


# --------------------------------------------------------------------------- export failures


def test_export_unknown_session_and_missing_iq(tmp_path: Path) -> None:
    db, store = _embedded(tmp_path / "a")
    with pytest.raises(SessionNotFoundError, match="no recording session with id") as unknown:
        export_session_sigmf(db, store, uuid.uuid4(), tmp_path / "out")
    assert isinstance(unknown.value, UserError) and not isinstance(unknown.value, InterchangeError)
    record = make_session_record(0)
    write_sessions(db, store, BUCKET, [record])
    store.delete(BUCKET, f"sessions/{record.acquisition_task_id}/websdr_3.npy")
    with pytest.raises(RuntimeError, match="IQ object missing"):
        export_session_sigmf(db, store, record.id, tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    power_only = make_session_record(1, with_iq=False)
    write_sessions(db, store, BUCKET, [power_only])
    with pytest.raises(InterchangeError, match="no IQ recordings"):
        export_session_sigmf(db, store, power_only.id, tmp_path / "out")


# --------------------------------------------------------------------------- command line


def test_cli_export_then_import_into_another_data_dir(
    embedded_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["simulate", "--sessions", "2", "--seed", "3", "--no-progress"]).exit_code == 0
    db = open_database(Settings().resolved_database_url)
    first = list_sessions(db, ["sim:nw-italy-v1"])[0]
    db.dispose()
    out = tmp_path / "sigmf"
    res = runner.invoke(app, ["export", "sigmf", str(first.id), str(out), "--author", "ci"])
    assert res.exit_code == 0, res.output
    assert f"{len(first.measurements)} SigMF recording(s)" in res.output
    metas = sorted(out.glob("*.sigmf-meta"))
    assert len(metas) == len(first.measurements)
    assert _check_valid_sigmf(metas[0])[sigmf.AUTHOR_KEY] == "ci"

    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(tmp_path / "second"))
    res = runner.invoke(app, ["import", "sigmf", str(out), "--dataset", "copy"])
    assert res.exit_code == 0, res.output
    assert "imported 1 session(s)" in res.output and "1 written, 0 already present" in res.output
    db = open_database(Settings().resolved_database_url)
    (copy,) = list_sessions(db, ["copy"])
    assert copy.id == first.id and len(copy.measurements) == len(first.measurements)
    assert (copy.source.latitude, copy.source.longitude) == (first.source.latitude, first.source.longitude)
    assert [m.station_id for m in copy.measurements] == [m.station_id for m in first.measurements]
    assert _count(db, RecordingSession) == 1
    db.dispose()

    res = runner.invoke(app, ["import", "sigmf", str(_foreign(tmp_path / "f", "f"))])
    assert res.exit_code == 0 and "stored as 'pending'" in res.output
    truth = ["--truth-lat", "45.1", "--truth-lon", "7.7", "--truth-error-m", "20", "--truth-power-dbm", "30"]
    res = runner.invoke(app, ["import", "sigmf", str(_foreign(tmp_path / "g", "g", FAR)), *truth])
    assert res.exit_code == 0 and "approved" in res.output and "new station(s): rx g" in res.output
    res = runner.invoke(app, ["import", "sigmf", str(tmp_path / "f"), "--truth-lat", "45"])
    assert res.exit_code == 2 and "give both --truth-lat and --truth-lon" in res.output
    res = runner.invoke(app, ["export", "sigmf", str(uuid.uuid4()), str(tmp_path / "x")])
    assert res.exit_code == 2 and "no recording session with id" in res.output
    for group in ("import", "export"):
        res = runner.invoke(app, [group, "sigmf", "--help"])
        assert res.exit_code == 0 and "SigMF" in res.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: [_foreign(d, "x", data=_iq(1).astype("<c8").tobytes()[:-3])],
            "x.sigmf-data is 2045 bytes, not a whole number of cf32_le samples",
        ),
        (lambda d: [_foreign(d, "x", capture={"core:sample_start": 999})], "capture 0 starts at sample 999"),
        (
            lambda d: [_foreign(d, "x", annotations=[{"core:sample_start": 0, "core:sample_count": 300}])],
            "annotation 0 covers samples [0, 300) but the data file holds samples [0, 256)",
        ),
        (lambda d: [_foreign(d, "x", iq=_iq(1, 1000))], "the data file x.sigmf-data is 8000 bytes, over the"),
        (
            lambda d: [
                _foreign(d, "x", extra={SESSION_ID: SID}),
                _foreign(d, "y", FAR, iq=_iq(2, 300), extra={SESSION_ID: SID}),
            ],
            "its recordings differ in length",
        ),
        (lambda d: [_write_meta(_foreign(d, "x"), b"\x00\x01garbage")], "metadata is not valid JSON"),
    ],
    ids=["size-not-samples", "capture-index", "annotation-index", "size-cap", "lengths-differ", "garbage"],
)
def test_cli_refuses_lying_files_in_one_line(
    embedded_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make, message: str
) -> None:
    monkeypatch.setenv("HEIMDALL_MAX_IMPORT_BYTES", "4096")
    paths = make(tmp_path / "in")
    res = CliRunner().invoke(app, ["import", "sigmf", *map(str, paths)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert "InterchangeError" in res.output and message in res.output
    assert str(paths[0].parent) in res.output
    db = open_database(Settings().resolved_database_url)
    assert _count(db, RecordingSession) == 0 and _count(db, WebSDRStation) == 7
    db.dispose()


# --------------------------------------------------------------------------- concurrent importers


def _stall_first_load(monkeypatch: pytest.MonkeyPatch, parties: int) -> list[int]:
    """Every importer thread waits after its first station load until all have loaded: a real race.

    Returns the list that counts the loads (one per importer, plus one per retry)."""
    barrier = threading.Barrier(parties, timeout=30)
    original = sigmf_store._Stations.load.__func__
    state = threading.local()
    loads: list[int] = []

    def load(cls, db):
        loads.append(1)
        stations = original(cls, db)
        if not getattr(state, "waited", False):
            state.waited = True
            barrier.wait()
        return stations

    monkeypatch.setattr(sigmf_store._Stations, "load", classmethod(load))
    return loads


def _import_concurrently(root: Path, metas: list[Path]) -> list:
    targets = [_embedded(root) for _ in metas]  # one database handle each, opened (migrated) up front:
    results: list = [None] * len(metas)  # alembic's migration context is not thread-safe

    def run(i: int) -> None:
        db, store = targets[i]
        try:
            results[i] = import_sigmf(db, store, BUCKET, [metas[i]], truth=Truth(45, 7))
        except Exception as exc:  # reported by the assertion below
            results[i] = exc
        finally:
            db.dispose()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(metas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not [r for r in results if isinstance(r, BaseException)], results
    return results


def test_concurrent_imports_creating_different_stations_do_not_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _stall_first_load(monkeypatch, 2)  # both choose station id 8 for their new receiver
    a = _foreign(tmp_path / "a", "a", FAR, iq=_iq(1))
    b = _foreign(tmp_path / "b", "b", (46.0, 12.0), iq=_iq(2))
    results = _import_concurrently(tmp_path / "t", [a, b])
    assert sorted(n for r in results for n in r.new_stations) == ["rx a", "rx b"]
    assert len(loads) == 3  # the importer that lost id 8 resolved once more
    db, _ = _embedded(tmp_path / "t")
    with db.sessions() as q:
        by_id = {
            s.id: (s.name, s.latitude) for s in q.scalars(select(WebSDRStation).where(WebSDRStation.id > 7))
        }
    assert sorted(by_id) == [8, 9] and sorted(by_id.values()) == [("rx a", FAR[0]), ("rx b", 46.0)]
    for r in results:  # each session points at the station at its own receiver's position
        (m,) = get_session(db, r.records[0].id).measurements
        assert by_id[m.station_id][0] == r.new_stations[0]
    db.dispose()


def test_concurrent_imports_of_the_same_new_station_share_it(tmp_path: Path, monkeypatch) -> None:
    loads = _stall_first_load(monkeypatch, 2)
    meta = _foreign(tmp_path / "a", "a", FAR)
    results = _import_concurrently(tmp_path / "t", [meta, meta])
    assert sorted((r.written, r.already_present) for r in results) == [(0, 1), (1, 0)]
    assert len(loads) == 2  # the identical station inserted by the other importer was simply tolerated
    db, _ = _embedded(tmp_path / "t")
    assert _count(db, WebSDRStation) == 8 and _count(db, RecordingSession) == 1
    db.dispose()


def test_failed_import_keeps_stations_other_writers_use(target, tmp_path: Path, monkeypatch) -> None:
    db, store = target
    real_write = sigmf_store.write_sessions

    def other_writer_commits_first(db_, store_, bucket, records):
        # a concurrent importer matched our new station 8 and committed a session on it
        real_write(db_, store_, bucket, [make_session_record(5, stations=(8,))])
        raise RecordingWriteError("simulated failure of this import")

    monkeypatch.setattr(sigmf_store, "write_sessions", other_writer_commits_first)
    with pytest.raises(RecordingWriteError, match="simulated"):
        import_sigmf(db, store, BUCKET, [_foreign(tmp_path, "a", FAR)], truth=Truth(45, 7))
    assert _count(db, WebSDRStation) == 8 and _count(db, RecordingSession) == 1  # station 8 kept


def test_failed_import_keeps_a_station_a_concurrent_writer_inserted(target, tmp_path: Path, monkeypatch):
    db, store = target
    original = sigmf_store._Stations.load.__func__

    def load_then_other_inserts(cls, db_):
        stations = original(cls, db_)
        with db_.sessions.begin() as q:  # the other importer adds the very station this one will add
            q.execute(insert(WebSDRStation).values(id=8, name="rx a", latitude=FAR[0], longitude=FAR[1]))
        return stations

    monkeypatch.setattr(sigmf_store._Stations, "load", classmethod(load_then_other_inserts))

    def fail(*_args: object) -> None:
        raise OSError("object store unavailable")

    monkeypatch.setattr(sigmf_store, "write_sessions", fail)
    with pytest.raises(OSError):
        import_sigmf(db, store, BUCKET, [_foreign(tmp_path, "a", FAR)], truth=Truth(45, 7))
    assert _count(db, WebSDRStation) == 8  # not inserted by this import: not removed by its clean-up


# --------------------------------------------------------------------------- file system failures


def test_export_into_an_unusable_folder_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    db, store = _embedded(tmp_path / "a")
    record = make_session_record(0)
    write_sessions(db, store, BUCKET, [record])
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    with pytest.raises(UserError, match="cannot write the SigMF export into") as err:
        export_session_sigmf(db, store, record.id, blocked / "out")  # mkdir under a file
    assert str(blocked / "out") in str(err.value) and not isinstance(err.value, InterchangeError)

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sigmf.SigMFFile, "tofile", disk_full)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="No space left on device") as err:
        export_session_sigmf(db, store, record.id, out)
    assert str(out) in str(err.value)
    assert list(out.iterdir()) == []  # the hidden scratch folder is gone too
    db.dispose()


def test_cli_export_disk_failure_exits_2(embedded_env: Path, tmp_path: Path, monkeypatch) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["simulate", "--sessions", "1", "--seed", "3", "--no-progress"]).exit_code == 0
    db = open_database(Settings().resolved_database_url)
    first = list_sessions(db, ["sim:nw-italy-v1"])[0]
    db.dispose()

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sigmf.SigMFFile, "tofile", disk_full)
    res = runner.invoke(app, ["export", "sigmf", str(first.id), str(tmp_path / "x")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert "cannot write the SigMF export into" in res.output and str(tmp_path / "x") in res.output


def test_unreadable_data_file_is_a_user_error(target, tmp_path: Path, monkeypatch) -> None:
    db, store = target
    meta = _foreign(tmp_path / "in", "x")
    real_open = open

    def refuse(file, *args, **kwargs):
        if str(file).endswith(".sigmf-data"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(sigmf_read, "open", refuse, raising=False)  # the checksum's read of the data file
    with pytest.raises(UserError, match=r"cannot read the data file .*Permission denied") as err:
        import_sigmf(db, store, BUCKET, [meta])
    assert str(meta) in str(err.value)
    assert _count(db, RecordingSession) == 0
