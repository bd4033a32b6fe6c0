"""Writing recording sessions atomically: rows and IQ objects, both or neither, idempotently.

The simulator, the SigMF importer and the POWDER importer all produce `SessionRecord`s and hand
them here, so the acquisition format is written by exactly one piece of code.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import insert, select

from heimdall.storage.database import Database
from heimdall.storage.iq import IQ_FORMAT, encode_iq, iq_key
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.schema import KnownSource, Measurement, RecordingSession, WebSDRStation

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


class RecordingWriteError(RuntimeError):
    """A session could not be written; nothing of it was left behind."""


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


def write_sessions(
    db: Database, store: ObjectStore, bucket: str, records: Iterable[SessionRecord]
) -> tuple[int, int]:
    """Write a batch of sessions in one transaction; returns (written, already present).

    Objects go first, rows second in one transaction; if the transaction fails the objects of
    the batch are deleted again, so each session is rows and objects both or neither. Sessions
    whose id is already in the database are skipped, which makes re-runs idempotent.
    """
    batch = list(records)
    if not batch:
        return 0, 0
    ids = [r.id for r in batch]
    if len(set(ids)) != len(ids):
        raise RecordingWriteError("duplicate session ids within one batch")
    with db.sessions() as session:
        present = set(session.scalars(select(RecordingSession.id).where(RecordingSession.id.in_(ids))))
        known_stations = set(session.scalars(select(WebSDRStation.id)))
        source_ids = {r.source.id for r in batch if r.source is not None}
        sources_present = set(session.scalars(select(KnownSource.id).where(KnownSource.id.in_(source_ids))))
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
    for r in todo:
        unknown = sorted({m.station_id for m in r.measurements} - known_stations)
        if unknown:
            raise RecordingWriteError(f"session {r.id}: unknown station id(s) {unknown}; nothing written")
    encoded = [(r, _encode_objects(r)) for r in todo]  # validate every IQ before writing anything
    written: list[str] = []
    try:
        for _, objects in encoded:
            for key, data in objects.items():
                store.put_bytes(bucket, key, data)
                written.append(key)
        tables: dict[type, list[dict[str, object]]] = {KnownSource: [], RecordingSession: [], Measurement: []}
        for r, _ in encoded:
            new_source = r.source is not None and r.source.id not in sources_present
            for table, values in _rows(r, bucket, new_source).items():
                tables[table].extend(values)
            if new_source:
                sources_present.add(r.source.id)  # type: ignore[union-attr]
        with db.sessions.begin() as session:
            for table, values in tables.items():  # parents before children
                if values:
                    session.execute(insert(table), values)
    except Exception as exc:
        for key in written:
            try:
                store.delete(bucket, key)
            except Exception:
                log.warning("could not remove %s/%s after a failed write", bucket, key)
        first = todo[0].id if todo else "?"
        raise RecordingWriteError(
            f"writing {len(todo)} session(s) starting at {first} failed, nothing kept: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return len(todo), len(present)
