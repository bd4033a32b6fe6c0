"""SigMF export: a stored session's IQ measurements as SigMF recordings in the heimdall namespace."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sigmf
from sigmf.sigmffile import SigMFFile
from sigmf.utils import SIGMF_DATETIME_ISO8601_FMT

from heimdall.errors import UserError
from heimdall.ingest.sigmf_format import (
    DATASET,
    EXTENSION,
    FREQUENCY_OFFSET_HZ,
    MEASUREMENT_ID,
    META_EXT,
    NOTES,
    SESSION_DURATION_S,
    SESSION_ID,
    SESSION_START,
    SIGNAL_STRENGTH_DB,
    SNR_DB,
    STATION_ID,
    STATION_NAME,
    TASK_ID,
    TRUTH,
    InterchangeError,
)
from heimdall.storage.database import Database
from heimdall.storage.iq import load_iq
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.queries import StoredMeasurement, StoredSession, get_session
from heimdall.storage.recordings import SourceRecord


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime(SIGMF_DATETIME_ISO8601_FMT)


def _truth_json(source: SourceRecord | None) -> dict[str, Any] | None:
    if source is None:
        return None
    return {
        "latitude": source.latitude,
        "longitude": source.longitude,
        "altitude_m": source.altitude_m,
        "error_margin_meters": source.error_margin_meters,
        "power_dbm": source.power_dbm,
        "frequency_hz": source.frequency_hz,
        "name": source.name,
        "source_id": str(source.id),
    }


def _to_sigmf(s: StoredSession, m: StoredMeasurement, iq: np.ndarray, author: str | None) -> SigMFFile:
    """One receiver's recording with the session, measurement and truth in the heimdall namespace."""
    rec = sigmf.fromarray(np.ascontiguousarray(iq, dtype="<c8"))
    position = [m.receiver_longitude, m.receiver_latitude]
    if m.receiver_altitude is not None:
        position.append(m.receiver_altitude)
    fields: dict[str, Any] = {
        sigmf.SAMPLE_RATE_KEY: m.iq_sample_rate,
        sigmf.HW_KEY: m.station_name,
        sigmf.DESCRIPTION_KEY: f"Heimdall session {s.id}: receiver {m.station_name} (station {m.station_id})",
        sigmf.AUTHOR_KEY: author,
        sigmf.GEOLOCATION_KEY: {"type": "Point", "coordinates": position},
        sigmf.EXTENSIONS_KEY: [dict(EXTENSION)],
        SESSION_ID: str(s.id),
        TASK_ID: s.acquisition_task_id,
        DATASET: s.dataset,
        SESSION_START: _iso(s.session_start),
        SESSION_DURATION_S: s.duration_seconds,
        NOTES: s.notes,
        STATION_ID: m.station_id,
        STATION_NAME: m.station_name,
        MEASUREMENT_ID: str(m.id),
        SIGNAL_STRENGTH_DB: m.signal_strength_db,
        SNR_DB: m.snr_db,
        FREQUENCY_OFFSET_HZ: m.frequency_offset_hz,
        TRUTH: _truth_json(s.source),
    }
    rec.set_global_info({k: v for k, v in fields.items() if v is not None})
    rec.add_capture(0, {sigmf.FREQUENCY_KEY: m.frequency_hz, sigmf.DATETIME_KEY: _iso(m.timestamp)})
    return rec


def _write_all(out_dir: Path, recordings: dict[str, SigMFFile]) -> list[Path]:
    """Write into a hidden folder beside the target, then move in: a failure leaves no partial files.

    An unusable folder (no permission, a file in the way, a full disk) is a UserError naming it.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".sigmf-export-"))
    except OSError as exc:
        raise UserError(f"cannot write the SigMF export into {out_dir}: {exc.strerror or exc}") from None
    try:
        for base, rec in recordings.items():
            rec.tofile(tmp / base, overwrite=True)  # validates the metadata first
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
    except OSError as exc:
        raise UserError(f"cannot write the SigMF export into {out_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out_dir / f"{base}{META_EXT}" for base in recordings]


def export_session_sigmf(
    db: Database, store: ObjectStore, session_id: uuid.UUID | str, out_dir: Path, author: str | None = None
) -> list[Path]:
    """Write `{session}_{station}.sigmf-meta/-data` for every IQ measurement; returns the meta paths.

    An unknown session raises SessionNotFoundError (a UserError), an unwritable `out_dir` a UserError.
    """
    session = get_session(db, session_id)  # an unknown session is a SessionNotFoundError (a UserError)
    recordings: dict[str, SigMFFile] = {}
    for m in session.measurements:
        if m.iq_bucket_key is None:
            continue  # power-only rows have nothing to put in a SigMF dataset
        bucket, key = m.iq_bucket_key
        iq = load_iq(store, bucket, key, m.iq_samples_count, f"session {session.id}, station {m.station_id}")
        recordings[f"{session.id}_{m.station_id}"] = _to_sigmf(session, m, iq, author)
    if not recordings:
        raise InterchangeError(f"session {session.id} has no IQ recordings to export")
    return _write_all(Path(out_dir), recordings)
