"""Your own receiver network: ``heimdall stations add FILE`` and ``heimdall stations list``.

A stations file is CSV (a header row naming the columns) or YAML (a list of mappings, or a mapping
with a ``stations:`` list) with the columns of :data:`COLUMNS`; ``name``, ``latitude`` and
``longitude`` are required, an empty ``id`` takes the next free id (or the id of the stored station
of that name and position). Every row is checked before anything is written; re-adding the same
stations is a no-op, a station clashing with a stored one (same id or name, another station) is an error.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from heimdall.errors import PathNotFoundError, UserError
from heimdall.settings import Settings
from heimdall.stations import STATION_FILE_COLUMNS as COLUMNS
from heimdall.storage.database import DatabaseMissingError, open_database
from heimdall.storage.stations import CHOOSE_ID, NewStation, list_stations, register_stations

REQUIRED = ("name", "latitude", "longitude")
MAX_STATION_ID = 2**31 - 1
MAX_FILE_BYTES = 16 * 2**20


class StationFileError(UserError):
    """A stations file that cannot be read or has a bad row; the message names the file, row and field."""


class AddStationsRequest(BaseModel):
    file: Path


class AddStationsOutcome(BaseModel):
    file: str
    added: list[int]  # ids inserted
    present: list[int]  # ids already stored as given (no-op)
    database: str  # URL, password masked


class StationInfo(BaseModel):
    id: int
    name: str
    latitude: float
    longitude: float
    altitude_asl: float | None
    url: str | None
    frequency_min_hz: float | None
    frequency_max_hz: float | None
    active: bool


class ListStationsOutcome(BaseModel):
    database: str  # where it looked (URL, password masked)
    missing: str | None = None  # "no database at …" when the embedded file does not exist (nothing created)
    stations: list[StationInfo]


def _fail(file: Path, row: int, field: str, msg: str) -> StationFileError:
    return StationFileError(f"{file}: row {row}: {field}: {msg}")


def _number(file: Path, row: int, field: str, v: Any) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise _fail(file, row, field, f"must be a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise _fail(file, row, field, f"must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise _fail(file, row, field, f"must be a finite number, got {v!r}")
    return x


def _text(file: Path, row: int, field: str, v: Any, limit: int) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise _fail(file, row, field, f"must be text, got {v!r}")
    text = str(v).strip()
    if len(text) > limit:
        raise _fail(file, row, field, f"longer than {limit} characters")
    return text or None


def _station(file: Path, row: int, values: dict[str, Any]) -> NewStation:
    unknown = sorted(str(k) for k in values if k not in COLUMNS)
    if unknown:
        raise _fail(file, row, unknown[0], f"unknown column (the columns are {', '.join(COLUMNS)})")
    raw_id = values.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        sid = CHOOSE_ID
    else:
        x = _number(file, row, "id", raw_id)
        if x is None or x != int(x) or not 1 <= x <= MAX_STATION_ID:
            raise _fail(file, row, "id", f"must be a whole number from 1 to {MAX_STATION_ID}, got {raw_id!r}")
        sid = int(x)
    name = _text(file, row, "name", values.get("name"), 128)
    if name is None:
        raise _fail(file, row, "name", "missing (every station needs a name)")
    nums = {f: _number(file, row, f, values.get(f)) for f in COLUMNS[2:] if f != "url"}
    for f in ("latitude", "longitude"):
        if nums[f] is None:
            raise _fail(file, row, f, "missing")
    lat, lon = nums["latitude"], nums["longitude"]
    assert lat is not None and lon is not None
    if not -90.0 <= lat <= 90.0:
        raise _fail(file, row, "latitude", f"must be within -90…90 degrees, got {lat:g}")
    if not -180.0 <= lon <= 180.0:
        raise _fail(file, row, "longitude", f"must be within -180…180 degrees, got {lon:g}")
    fmin, fmax = nums["frequency_min_hz"], nums["frequency_max_hz"]
    for f, v in (("frequency_min_hz", fmin), ("frequency_max_hz", fmax)):
        if v is not None and v <= 0:
            raise _fail(file, row, f, f"must be > 0 Hz, got {v:g}")
    if fmin is not None and fmax is not None and fmin > fmax:
        raise _fail(file, row, "frequency_max_hz", f"{fmax:g} is below frequency_min_hz {fmin:g}")
    return NewStation(
        id=sid,
        name=name,
        latitude=lat,
        longitude=lon,
        altitude_asl=nums["altitude_asl"],
        url=_text(file, row, "url", values.get("url"), 512),
        frequency_min_hz=fmin,
        frequency_max_hz=fmax,
    )


def _rows(file: Path, text: str) -> list[dict[str, Any]]:
    """The file's rows as mappings (row 1 = the first station)."""
    if file.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        try:
            header = reader.fieldnames
            if not header:
                raise StationFileError(f"{file}: empty file (expected a header row: {','.join(COLUMNS)})")
            header = [h.strip() for h in header]
            reader.fieldnames = header
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise StationFileError(f"{file}: header: missing column(s) {', '.join(missing)}")
            out = []
            for n, r in enumerate(reader, start=1):
                if None in r:
                    raise _fail(file, n, "(row)", f"more values than the {len(header)} columns")
                if any(v is None for v in r.values()):
                    raise _fail(file, n, "(row)", f"fewer values than the {len(header)} columns")
                out.append({k: (v if v.strip() else None) for k, v in r.items()})
            return out
        except csv.Error as exc:
            raise StationFileError(f"{file}: line {reader.line_num}: not valid CSV: {exc}") from None
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise StationFileError(f"{file}: not valid YAML: {' '.join(str(exc).split())}") from None
        if isinstance(data, dict) and set(data) == {"stations"}:
            data = data["stations"]
        if not isinstance(data, list):
            raise StationFileError(
                f"{file}: expected a list of stations (or a mapping with a 'stations' list)"
            )
        for n, item in enumerate(data, start=1):
            if not isinstance(item, dict):
                raise _fail(file, n, "(row)", f"expected a mapping of {', '.join(REQUIRED)}, …; got {item!r}")
        return data
    raise StationFileError(f"{file}: unknown file type {file.suffix or '(none)'!r}: use .csv, .yaml or .yml")


def read_stations_file(file: Path) -> list[NewStation]:
    """Parse and check a stations file (ids :data:`CHOOSE_ID` where not given); nothing is written."""
    if not file.is_file():
        raise PathNotFoundError(f"{file}: no such stations file")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise StationFileError(f"{file}: larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StationFileError(f"{file}: cannot read: {exc}") from None
    stations = [_station(file, n, r) for n, r in enumerate(_rows(file, text), start=1)]
    if not stations:
        raise StationFileError(f"{file}: no stations in the file")
    names: dict[str, int] = {}
    ids: dict[int, int] = {}
    for n, st in enumerate(stations, start=1):
        if st.name in names:
            raise _fail(file, n, "name", f"{st.name!r} is also the name of row {names[st.name]}")
        names[st.name] = n
        if st.id != CHOOSE_ID:
            if st.id in ids:
                raise _fail(file, n, "id", f"{st.id} is also the id of row {ids[st.id]}")
            ids[st.id] = n
    return stations


def add_stations(request: AddStationsRequest, settings: Settings) -> AddStationsOutcome:
    """Register the file's stations (all checked first; identical ones a no-op, clashing ones an error)."""
    stations = read_stations_file(request.file)
    labels = [f"{request.file}: row {n}" for n in range(1, len(stations) + 1)]
    db = open_database(settings.resolved_database_url, settings.connect_timeout_s)
    try:
        done = register_stations(db, stations, labels)
        return AddStationsOutcome(
            file=str(request.file), added=done.added, present=done.present, database=db.safe_url
        )
    finally:
        db.dispose()


def stations(settings: Settings) -> ListStationsOutcome:
    """Every stored station; an embedded database that does not exist yet is reported, not created."""
    try:
        db = open_database(settings.resolved_database_url, settings.connect_timeout_s, create=False)
    except DatabaseMissingError as exc:
        return ListStationsOutcome(database=str(exc.path), missing=str(exc), stations=[])
    try:
        rows = list_stations(db)
        return ListStationsOutcome(
            database=db.safe_url,
            stations=[
                StationInfo(
                    id=r.id,
                    name=r.name,
                    latitude=r.latitude,
                    longitude=r.longitude,
                    altitude_asl=r.altitude_asl,
                    url=r.url,
                    frequency_min_hz=r.frequency_min_hz,
                    frequency_max_hz=r.frequency_max_hz,
                    active=r.is_active,
                )
                for r in rows
            ],
        )
    finally:
        db.dispose()
