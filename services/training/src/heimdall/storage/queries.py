"""Reading sessions back: the approved set a model trains on, or one session by id."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from heimdall.errors import UserError
from heimdall.storage.database import Database
from heimdall.storage.recordings import SourceRecord, as_utc
from heimdall.storage.schema import KnownSource, Measurement, RecordingSession, WebSDRStation


class SessionNotFoundError(UserError, LookupError):
    """No recording session has the requested id."""


@dataclass(frozen=True)
class StoredMeasurement:
    """A measurement row joined with where its receiver was (station position unless it moved)."""

    id: uuid.UUID
    timestamp: datetime
    station_id: int
    station_name: str
    frequency_hz: float
    signal_strength_db: float | None
    snr_db: float | None
    frequency_offset_hz: float | None
    iq_data_location: str | None
    iq_data_format: str | None
    iq_sample_rate: float | None
    iq_samples_count: int | None
    duration_seconds: float | None
    receiver_latitude: float
    receiver_longitude: float
    receiver_altitude: float | None
    moving_receiver: bool

    @property
    def iq_bucket_key(self) -> tuple[str, str] | None:
        """(bucket, key) of the IQ object, or None for power-only rows."""
        if not self.iq_data_location:
            return None
        bucket, _, key = self.iq_data_location.partition("/")
        return bucket, key


@dataclass(frozen=True)
class StoredSession:
    id: uuid.UUID
    acquisition_task_id: str
    dataset: str
    session_start: datetime
    duration_seconds: float
    approval_status: str
    notes: str | None
    source: SourceRecord | None
    measurements: tuple[StoredMeasurement, ...]


def _source(row: KnownSource | None) -> SourceRecord | None:
    if row is None:
        return None
    return SourceRecord(
        id=row.id,
        name=row.name,
        latitude=row.latitude,
        longitude=row.longitude,
        altitude_m=row.altitude_m,
        power_dbm=row.power_dbm,
        error_margin_meters=row.error_margin_meters,
        frequency_hz=row.frequency_hz,
    )


def _measurement(m: Measurement, st: WebSDRStation) -> StoredMeasurement:
    moving = m.receiver_latitude is not None and m.receiver_longitude is not None
    return StoredMeasurement(
        id=m.id,
        timestamp=as_utc(m.timestamp),
        station_id=m.websdr_station_id,
        station_name=st.name,
        frequency_hz=m.frequency_hz,
        signal_strength_db=m.signal_strength_db,
        snr_db=m.snr_db,
        frequency_offset_hz=m.frequency_offset_hz,
        iq_data_location=m.iq_data_location,
        iq_data_format=m.iq_data_format,
        iq_sample_rate=m.iq_sample_rate,
        iq_samples_count=m.iq_samples_count,
        duration_seconds=m.duration_seconds,
        receiver_latitude=m.receiver_latitude if moving else st.latitude,  # type: ignore[arg-type]
        receiver_longitude=m.receiver_longitude if moving else st.longitude,  # type: ignore[arg-type]
        receiver_altitude=m.receiver_altitude if m.receiver_altitude is not None else st.altitude_asl,
        moving_receiver=moving,
    )


def _assemble(db: Database, sessions: Sequence[RecordingSession]) -> list[StoredSession]:
    if not sessions:
        return []
    ids = [s.id for s in sessions]
    by_session: dict[uuid.UUID, list[StoredMeasurement]] = defaultdict(list)
    sources: dict[uuid.UUID, KnownSource] = {}
    with db.sessions() as q:
        for chunk_start in range(0, len(ids), 5000):  # stay under bound-parameter limits
            chunk = ids[chunk_start : chunk_start + 5000]
            rows = q.execute(
                select(Measurement, WebSDRStation)
                .join(WebSDRStation, WebSDRStation.id == Measurement.websdr_station_id)
                .where(Measurement.recording_session_id.in_(chunk))
                .order_by(Measurement.recording_session_id, Measurement.websdr_station_id)
            )
            for m, st in rows:
                by_session[m.recording_session_id].append(_measurement(m, st))
        source_ids = list({s.known_source_id for s in sessions if s.known_source_id is not None})
        for chunk_start in range(0, len(source_ids), 5000):
            chunk = source_ids[chunk_start : chunk_start + 5000]
            for src in q.scalars(select(KnownSource).where(KnownSource.id.in_(chunk))):
                sources[src.id] = src
    return [
        StoredSession(
            id=s.id,
            acquisition_task_id=s.acquisition_task_id,
            dataset=s.dataset,
            session_start=as_utc(s.session_start),
            duration_seconds=s.duration_seconds,
            approval_status=s.approval_status,
            notes=s.notes,
            source=_source(sources.get(s.known_source_id)) if s.known_source_id else None,
            measurements=tuple(by_session.get(s.id, ())),
        )
        for s in sessions
    ]


def get_session(db: Database, session_id: uuid.UUID | str) -> StoredSession:
    """One session with its measurements and source; SessionNotFoundError if absent."""
    try:
        sid = session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))
    except ValueError:
        raise SessionNotFoundError(f"{session_id!r} is not a session id (a UUID)") from None
    with db.sessions() as q:
        row = q.get(RecordingSession, sid)
    if row is None:
        raise SessionNotFoundError(f"no recording session with id {sid} in {db.safe_url}")
    return _assemble(db, [row])[0]


def list_sessions(
    db: Database,
    datasets: Sequence[str],
    approval_status: str = "approved",
    limit: int | None = None,
) -> list[StoredSession]:
    """Sessions of the given dataset labels and approval status, ordered by start time then id."""
    stmt = (
        select(RecordingSession)
        .where(RecordingSession.dataset.in_(list(datasets)))
        .where(RecordingSession.approval_status == approval_status)
        .order_by(RecordingSession.session_start, RecordingSession.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with db.sessions() as q:
        rows = list(q.scalars(stmt))
    return _assemble(db, rows)


def dataset_labels(db: Database) -> dict[str, int]:
    """Every dataset label with its number of approved sessions (for helpful error messages)."""
    from sqlalchemy import func

    with db.sessions() as q:
        rows = q.execute(
            select(RecordingSession.dataset, func.count())
            .where(RecordingSession.approval_status == "approved")
            .group_by(RecordingSession.dataset)
        )
        return {label: int(n) for label, n in rows}


def existing_session_ids(db: Database, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `ids` are already stored (lets idempotent writers skip work, not only writes)."""
    with db.sessions() as q:
        return set(q.scalars(select(RecordingSession.id).where(RecordingSession.id.in_(list(ids)))))
