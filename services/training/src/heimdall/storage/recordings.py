"""Writing recording sessions atomically: rows and IQ objects, both or neither, idempotently.

The simulator, the SigMF importer and the POWDER importer all produce `SessionRecord`s and hand
them here, so the acquisition format is written by exactly one piece of code.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from heimdall.errors import DataError, HeimdallError, ServiceUnavailableError
from heimdall.settings import redact_text
from heimdall.storage.database import SQLITE_WRITE_WAIT_MS, Database, insert_ignoring_conflicts
from heimdall.storage.iq import IQ_FORMAT, encode_iq, iq_key
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.scenarios import (
    ScenarioConflictError,
    SimulationTruthRecord,
    check_scenario_name,
    store_scenario,
    truth_row,
)
from heimdall.storage.schema import (
    KnownSource,
    Measurement,
    RecordingSession,
    SimulationTruth,
    WebSDRStation,
)

log = logging.getLogger("heimdall.storage")


@dataclass(frozen=True)
class SourceRecord:
    """The known transmitter of a session (the truth a model learns from)."""

    id: uuid.UUID
    name: str
    latitude: float
    longitude: float
    altitude_m: float | None = None
    power_dbm: float | None = None
    error_margin_meters: float = 0.0
    frequency_hz: float | None = None


@dataclass(frozen=True)
class MeasurementRecord:
    """One receiver's measurement; `iq` is None for power-only datasets."""

    id: uuid.UUID
    timestamp: datetime
    station_id: int
    frequency_hz: float
    signal_strength_db: float | None
    snr_db: float | None
    frequency_offset_hz: float | None = None
    duration_seconds: float | None = None
    iq: np.ndarray | None = None
    iq_sample_rate: float | None = None
    receiver_latitude: float | None = None
    receiver_longitude: float | None = None
    receiver_altitude: float | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A whole recording session as the acquisition service stores it."""

    id: uuid.UUID
    acquisition_task_id: str
    dataset: str
    session_start: datetime
    duration_seconds: float
    measurements: Sequence[MeasurementRecord]
    source: SourceRecord | None = None
    approval_status: str = "approved"
    notes: str | None = None
    extra_objects: dict[str, bytes] = field(default_factory=dict)
    truth: SimulationTruthRecord | None = None  # simulated sessions: written to simulation_truth with it


class RecordingWriteError(DataError, RuntimeError):
    """A session could not be written; nothing of it was left behind."""


class RecordingUnavailableError(ServiceUnavailableError, RecordingWriteError):
    """Writing failed because the database or the object store did; nothing was left behind."""


def as_utc(ts: datetime) -> datetime:
    """Timestamps in UTC: SQLite returns naive datetimes, PostgreSQL aware ones."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _encode_objects(record: SessionRecord) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    for m in record.measurements:
        if m.iq is not None:
            key = iq_key(record.acquisition_task_id, m.station_id)
            objects[key] = encode_iq(m.iq, context=f"session {record.id}, station {m.station_id}")
    return objects


def _rows(record: SessionRecord, bucket: str, new_source: bool) -> dict[type, list[dict[str, object]]]:
    """Column values per table for one session (inserted in foreign-key order by the caller)."""
    rows: dict[type, list[dict[str, object]]] = {KnownSource: [], RecordingSession: [], Measurement: []}
    if record.source is not None and new_source:
        rows[KnownSource].append(dataclasses.asdict(record.source))
    rows[RecordingSession].append(
        {
            "id": record.id,
            "known_source_id": record.source.id if record.source else None,
            "acquisition_task_id": record.acquisition_task_id,
            "dataset": record.dataset,
            "session_start": as_utc(record.session_start),
            "duration_seconds": record.duration_seconds,
            "approval_status": record.approval_status,
            "notes": record.notes,
        }
    )
    for m in record.measurements:
        has_iq = m.iq is not None
        rows[Measurement].append(
            {
                "timestamp": as_utc(m.timestamp),
                "id": m.id,
                "websdr_station_id": m.station_id,
                "recording_session_id": record.id,
                "frequency_hz": m.frequency_hz,
                "signal_strength_db": m.signal_strength_db,
                "snr_db": m.snr_db,
                "frequency_offset_hz": m.frequency_offset_hz,
                "iq_data_location": f"{bucket}/{iq_key(record.acquisition_task_id, m.station_id)}"
                if has_iq
                else None,
                "iq_data_format": IQ_FORMAT if has_iq else None,
                "iq_sample_rate": m.iq_sample_rate if has_iq else None,
                "iq_samples_count": int(m.iq.size) if m.iq is not None else None,
                "duration_seconds": m.duration_seconds,
                "receiver_latitude": m.receiver_latitude,
                "receiver_longitude": m.receiver_longitude,
                "receiver_altitude": m.receiver_altitude,
            }
        )
    return rows


def _expected_objects(record: SessionRecord, bucket: str) -> dict[str, str]:
    """`bucket/key` location → key for every IQ object the session's rows point to."""
    return {
        f"{bucket}/{iq_key(record.acquisition_task_id, m.station_id)}": iq_key(
            record.acquisition_task_id, m.station_id
        )
        for m in record.measurements
        if m.iq is not None
    }


def missing_objects(
    db: Database, store: ObjectStore, session_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Stored sessions among `session_ids` whose rows point to objects that do not exist, with the count."""
    if not session_ids:
        return {}
    with db.sessions() as q:
        rows = q.execute(
            select(Measurement.recording_session_id, Measurement.iq_data_location).where(
                Measurement.recording_session_id.in_(list(session_ids)),
                Measurement.iq_data_location.is_not(None),
            )
        ).all()
    missing: dict[uuid.UUID, int] = {}
    for sid, location in rows:
        bucket, _, key = location.partition("/")
        if not store.exists(bucket, key):
            missing[sid] = missing.get(sid, 0) + 1
    return missing


def _repair(db: Database, store: ObjectStore, bucket: str, records: Sequence[SessionRecord]) -> int:
    """Rewrite the missing objects of sessions whose rows are already stored; returns how many.

    Only objects that are missing are written, with the bytes the row describes, so a concurrent
    writer of the same session can only ever write the same bytes: nothing is deleted here.
    """
    by_id = {r.id: r for r in records}
    broken = missing_objects(db, store, list(by_id))
    repaired = 0
    for sid in broken:
        record = by_id[sid]
        with db.sessions() as q:
            stored = set(
                q.scalars(select(Measurement.iq_data_location).where(Measurement.recording_session_id == sid))
            )
        encoded = _encode_objects(record)
        for location, key in _expected_objects(record, bucket).items():
            if location in stored and not store.exists(bucket, key):
                store.put_bytes(bucket, key, encoded[key])
                repaired += 1
    if repaired:
        log.warning("repaired %d missing object(s) of %d already-stored session(s)", repaired, len(broken))
    return repaired


def write_sessions(
    db: Database, store: ObjectStore, bucket: str, records: Iterable[SessionRecord]
) -> tuple[int, int]:
    """Write a batch of sessions in one transaction; returns (written, already present).

    Safe with concurrent writers of the same sessions (two processes, either backend):
    1. the session rows are inserted first with `ON CONFLICT DO NOTHING … RETURNING`: the rows this
       writer gets back are its claim, and the database holds a concurrent insert of the same ids
       until this transaction ends;
    2. only then are the claimed sessions' objects written and their measurement rows inserted;
    3. on any failure the objects of *claimed* sessions are deleted before the rollback releases
       the claim, so no writer ever deletes an object whose session has a committed row.
    Sessions already stored are a no-op, except that missing objects of their rows are rewritten
    (a re-run repairs a row whose object was lost). Each session is rows and objects both or neither.
    A record's ``truth`` (simulated sessions) is written in the same transaction: its scenario
    (content-addressed, once) and its ``simulation_truth`` row. A scenario whose name the store holds
    with another content is refused before anything is written (:class:`ScenarioConflictError`).
    """
    batch = sorted(records, key=lambda r: r.id)  # one lock order for every writer: no deadlocks
    if not batch:
        return 0, 0
    ids = [r.id for r in batch]
    if len(set(ids)) != len(ids):
        raise RecordingWriteError("duplicate session ids within one batch")
    with db.sessions() as session:
        present = set(session.scalars(select(RecordingSession.id).where(RecordingSession.id.in_(ids))))
        known_stations = set(session.scalars(select(WebSDRStation.id)))
        todo = [r for r in batch if r.id not in present]
        task_ids = [r.acquisition_task_id for r in todo]
        if len(set(task_ids)) != len(task_ids):
            raise RecordingWriteError("duplicate acquisition task ids within one batch; nothing written")
        taken = session.execute(
            select(RecordingSession.acquisition_task_id, RecordingSession.id).where(
                RecordingSession.acquisition_task_id.in_(task_ids)
            )
        ).first()
    if taken is not None:  # its objects live under the same keys: never overwrite another session's IQ
        raise RecordingWriteError(
            f"acquisition task id {taken[0]!r} already belongs to session {taken[1]}; nothing written"
        )
    scenarios = {r.truth.scenario.content_sha256: r.truth.scenario for r in todo if r.truth is not None}
    if scenarios:
        with db.engine.connect() as conn:
            for sc in scenarios.values():
                check_scenario_name(conn, sc)
    for r in todo:
        unknown = sorted({m.station_id for m in r.measurements} - known_stations)
        if unknown:
            raise RecordingWriteError(f"session {r.id}: unknown station id(s) {unknown}; nothing written")
    encoded = {r.id: _encode_objects(r) for r in todo}  # validate every IQ before writing anything
    claimed: set[uuid.UUID] = set()
    if todo:
        claimed = _claim_and_write(db, store, bucket, todo, encoded)
    lost_race = [r for r in todo if r.id not in claimed]  # another writer stored them meanwhile
    _repair(db, store, bucket, [r for r in batch if r.id in present] + lost_race)
    return len(claimed), len(batch) - len(claimed)


def _claim_and_write(
    db: Database,
    store: ObjectStore,
    bucket: str,
    todo: Sequence[SessionRecord],
    encoded: dict[uuid.UUID, dict[str, bytes]],
) -> set[uuid.UUID]:
    """Steps 1-3 of `write_sessions` in one transaction; returns the ids this writer stored."""
    sources: dict[uuid.UUID, dict[str, object]] = {}
    scenarios = {r.truth.scenario.content_sha256: r.truth.scenario for r in todo if r.truth is not None}
    for r in todo:
        if r.source is not None:
            sources.setdefault(r.source.id, dataclasses.asdict(r.source))
    written: list[str] = []
    claimed: set[uuid.UUID] = set()
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_WRITE_WAIT_MS}")
            conn.commit()
        trans = conn.begin()
        try:
            for sha in sorted(scenarios):  # before the sessions: their truth rows reference it
                store_scenario(conn, scenarios[sha])
            if sources:
                rows = [sources[k] for k in sorted(sources)]
                conn.execute(insert_ignoring_conflicts(db, KnownSource), rows)
            session_rows = [_rows(r, bucket, new_source=False)[RecordingSession][0] for r in todo]
            for k in range(0, len(session_rows), 500):  # stay under bound-parameter limits
                stmt = insert_ignoring_conflicts(db, RecordingSession).returning(RecordingSession.id)
                claimed.update(conn.execute(stmt.values(session_rows[k : k + 500])).scalars())
            _check_task_ids(conn, [r for r in todo if r.id not in claimed], [r.id for r in todo])
            mine = [r for r in todo if r.id in claimed]
            puts = [(key, data) for r in mine for key, data in encoded[r.id].items()]
            written.extend(key for key, _ in puts)  # claimed keys: deleting one never written is harmless
            _put_concurrently(store, bucket, puts)
            measurements = [row for r in mine for row in _rows(r, bucket, new_source=False)[Measurement]]
            if measurements:
                conn.execute(insert(Measurement), measurements)
            truths = [truth_row(r.id, r.truth) for r in mine if r.truth is not None]
            if truths:
                conn.execute(insert(SimulationTruth), truths)
            trans.commit()
        except Exception as exc:
            # Delete while the claim is still held: no other writer can own these keys yet.
            _delete_quietly(store, bucket, written)
            if trans.is_active:
                trans.rollback()
            if isinstance(exc, ScenarioConflictError):
                raise  # a concurrent writer stored another content under the name: the user's to fix
            if not isinstance(exc, HeimdallError | SQLAlchemyError):
                raise  # a bug: nothing was kept, and its traceback shows where
            what = (
                f"writing {len(todo)} session(s) starting at {todo[0].id} failed, nothing kept: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            )
            if isinstance(exc, ServiceUnavailableError) or (
                isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError)
            ):
                raise RecordingUnavailableError(redact_text(what)) from exc  # the servers, not the data
            raise RecordingWriteError(redact_text(what)) from exc
    return claimed


#: object puts in flight per batch (network round trips to S3 overlap; a folder store is not slowed)
PUT_THREADS = 8


def _put_concurrently(store: ObjectStore, bucket: str, puts: Sequence[tuple[str, bytes]]) -> None:
    """Put every object, up to :data:`PUT_THREADS` at a time; returns once none is in flight (also on
    failure, so that the caller's clean-up cannot race a put still running), raising the first error."""
    if len(puts) <= 1:
        for key, data in puts:
            store.put_bytes(bucket, key, data)
        return
    with ThreadPoolExecutor(
        max_workers=min(PUT_THREADS, len(puts)), thread_name_prefix="heimdall-put"
    ) as pool:
        futures = [pool.submit(store.put_bytes, bucket, key, data) for key, data in puts]
        wait(futures)
    for f in futures:
        f.result()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _check_task_ids(conn: Connection, unclaimed: Sequence[SessionRecord], todo_ids: list[uuid.UUID]) -> None:
    """An unclaimed session is fine if another writer stored it; not if its task id is another session's."""
    if not unclaimed:
        return
    clash = conn.execute(
        select(RecordingSession.acquisition_task_id, RecordingSession.id).where(
            RecordingSession.acquisition_task_id.in_(sorted(r.acquisition_task_id for r in unclaimed)),
            RecordingSession.id.not_in(todo_ids),
        )
    ).first()
    if clash is not None:
        raise RecordingWriteError(f"acquisition task id {clash[0]!r} already belongs to session {clash[1]}")


def _delete_quietly(store: ObjectStore, bucket: str, keys: Sequence[str]) -> None:
    for key in keys:
        try:
            store.delete(bucket, key)
        except Exception:
            log.warning("could not remove %s/%s after a failed write", bucket, key)
