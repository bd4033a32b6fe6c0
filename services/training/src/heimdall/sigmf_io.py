"""SigMF interchange: recordings from outside come in as SigMF, sessions go out as SigMF.

One SigMF recording (`.sigmf-meta` + `.sigmf-data`) holds one receiver's IQ of one session; a
session is the set of recordings sharing `heimdall:session_id` (or, for foreign files without it,
the files imported together). What Heimdall needs beyond the SigMF core (station, measurement
values, the known transmitter) travels in the optional `heimdall` extension namespace, spelled only
by the constants below, so an export re-imports into any database as the very same session.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import sigmf
from sigmf.error import SigMFError
from sigmf.sigmffile import SigMFFile, dtype_info, get_sigmf_filenames
from sigmf.utils import SIGMF_DATETIME_ISO8601_FMT, parse_iso8601_datetime
from sigmf.validate import validate as validate_metadata
from sqlalchemy import Insert, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from heimdall.errors import DataError
from heimdall.geo import haversine_m
from heimdall.settings import Settings
from heimdall.storage.database import Database
from heimdall.storage.iq import IQDataError, check_iq, load_iq
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.queries import SessionNotFoundError, StoredMeasurement, StoredSession, get_session
from heimdall.storage.recordings import MeasurementRecord, SessionRecord, SourceRecord, write_sessions
from heimdall.storage.schema import APPROVAL_STATUSES, Measurement, WebSDRStation

# The `heimdall` extension namespace: every Heimdall key read or written, in one place.
EXTENSION = {"name": "heimdall", "version": "1.0.0", "optional": True}
SESSION_ID = "heimdall:session_id"
TASK_ID = "heimdall:acquisition_task_id"
DATASET = "heimdall:dataset"
SESSION_START = "heimdall:session_start"
SESSION_DURATION_S = "heimdall:session_duration_s"
NOTES = "heimdall:notes"
STATION_ID = "heimdall:station_id"
STATION_NAME = "heimdall:station_name"
MEASUREMENT_ID = "heimdall:measurement_id"
SIGNAL_STRENGTH_DB = "heimdall:signal_strength_db"
SNR_DB = "heimdall:snr_db"
FREQUENCY_OFFSET_HZ = "heimdall:frequency_offset_hz"
TRUTH = "heimdall:truth"  # {latitude, longitude, altitude_m, error_margin_meters, power_dbm[, frequency_hz,
# name, source_id]}

EXPORT_DATATYPE = "cf32_le"  # the stored complex64 samples, byte for byte
SUPPORTED_DATATYPES = frozenset(
    [f"c{t}_{e}" for t in ("f32", "f64", "i32", "i16", "u16") for e in ("le", "be")] + ["ci8", "cu8"]
)
DEFAULT_DATASET = "sigmf:import"
STATION_MATCH_M = 200.0  # a recording this close to a station is that station's
SAME_POSITION_M = 1.0  # a receiver farther than this from its station keeps its own position
IMPORT_NAMESPACE = uuid.UUID("a977ad27-5b4d-4fae-94ec-8cb7b8cca2b1")  # ids of sessions without one
META_EXT = ".sigmf-meta"
STATION_ATTEMPTS = 3  # resolve → insert rounds when concurrent importers take the ids/names we chose

log = logging.getLogger("heimdall.sigmf")


class InterchangeError(DataError):
    """A SigMF import or export was refused; the message names the file or session. Nothing was written."""


@dataclass(frozen=True)
class Truth:
    """Where a session's transmitter was: the label a model learns from (e.g. given on the command line)."""

    latitude: float
    longitude: float
    altitude_m: float | None = None
    error_margin_meters: float = 0.0
    power_dbm: float | None = None


@dataclass(frozen=True, eq=False)
class Recording:
    """One checked SigMF recording: one receiver's complex64 IQ and what its metadata says."""

    path: Path  # the .sigmf-meta
    iq: np.ndarray
    sample_rate: float
    frequency_hz: float
    start: datetime
    latitude: float
    longitude: float
    altitude: float | None
    sha256: str
    hw: str | None
    ext: dict[str, Any]  # the heimdall:* fields of the global object


@dataclass(frozen=True)
class ImportResult:
    """What an import stored: its sessions (written now or already there) and the stations it added."""

    records: tuple[SessionRecord, ...]
    written: int
    already_present: int
    new_stations: tuple[str, ...]

    @property
    def without_truth(self) -> tuple[uuid.UUID, ...]:
        """Sessions stored as 'pending' because nothing said where their transmitter was."""
        return tuple(r.id for r in self.records if r.source is None)


# ---------------------------------------------------------------------------------------------- export


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
    """Write into a hidden folder beside the target, then move in: a failure leaves no partial files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".sigmf-export-"))
    try:
        for base, rec in recordings.items():
            rec.tofile(tmp / base, overwrite=True)  # validates the metadata first
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out_dir / f"{base}{META_EXT}" for base in recordings]


def export_session_sigmf(
    db: Database, store: ObjectStore, session_id: uuid.UUID | str, out_dir: Path, author: str | None = None
) -> list[Path]:
    """Write `{session}_{station}.sigmf-meta/-data` for every IQ measurement; returns the meta paths."""
    try:
        session = get_session(db, session_id)
    except SessionNotFoundError as exc:
        raise InterchangeError(f"cannot export: {exc}") from None
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


# ---------------------------------------------------------------------------------------------- import


def _number(path: Path, where: dict[str, Any], key: str, required: bool = False) -> float | None:
    """A finite number from metadata, None if absent and optional; otherwise an error naming the file."""
    value = where.get(key)
    if value is None:
        if required:
            raise InterchangeError(f"{path}: {key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InterchangeError(f"{path}: {key} must be a finite number, got {value!r}")
    return float(value)


def _uuid(path: Path, where: dict[str, Any], key: str) -> uuid.UUID | None:
    """A UUID from metadata (None if absent); a malformed one is an error naming the file."""
    value = where.get(key)
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InterchangeError(f"{path}: {key} {value!r} is not a UUID") from None


def find_recordings(paths: Iterable[str | Path]) -> list[Path]:
    """The `.sigmf-meta` of each path (meta, data, base name, or a folder of recordings), deduplicated."""
    metas: dict[Path, None] = {}
    for p in map(Path, paths):
        found = sorted(p.glob(f"*{META_EXT}")) if p.is_dir() else [get_sigmf_filenames(p)["meta_fn"]]
        metas.update(dict.fromkeys(m.absolute() for m in found))
    if not metas:
        raise InterchangeError("no SigMF recordings given (at least one .sigmf-meta + .sigmf-data is needed)")
    return list(metas)


def _line(text: object, limit: int = 300) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters: fit for a one-line error."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _max_bytes(max_bytes: int | None) -> int:
    """The import size cap per file: the argument, else the HEIMDALL_MAX_IMPORT_BYTES setting."""
    return Settings().max_import_bytes if max_bytes is None else max_bytes


def _check_size(meta: Path, file: Path, what: str, cap: int) -> int:
    """The size of `file` (the recording `meta`'s `what`) from stat, nothing read; refused above `cap`."""
    size = file.stat().st_size
    if size > cap:
        raise InterchangeError(
            f"{meta}: the {what} is {size} bytes, over the import size cap of {cap} bytes "
            "(set HEIMDALL_MAX_IMPORT_BYTES to raise it)"
        )
    return size


def _index(path: Path, item: dict[str, Any], key: str, what: str) -> int:
    value = item.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InterchangeError(f"{path}: {what} {key} must be an integer ≥ 0, got {_line(repr(value), 80)}")
    return value


def _check_indices(path: Path, metadata: dict[str, Any], n_samples: int) -> None:
    """Captures start inside the data (dataset-relative); annotations lie inside [offset, offset + n)."""
    offset = _index(path, metadata["global"], sigmf.OFFSET_KEY, "global")
    for i, capture in enumerate(metadata["captures"]):
        start = _index(path, capture, sigmf.SAMPLE_START_KEY, f"capture {i}")
        if start >= n_samples:
            raise InterchangeError(
                f"{path}: capture {i} starts at sample {start} but the data file holds only {n_samples}"
            )
    for i, ann in enumerate(metadata["annotations"]):
        start = _index(path, ann, sigmf.SAMPLE_START_KEY, f"annotation {i}")
        count = _index(path, ann, sigmf.SAMPLE_COUNT_KEY, f"annotation {i}")
        if start < offset or start + count > offset + n_samples:
            raise InterchangeError(
                f"{path}: annotation {i} covers samples [{start}, {start + count}) but the data file holds "
                f"samples [{offset}, {offset + n_samples})"
            )


def _metadata(path: Path) -> dict[str, Any]:
    """The .sigmf-meta as a schema-valid dict (UTF-8 JSON), checked before any data is read."""
    try:
        metadata = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InterchangeError(f"{path}: metadata is not UTF-8 text ({_line(exc.reason)})") from None
    except OSError as exc:
        raise InterchangeError(f"{path}: cannot read the metadata: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError, huge integers, deep nesting
        raise InterchangeError(f"{path}: metadata is not valid JSON: {_line(exc)}") from None
    if not isinstance(metadata, dict):
        raise InterchangeError(f"{path}: metadata must be a JSON object, got {type(metadata).__name__}")
    try:
        validate_metadata(metadata)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "top level"
        raise InterchangeError(f"{path}: invalid SigMF metadata at {where}: {_line(exc.message)}") from None
    except (jsonschema.SchemaError, RecursionError, KeyError, TypeError, ValueError) as exc:
        raise InterchangeError(f"{path}: invalid SigMF metadata: {_line(exc)}") from None
    return metadata


def _open(path: Path, max_bytes: int | None = None) -> SigMFFile:
    """Read and check metadata and data file sizes before reading samples; verify core:sha512 if given.

    Refused with an InterchangeError naming the file: files over the size cap, unreadable or invalid
    metadata, unsupported datatypes, non-conforming datasets, a data file that is not a whole number
    of samples, and captures or annotations that point outside the data.
    """
    if not path.is_file():
        raise InterchangeError(f"{path}: metadata file not found")
    cap = _max_bytes(max_bytes)
    data = get_sigmf_filenames(path)["data_fn"]
    _check_size(path, path, "metadata file", cap)  # both sizes are checked before either file is read
    if data.is_file():
        _check_size(path, data, f"data file {data.name}", cap)
    metadata = _metadata(path)
    g = metadata["global"]
    datatype = g.get(sigmf.DATATYPE_KEY)
    if datatype not in SUPPORTED_DATATYPES:
        supported = ", ".join(sorted(SUPPORTED_DATATYPES))
        raise InterchangeError(
            f"{path}: datatype {_line(repr(datatype), 80)} is not supported (complex IQ only: {supported})"
        )
    if g.get(sigmf.NUM_CHANNELS_KEY, 1) != 1:
        raise InterchangeError(f"{path}: multi-channel recordings are not supported (one receiver per file)")
    ncd = [k for k in (sigmf.DATASET_KEY, sigmf.METADATA_ONLY_KEY, sigmf.TRAILING_BYTES_KEY) if g.get(k)]
    ncd += [sigmf.HEADER_BYTES_KEY for c in metadata["captures"] if c.get(sigmf.HEADER_BYTES_KEY)][:1]
    if ncd:
        raise InterchangeError(
            f"{path}: {', '.join(ncd)}: non-conforming or metadata-only datasets are not supported "
            "(the samples must be the whole .sigmf-data beside the .sigmf-meta)"
        )
    if not data.is_file():
        raise InterchangeError(f"{path}: its data file {data} is missing")
    size = _check_size(path, data, f"data file {data.name}", cap)
    if size == 0:  # numpy cannot even map it
        raise InterchangeError(f"{path}: the data file {data} holds no samples")
    sample_size = dtype_info(datatype)["sample_size"]
    n_samples, rest = divmod(size, sample_size)
    if rest:
        raise InterchangeError(
            f"{path}: the data file {data.name} is {size} bytes, not a whole number of {datatype} samples "
            f"({sample_size} bytes each)"
        )
    _check_indices(path, metadata, n_samples)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # undeclared extension namespaces
            rec = SigMFFile(metadata=metadata, data_file=data)  # verifies core:sha512 when present
    except (SigMFError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InterchangeError(f"{path}: not a readable SigMF recording: {_line(exc)}") from None
    return rec


def _samples(path: Path, rec: SigMFFile) -> np.ndarray:
    """The samples as complex64 (fixed-point types scaled to ±1), refusing what a session cannot hold."""
    if rec.sample_count == 0:
        raise InterchangeError(f"{path}: the data file {rec.data_file} holds no samples")
    try:
        iq = np.ascontiguousarray(rec.read_samples(), dtype=np.complex64)
    except (SigMFError, OSError, ValueError) as exc:
        raise InterchangeError(f"{path}: cannot read the samples: {_line(exc)}") from None
    try:
        return check_iq(iq)
    except IQDataError as exc:
        raise InterchangeError(f"{path}: {exc}") from None


def _position(path: Path, rec: SigMFFile, capture: dict[str, Any]) -> tuple[float, float, float | None]:
    """(lat, lon, alt) of the receiver from core:geolocation (global, else the capture)."""
    geo = rec.get_global_field(sigmf.GEOLOCATION_KEY) or capture.get(sigmf.GEOLOCATION_KEY)
    if geo is None:
        raise InterchangeError(f"{path}: no {sigmf.GEOLOCATION_KEY}: Heimdall needs the receiver position")
    lon, lat, *alt = (float(c) for c in geo["coordinates"])  # shape checked by the schema
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InterchangeError(f"{path}: {sigmf.GEOLOCATION_KEY} [{lon}, {lat}] is not a [lon, lat] position")
    if alt and not math.isfinite(alt[0]):
        raise InterchangeError(f"{path}: {sigmf.GEOLOCATION_KEY} altitude {alt[0]} is not a finite number")
    return lat, lon, alt[0] if alt else None


def _start(path: Path, capture: dict[str, Any]) -> datetime:
    stamp = capture.get(sigmf.DATETIME_KEY)
    if not isinstance(stamp, str):
        raise InterchangeError(f"{path}: the capture has no {sigmf.DATETIME_KEY} (when it was recorded)")
    try:
        return parse_iso8601_datetime(stamp)
    except ValueError:
        raise InterchangeError(
            f"{path}: {sigmf.DATETIME_KEY} {stamp!r} is not 'YYYY-MM-DDThh:mm:ss[.f]Z'"
        ) from None


def read_recording(path: Path, max_bytes: int | None = None) -> Recording:
    """Load and check one recording; every problem is an InterchangeError naming the file.

    `max_bytes` caps each file's size (default: the HEIMDALL_MAX_IMPORT_BYTES setting).
    """
    rec = _open(path, max_bytes)
    captures = rec.get_captures()
    if len(captures) > 1:
        raise InterchangeError(f"{path}: {len(captures)} capture segments; one per recording is supported")
    capture = captures[0] if captures else {}
    iq = _samples(path, rec)
    lat, lon, alt = _position(path, rec, capture)
    with open(rec.data_file, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    hw = rec.get_global_field(sigmf.HW_KEY)
    rate = _number(path, rec.get_global_info(), sigmf.SAMPLE_RATE_KEY, required=True) or 0.0
    if rate <= 0:
        raise InterchangeError(f"{path}: {sigmf.SAMPLE_RATE_KEY} must be > 0, got {rate}")
    if not math.isfinite(iq.size / rate):
        raise InterchangeError(
            f"{path}: {sigmf.SAMPLE_RATE_KEY} {rate} is too small: {iq.size} samples last forever"
        )
    return Recording(
        path=path,
        iq=iq,
        sample_rate=rate,
        frequency_hz=_number(path, capture, sigmf.FREQUENCY_KEY, required=True),  # type: ignore[arg-type]
        start=_start(path, capture),
        latitude=lat,
        longitude=lon,
        altitude=alt,
        sha256=sha256,
        hw=hw if isinstance(hw, str) and hw.strip() else None,
        ext={k: v for k, v in rec.get_global_info().items() if k.startswith("heimdall:")},
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
        if not self.new:
            return True
        with db.sessions.begin() as q:
            for s in self.new:
                result = q.execute(
                    insert_ignoring_conflicts(db, WebSDRStation).values(**asdict(s), is_active=True)
                )
                if result.rowcount == 1:
                    self.inserted.append(s.id)
            ids = [s.id for s in self.new]
            rows = {
                r.id: (r.name, r.latitude, r.longitude)
                for r in q.scalars(select(WebSDRStation).where(WebSDRStation.id.in_(ids)))
            }
        for s in self.new:
            row = rows.get(s.id)
            if (
                row is None
                or row[0] != s.name
                or haversine_m(row[1], row[2], s.latitude, s.longitude) > SAME_POSITION_M
            ):
                self.remove_new(db)
                return False
        return True

    def remove_new(self, db: Database) -> None:
        """Delete the stations this import inserted, unless a measurement (anyone's) references them."""
        delete_unreferenced_stations(db, self.inserted)


def insert_ignoring_conflicts(db: Database, table: type) -> Insert:
    """INSERT that skips rows clashing with a unique key (a concurrent writer's identical row).

    ``ON CONFLICT DO NOTHING`` of SQLite and PostgreSQL, chosen by the engine's dialect; ``rowcount``
    of the executed statement tells whether the row was inserted (1) or already there (0).
    """
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise InterchangeError(f"station inserts are not supported on the {dialect!r} database dialect")


def delete_unreferenced_stations(db: Database, ids: Sequence[int]) -> None:
    """Clean-up after a failed import: delete these stations unless some measurement references one.

    A concurrent import may have matched and used a station this import created; its committed
    rows are never taken away. A failure here is logged, not raised (the original error matters).
    """
    if not ids:
        return
    referenced = exists().where(Measurement.websdr_station_id == WebSDRStation.id)
    try:
        with db.sessions.begin() as q:
            q.execute(delete(WebSDRStation).where(WebSDRStation.id.in_(list(ids)), ~referenced))
    except SQLAlchemyError as exc:
        log.warning("could not remove stations %s after a failed import: %s", list(ids), _line(exc))


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
