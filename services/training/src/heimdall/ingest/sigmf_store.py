"""SigMF import: checked recordings stored as sessions, atomically and idempotently, stations included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sigmf.utils import parse_iso8601_datetime
from sqlalchemy import select

from heimdall.geo import haversine_m
from heimdall.ingest.sigmf_format import (
    DATASET,
    DEFAULT_DATASET,
    FREQUENCY_OFFSET_HZ,
    IMPORT_NAMESPACE,
    MEASUREMENT_ID,
    META_EXT,
    NOTES,
    SAME_POSITION_M,
    SESSION_DURATION_S,
    SESSION_ID,
    SESSION_START,
    SIGNAL_STRENGTH_DB,
    SNR_DB,
    STATION_ATTEMPTS,
    STATION_ID,
    STATION_MATCH_M,
    STATION_NAME,
    TASK_ID,
    TRUTH,
    ImportResult,
    InterchangeError,
    Recording,
    Truth,
    _number,
    _uuid,
)
from heimdall.ingest.sigmf_read import _max_bytes, find_recordings, read_recording
from heimdall.storage.database import Database
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.recordings import MeasurementRecord, SessionRecord, SourceRecord, write_sessions
from heimdall.storage.schema import APPROVAL_STATUSES, WebSDRStation
from heimdall.storage.stations import (
    NewStation,
    StationConflictError,
    ensure_stations,
    remove_unused_stations,
)


def _groups(recordings: Sequence[Recording]) -> list[tuple[uuid.UUID, list[Recording]]]:
    """Recordings per session; those without a session id form one session named by their content."""
    by_key: dict[uuid.UUID | None, list[Recording]] = {}
    for r in recordings:
        by_key.setdefault(_uuid(r.path, r.ext, SESSION_ID), []).append(r)
    return [
        (key or uuid.uuid5(IMPORT_NAMESPACE, ",".join(sorted(r.sha256 for r in group))), group)
        for key, group in by_key.items()
    ]


def _source(sid: uuid.UUID, group: list[Recording], override: Truth | None) -> SourceRecord | None:
    """The transmitter from the command line, else from heimdall:truth (which must agree across files)."""
    freq = group[0].frequency_hz
    if override is not None:
        name = f"sigmf import {sid}"
        return SourceRecord(
            uuid.uuid5(sid, f"truth/{override!r}"), name, frequency_hz=freq, **asdict(override)
        )
    given = {json.dumps(r.ext[TRUTH], sort_keys=True): r for r in group if r.ext.get(TRUTH) is not None}
    if len(given) > 1:
        raise InterchangeError(
            f"session {sid}: {TRUTH} differs between {', '.join(str(r.path) for r in given.values())}"
        )
    if not given:
        return None
    r = next(iter(given.values()))
    t = r.ext[TRUTH]
    if not isinstance(t, dict):
        raise InterchangeError(f"{r.path}: {TRUTH} must be an object, got {t!r}")
    lat, lon = _number(r.path, t, "latitude", True), _number(r.path, t, "longitude", True)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # type: ignore[operator]
        raise InterchangeError(f"{r.path}: {TRUTH} position ({lat}, {lon}) is out of range")
    return SourceRecord(
        id=_uuid(r.path, t, "source_id") or uuid.uuid5(sid, "known_source"),
        name=str(t.get("name") or f"sigmf import {sid}")[:256],
        latitude=lat,  # type: ignore[arg-type]
        longitude=lon,  # type: ignore[arg-type]
        altitude_m=_number(r.path, t, "altitude_m"),
        power_dbm=_number(r.path, t, "power_dbm"),
        error_margin_meters=_number(r.path, t, "error_margin_meters") or 0.0,
        frequency_hz=_number(r.path, t, "frequency_hz") or freq,
    )


@dataclass
class _Station:
    id: int
    name: str
    latitude: float
    longitude: float
    altitude_asl: float | None


def _distance_m(st: _Station, r: Recording) -> float:
    return float(haversine_m(st.latitude, st.longitude, r.latitude, r.longitude))


@dataclass
class _Stations:
    """The station table plus the stations this import will add, for matching recordings to receivers."""

    known: list[_Station]
    new: list[_Station] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)  # ids of the new stations this import inserted

    @classmethod
    def load(cls, db: Database) -> _Stations:
        with db.sessions() as q:
            rows = q.scalars(select(WebSDRStation).order_by(WebSDRStation.id))
            return cls([_Station(s.id, s.name, s.latitude, s.longitude, s.altitude_asl) for s in rows])

    def resolve(self, r: Recording) -> _Station:
        """By heimdall:station_id (if that row is plausibly the same receiver), else nearest, else new."""
        everyone = self.known + self.new
        sid, name = r.ext.get(STATION_ID), r.ext.get(STATION_NAME)
        sid = sid if isinstance(sid, int) and not isinstance(sid, bool) and sid > 0 else None
        name = name.strip() if isinstance(name, str) and name.strip() else None
        for st in everyone:
            if st.id == sid and (st.name == name or _distance_m(st, r) <= STATION_MATCH_M):
                return st
        nearest = min(everyone, key=lambda st: _distance_m(st, r), default=None)
        if nearest is not None and _distance_m(nearest, r) <= STATION_MATCH_M:
            return nearest
        return self._create(r, sid, name)

    def _create(self, r: Recording, sid: int | None, name: str | None) -> _Station:
        everyone = self.known + self.new
        taken_ids, taken_names = {s.id for s in everyone}, {s.name for s in everyone}
        new_id = sid if sid is not None and sid not in taken_ids else max(taken_ids, default=0) + 1
        base = (name or r.hw or r.path.name.removesuffix(META_EXT))[:120]
        unique, n = base, 1
        while unique in taken_names:
            n += 1
            unique = f"{base} ({n})"
        st = _Station(new_id, unique, r.latitude, r.longitude, r.altitude)
        self.new.append(st)
        return st

    def insert_new(self, db: Database) -> bool:
        """Insert the new stations, tolerating a concurrent insert of the very same ones.

        False (and nothing of ours left behind) when a concurrent writer took one of the chosen ids
        or names for a different station: the caller resolves again against the table as it is now.
        """
        self.inserted = []
        try:
            self.inserted = ensure_stations(
                db, [NewStation(**asdict(s)) for s in self.new], same_position_m=SAME_POSITION_M
            )
        except StationConflictError:
            return False  # ensure_stations removed what it inserted
        return True

    def remove_new(self, db: Database) -> None:
        """Delete the stations this import inserted, unless a measurement (anyone's) references them."""
        remove_unused_stations(db, self.inserted)


def _measurement(sid: uuid.UUID, r: Recording, st: _Station) -> MeasurementRecord:
    moved = _distance_m(st, r) > SAME_POSITION_M
    return MeasurementRecord(
        id=_uuid(r.path, r.ext, MEASUREMENT_ID) or uuid.uuid5(sid, f"station/{st.id}"),
        timestamp=r.start,
        station_id=st.id,
        frequency_hz=r.frequency_hz,
        signal_strength_db=_number(r.path, r.ext, SIGNAL_STRENGTH_DB),
        snr_db=_number(r.path, r.ext, SNR_DB),
        frequency_offset_hz=_number(r.path, r.ext, FREQUENCY_OFFSET_HZ),
        duration_seconds=r.iq.size / r.sample_rate,
        iq=r.iq,
        iq_sample_rate=r.sample_rate,
        receiver_latitude=r.latitude if moved else None,
        receiver_longitude=r.longitude if moved else None,
        receiver_altitude=r.altitude if moved else None,
    )


def _text(r: Recording, key: str, limit: int) -> str | None:
    value = r.ext.get(key)
    if value is not None and (not isinstance(value, str) or not value or len(value) > limit):
        raise InterchangeError(f"{r.path}: {key} must be a non-empty string of at most {limit} characters")
    return value


def _session(
    sid: uuid.UUID,
    group: list[Recording],
    stations: _Stations,
    dataset: str | None,
    truth: Truth | None,
    approval: str,
) -> SessionRecord:
    """One SessionRecord from the recordings of one session (all checks, no writes)."""
    group = sorted(group, key=lambda r: str(r.path))
    rates = {r.sample_rate for r in group}
    if len(rates) > 1:
        listing = ", ".join(f"{r.path} ({r.sample_rate:g} Hz)" for r in group)
        raise InterchangeError(f"session {sid}: the sample rate differs between its recordings: {listing}")
    lengths = {r.iq.size for r in group}
    if len(lengths) > 1:
        listing = ", ".join(f"{r.path} ({r.iq.size} samples)" for r in group)
        raise InterchangeError(f"session {sid}: its recordings differ in length: {listing}")
    source = _source(sid, group, truth)
    by_station: dict[int, Recording] = {}
    measurements = []
    for r in group:
        st = stations.resolve(r)
        if st.id in by_station:
            raise InterchangeError(
                f"session {sid}: {by_station[st.id].path} and {r.path} are both station {st.id}"
            )
        by_station[st.id] = r
        measurements.append(_measurement(sid, r, st))
    first = group[0]
    start = _text(first, SESSION_START, 64)
    try:
        session_start = parse_iso8601_datetime(start) if start else min(r.start for r in group)
    except ValueError:
        raise InterchangeError(
            f"{first.path}: {SESSION_START} {start!r} is not an ISO-8601 UTC time"
        ) from None
    duration = _number(first.path, first.ext, SESSION_DURATION_S)
    return SessionRecord(
        id=sid,
        acquisition_task_id=_text(first, TASK_ID, 128) or str(sid),
        dataset=dataset or _text(first, DATASET, 128) or DEFAULT_DATASET,
        session_start=session_start,
        duration_seconds=duration if duration is not None else max(r.iq.size / r.sample_rate for r in group),
        measurements=tuple(sorted(measurements, key=lambda m: m.station_id)),
        source=source,
        approval_status=approval if source is not None else "pending",
        notes=_text(first, NOTES, 1_000_000),
    )


def import_sigmf(
    db: Database,
    store: ObjectStore,
    bucket: str,
    paths: Iterable[str | Path],
    dataset: str | None = None,
    truth: Truth | None = None,
    approval: str = "approved",
    max_bytes: int | None = None,
) -> ImportResult:
    """Store SigMF recordings as sessions: all checked first, then written atomically and idempotently.

    Receivers match stations by `heimdall:station_id` or position (within STATION_MATCH_M); unmatched
    receivers become new stations, inserted only once every file has passed and removed again if the
    session write fails. Sessions without truth are stored as 'pending' (training needs a label).
    Station rows are written so that concurrent importers neither clash nor remove each other's
    stations. `max_bytes` caps each file (default: the HEIMDALL_MAX_IMPORT_BYTES setting), checked
    before the file is read.
    """
    if approval not in APPROVAL_STATUSES:
        raise InterchangeError(f"approval must be one of {APPROVAL_STATUSES}, got {approval!r}")
    if dataset is not None and not (0 < len(dataset) <= 128):
        raise InterchangeError(f"dataset label must be 1 to 128 characters, got {dataset!r}")
    cap = _max_bytes(max_bytes)
    groups = _groups([read_recording(p, cap) for p in find_recordings(paths)])
    if truth is not None and len(groups) > 1:
        raise InterchangeError(f"the truth options describe one session but the files hold {len(groups)}")
    for _ in range(STATION_ATTEMPTS):
        stations = _Stations.load(db)
        records = [_session(sid, group, stations, dataset, truth, approval) for sid, group in groups]
        if stations.insert_new(db):
            break
    else:
        raise InterchangeError(
            f"the new stations of this import ({', '.join(s.name for s in stations.new)}) kept clashing "
            "with stations written by concurrent imports; nothing was written, run the import again"
        )
    try:
        written, present = write_sessions(db, store, bucket, records)
    except Exception:
        stations.remove_new(db)
        raise
    return ImportResult(tuple(records), written, present, tuple(s.name for s in stations.new))
