"""Import the POWDER 462.7 MHz outdoor RSS dataset (University of Utah) as power-only sessions.

The files are read and checked by :mod:`heimdall.ingest.powder_read` (its docstring describes the
mapping to the acquisition format); this module stores them through
:func:`~heimdall.storage.recordings.write_sessions`, with the receivers as ``websdr_stations`` rows
written through :mod:`heimdall.storage.stations`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from heimdall.ingest.powder_read import (
    ABSENT_COORDS,
    ABSENT_RSS,
    BUS_SUFFIXES,
    CHUNK,
    COORDINATES_FILE,
    DATASET,
    FREQUENCY_HZ,
    GPS_ERROR_M,
    NAMESPACE,
    SAMPLE_SECONDS,
    SPLIT_FILES,
    STATION_ATTEMPTS,
    STATION_PREFIX,
    TX_POWER_DBM,
    PowderData,
    PowderImportError,
    Reading,
    Sample,
    read_coordinates,
    read_powder,
    read_test_set,
)
from heimdall.stations import NW_ITALY_STATIONS
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

__all__ = [
    "ABSENT_COORDS",
    "ABSENT_RSS",
    "BUS_SUFFIXES",
    "COORDINATES_FILE",
    "DATASET",
    "FREQUENCY_HZ",
    "GPS_ERROR_M",
    "SAMPLE_SECONDS",
    "SPLIT_FILES",
    "STATION_PREFIX",
    "TX_POWER_DBM",
    "PowderData",
    "PowderImportError",
    "PowderImportResult",
    "Reading",
    "Sample",
    "import_powder",
    "read_coordinates",
    "read_powder",
    "read_test_set",
]


@dataclass(frozen=True)
class PowderImportResult:
    """What an import found and stored."""

    rows: int
    sessions: int  # importable sessions (written now + already present)
    written: int
    already_present: int
    skipped: dict[str, int]  # rows not imported, by reason
    dropped_readings: dict[str, int]  # single receiver readings not stored, by reason
    measurements: int
    receivers: tuple[str, ...]  # station names used, fixed then bus
    receivers_created: tuple[str, ...]
    bus_receivers: int
    absent_fraction: float  # share of RSS cells that were -101
    test_sizes: dict[str, int]
    seconds: float


# ---------------------------------------------------------------------------------------------- storing


@dataclass(frozen=True)
class _Station:
    id: int
    name: str
    latitude: float
    longitude: float


def _resolve_stations(db: Database, data: PowderData) -> tuple[dict[str, _Station], list[_Station]]:
    """Station per receiver that has ≥ 1 stored reading: reused by name, else a new id above all others."""
    used: dict[str, list[tuple[float | None, float | None]]] = {}
    for s in data.samples:
        for r in s.readings:
            used.setdefault(r.receiver, []).append((r.latitude, r.longitude))
    with db.sessions() as q:
        existing = {st.name: st for st in q.scalars(select(WebSDRStation))}
    next_id = max([st.id for st in existing.values()] + [s.id for s in NW_ITALY_STATIONS] + [0]) + 1
    out: dict[str, _Station] = {}
    new: list[_Station] = []
    for receiver in [*data.fixed, *data.buses]:  # CSV column order: deterministic ids
        if receiver not in used:
            continue
        name = f"{STATION_PREFIX}{receiver}"
        if receiver in data.fixed:
            lat, lon = data.fixed[receiver]
        else:
            lat = sum(p[0] for p in used[receiver]) / len(used[receiver])  # type: ignore[misc]
            lon = sum(p[1] for p in used[receiver]) / len(used[receiver])  # type: ignore[misc]
        if name in existing:
            row = existing[name]
            out[receiver] = _Station(row.id, name, row.latitude, row.longitude)
            continue
        st = _Station(next_id, name, lat, lon)
        next_id += 1
        new.append(st)
        out[receiver] = st
    return out, new


def _insert_stations(db: Database, new: list[_Station]) -> list[int] | None:
    """Insert the new stations, tolerating a concurrent import's insert of the same ones (same id, name).

    Returns the ids this call inserted, or None (with those removed again) when a concurrent writer
    took a chosen id or name for another station: the caller resolves again by name.
    """
    rows = [
        NewStation(
            id=st.id,
            name=st.name,
            latitude=st.latitude,
            longitude=st.longitude,
            frequency_min_hz=FREQUENCY_HZ,
            frequency_max_hz=FREQUENCY_HZ,
        )
        for st in new
    ]
    try:
        return ensure_stations(db, rows)
    except StationConflictError:
        return None  # ensure_stations removed what it inserted


def _records(
    data: PowderData, stations: dict[str, _Station], dataset: str, approval: str
) -> list[SessionRecord]:
    records = []
    for s in data.samples:
        sid = uuid.uuid5(NAMESPACE, f"{dataset}/{s.timestamp}")
        notes = {
            key: ("test" if s.timestamp in stamps else "train") for key, stamps in data.test_sets.items()
        }
        notes["powder_timestamp"] = s.timestamp
        measurements = [
            MeasurementRecord(
                id=uuid.uuid5(sid, f"receiver/{r.receiver}"),
                timestamp=s.start,
                station_id=stations[r.receiver].id,
                frequency_hz=FREQUENCY_HZ,
                signal_strength_db=r.rss_db,
                snr_db=None,
                duration_seconds=SAMPLE_SECONDS,
                receiver_latitude=r.latitude,
                receiver_longitude=r.longitude,
            )
            for r in s.readings
        ]
        records.append(
            SessionRecord(
                id=sid,
                acquisition_task_id=f"{dataset}/{s.timestamp}",
                dataset=dataset,
                session_start=s.start,
                duration_seconds=SAMPLE_SECONDS,
                measurements=tuple(sorted(measurements, key=lambda m: m.station_id)),
                source=SourceRecord(
                    id=uuid.uuid5(sid, "known_source"),
                    name=f"POWDER handheld {s.timestamp}",
                    latitude=s.tx_lat,
                    longitude=s.tx_lon,
                    power_dbm=TX_POWER_DBM,
                    error_margin_meters=GPS_ERROR_M,
                    frequency_hz=FREQUENCY_HZ,
                ),
                approval_status=approval,
                notes=json.dumps(notes, sort_keys=True),
            )
        )
    return records


def import_powder(
    db: Database,
    store: ObjectStore,
    bucket: str,
    csv_path: Path,
    coordinates: Path | None = None,
    test_sets: dict[str, Path | None] | None = None,
    dataset: str = DATASET,
    approval: str = "approved",
    chunk_size: int = CHUNK,
    max_bytes: int | None = None,
) -> PowderImportResult:
    """Parse, check, then store the POWDER samples as power-only sessions (see the module docstring).

    Sessions are written in atomic, idempotent chunks of ``chunk_size``; new stations are inserted
    first and removed again if the very first chunk fails. A failure in a later chunk keeps the
    chunks before it: running the import again completes it (already present sessions are skipped).
    Station rows tolerate a concurrent import of the same stations, and the clean-up never removes
    a station that some measurement references. ``max_bytes`` caps each file (default: the
    HEIMDALL_MAX_IMPORT_BYTES setting), checked before it is read.
    """
    t0 = time.perf_counter()
    if approval not in APPROVAL_STATUSES:
        raise PowderImportError(f"approval must be one of {APPROVAL_STATUSES}, got {approval!r}")
    if not (0 < len(dataset) <= 100) or not dataset.strip():
        raise PowderImportError(f"dataset label must be 1 to 100 characters, got {dataset!r}")
    if chunk_size < 1:
        raise PowderImportError(f"chunk_size must be ≥ 1, got {chunk_size}")
    data = read_powder(csv_path, coordinates, test_sets, max_bytes)
    rows = len(data.samples) + sum(data.skipped.values())
    if not data.samples:
        raise PowderImportError(
            f"{csv_path}: none of the {rows} rows has a receiver that heard the transmitter "
            f"(every RSS is {ABSENT_RSS:g} or lacks a position): nothing to import"
        )
    for _ in range(STATION_ATTEMPTS):
        stations, new = _resolve_stations(db, data)
        inserted = _insert_stations(db, new)
        if inserted is not None:
            break
    else:
        raise PowderImportError(
            f"the new stations of this import ({', '.join(s.name for s in new)}) kept clashing with "
            "stations written by concurrent imports; nothing was written, run the import again"
        )
    records = _records(data, stations, dataset, approval)
    written = present = 0
    try:
        for k in range(0, len(records), chunk_size):
            w, p = write_sessions(db, store, bucket, records[k : k + chunk_size])
            written, present = written + w, present + p
    except Exception:
        if written == 0:
            remove_unused_stations(db, inserted)
        raise
    names = [stations[r].name for r in [*data.fixed, *data.buses] if r in stations]
    return PowderImportResult(
        rows=rows,
        sessions=len(records),
        written=written,
        already_present=present,
        skipped=dict(data.skipped),
        dropped_readings=dict(data.dropped),
        measurements=sum(len(r.measurements) for r in records),
        receivers=tuple(names),
        receivers_created=tuple(s.name for s in new),
        bus_receivers=sum(1 for b in data.buses if b in stations),
        absent_fraction=data.absent_cells / max(data.rss_cells, 1),
        test_sizes={k: sum(s.timestamp in v for s in data.samples) for k, v in data.test_sets.items()},
        seconds=time.perf_counter() - t0,
    )
