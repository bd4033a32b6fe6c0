"""Import the POWDER 462.7 MHz outdoor RSS dataset (University of Utah) as power-only sessions.

The dataset (``single_tx.csv`` + ``location_coordinates.json`` + the authors' ``random_test.json`` and
``grid_test.json``, see ``services/training/datasets/powder-462.7/README.md``) becomes rows of the
acquisition format (docs/TRAINING.md §2, docs/EVALUATION.md), written through
:func:`~heimdall.storage.recordings.write_sessions`:

* one session per CSV row (one transmitter sample), ``dataset = 'powder'``, no IQ; its id is a uuid5
  of the dataset label and the row's timestamp, so importing the same file again writes nothing;
* truth = (``tx_x_coord``, ``tx_y_coord``) = (latitude, longitude) of the handheld's GPS, with
  ``error_margin_meters = GPS_ERROR_M`` (5 m: a consumer GPS fix in the open, CEP of a few metres;
  the source gives no figure), ``power_dbm = 30`` (the radios were set to 1 W) and 462.7 MHz;
* one measurement per receiver that heard: ``signal_strength_db`` = its RSS (uncalibrated, relative
  to each device), ``snr_db`` unknown. ``-101`` means the receiver was absent/not reporting and is
  never stored. A bus receiver's position at that moment (``bus-N_x``/``bus-N_y``) is stored on the
  measurement row (``receiver_latitude/longitude``: a moving receiver); coordinates of ``-1`` or
  ``0.0`` mean the position is unknown, and a reading without a position is dropped (counted);
* receivers become ``websdr_stations`` rows named ``powder:<column>`` with ids above every existing
  (and every seeded) id, reused by name on re-import; a bus's row holds its mean position;
* ``notes`` (JSON) record split membership: ``{"powder_random": "train"|"test", "powder_grid": ...,
  "powder_timestamp": <the CSV timestamp>}`` from the test-set files (keyed by the same timestamp).

The timestamps carry no time zone in the source; they are stored as if UTC (training only uses their
order and spacing, e.g. to carve validation by time blocks). Every check runs before anything is
written: a malformed file leaves the database untouched.

This module reads and checks the files (no database); :mod:`heimdall.ingest.powder` stores them.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heimdall.errors import DataError, UserError
from heimdall.settings import Settings

DATASET = "powder"
FREQUENCY_HZ = 462.7e6
GPS_ERROR_M = 5.0  # truth uncertainty of the handheld's GPS fix (not given by the source; typical CEP)
TX_POWER_DBM = 30.0  # Baofeng BF-F8HP set to 1 W
SAMPLE_SECONDS = 10_000 / 2e6  # each RSS value is computed from N = 10,000 samples at 2 MS/s
ABSENT_RSS = -101.0
ABSENT_COORDS = (-1.0, 0.0)
STATION_PREFIX = "powder:"
NAMESPACE = uuid.UUID("5d0f3f0e-6a53-4c1e-9a55-0b1d3c2f4a62")
TIMESTAMP, TX_LAT, TX_LON = "timestamp", "tx_x_coord", "tx_y_coord"
BUS_SUFFIXES = ("_rss", "_x", "_y")
SPLIT_FILES = {"powder_random": "random_test.json", "powder_grid": "grid_test.json"}
COORDINATES_FILE = "location_coordinates.json"
CHUNK = 500
STATION_ATTEMPTS = 3  # resolve → insert rounds when a concurrent import takes the station ids we chose


class PowderImportError(DataError):
    """The POWDER files cannot be imported; the message names the file, line or column. Nothing written."""


@dataclass(frozen=True)
class Reading:
    receiver: str  # CSV column (fixed) or bus name (without _rss)
    rss_db: float
    latitude: float | None = None  # set for bus receivers only
    longitude: float | None = None


@dataclass(frozen=True)
class Sample:
    """One CSV row: a transmitter position and who heard it."""

    line: int
    timestamp: str
    start: datetime
    tx_lat: float
    tx_lon: float
    readings: tuple[Reading, ...]


@dataclass
class PowderData:
    """The parsed, checked files (no database involved)."""

    samples: list[Sample]
    fixed: dict[str, tuple[float, float]]  # receiver column → (lat, lon), in CSV column order
    buses: list[str]  # bus names in CSV column order
    test_sets: dict[str, set[str]]  # split key → test timestamps
    rss_cells: int = 0
    absent_cells: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # rows, by reason
    dropped: Counter[str] = field(default_factory=Counter)  # single readings, by reason


# ---------------------------------------------------------------------------------------------- parsing


def _line(text: object, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters (for one-line error messages)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _check_size(path: Path, cap: int | None) -> None:
    """Refuse a file over the import size cap (default: HEIMDALL_MAX_IMPORT_BYTES) before reading it."""
    cap = Settings().max_import_bytes if cap is None else cap
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        return  # the reader names the missing file
    except OSError as exc:  # no permission on a folder above it, a name too long, a loop of links
        raise UserError(f"{path}: cannot read its size: {exc.strerror or exc}") from None
    if size > cap:
        raise PowderImportError(
            f"{path}: {size} bytes, over the import size cap of {cap} bytes "
            "(set HEIMDALL_MAX_IMPORT_BYTES to raise it)"
        )


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise PowderImportError(f"{where}: {_line(repr(text), 80)} is not a number") from None
    if not math.isfinite(value):
        raise PowderImportError(f"{where}: {_line(repr(text), 80)} is not a finite number")
    return value


def _timestamp(text: str, where: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.strip())
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PowderImportError(
            f"{where}: timestamp {_line(repr(text), 80)} is not 'YYYY-MM-DD hh:mm:ss'"
        ) from None


def read_coordinates(path: Path, max_bytes: int | None = None) -> dict[str, tuple[float, float] | None]:
    """``location_coordinates.json``: a Python literal (tuples, None), so parsed with ast.literal_eval."""
    _check_size(path, max_bytes)
    try:
        data = ast.literal_eval(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PowderImportError(f"{path}: receiver coordinates file not found (give --coordinates)") from None
    except OSError as exc:  # a folder, no permission
        raise PowderImportError(
            f"{path}: cannot read the receiver coordinates: {exc.strerror or exc}"
        ) from None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise PowderImportError(
            f"{path}: not a Python/JSON mapping of receiver coordinates: {_line(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise PowderImportError(f"{path}: must map receiver names to (latitude, longitude) or None")
    out: dict[str, tuple[float, float] | None] = {}
    for name, pos in data.items():
        if pos is None:
            out[str(name)] = None
            continue
        if not (isinstance(pos, list | tuple) and len(pos) == 2):
            raise PowderImportError(
                f"{path}: {_line(repr(name), 80)} must be (latitude, longitude) or None, "
                f"got {_line(repr(pos), 80)}"
            )
        lat, lon = (_number(str(v), f"{path}: {_line(repr(name), 80)}") for v in pos)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise PowderImportError(
                f"{path}: {_line(repr(name), 80)} position ({lat}, {lon}) is out of range"
            )
        out[str(name)] = (lat, lon)
    return out


def read_test_set(path: Path, max_bytes: int | None = None) -> dict[str, Any]:
    """A test-set file: a JSON object keyed by the CSV timestamp ('YYYY-MM-DD hh:mm:ss')."""
    _check_size(path, max_bytes)
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise PowderImportError(f"{path}: test-set file not found") from None
    except OSError as exc:
        raise PowderImportError(f"{path}: cannot read the test-set file: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise PowderImportError(f"{path}: not valid JSON: {_line(exc)}") from None
    if not isinstance(data, dict):
        raise PowderImportError(f"{path}: must be a JSON object keyed by sample timestamp")
    return data


def _columns(
    header: list[str], path: Path, coords: dict[str, tuple[float, float] | None]
) -> tuple[dict[str, int], dict[str, tuple[int, int, int]]]:
    """(fixed receivers → column index, bus → (rss, x, y) indices); errors name the offending columns."""
    dup = sorted(h for h, n in Counter(header).items() if n > 1)
    if dup:
        raise PowderImportError(f"{path}: duplicate column(s) {_line(dup)}")
    missing = [c for c in (TIMESTAMP, TX_LAT, TX_LON) if c not in header]
    if missing:
        raise PowderImportError(
            f"{path}: missing required column(s) {missing} (timestamp and transmitter latitude/longitude)"
        )
    pos = {h: i for i, h in enumerate(header)}
    buses: dict[str, tuple[int, int, int]] = {}
    bus_cols: set[str] = set()
    for h in header:
        for suffix in BUS_SUFFIXES:
            if h.endswith(suffix) and h != TX_LAT and h != TX_LON:
                bus = h.removesuffix(suffix)
                need = [bus + s for s in BUS_SUFFIXES]
                absent = [c for c in need if c not in pos]
                if absent:
                    raise PowderImportError(
                        f"{path}: moving receiver {_line(repr(bus), 80)} needs columns {_line(need)}; "
                        f"missing {_line(absent)}"
                    )
                buses.setdefault(bus, tuple(pos[c] for c in need))  # type: ignore[arg-type]
                bus_cols.update(need)
    fixed_cols = [h for h in header if h not in bus_cols and h not in (TIMESTAMP, TX_LAT, TX_LON)]
    unknown = [h for h in fixed_cols if coords.get(h) is None]
    if unknown:
        raise PowderImportError(
            f"{path}: RSS column(s) {_line(unknown)} name no fixed receiver with a position in the "
            f"coordinates file (known fixed receivers: {_line(sorted(k for k, v in coords.items() if v))})"
        )
    return {h: pos[h] for h in fixed_cols}, buses


def read_powder(
    csv_path: Path,
    coordinates: Path | None = None,
    test_sets: dict[str, Path | None] | None = None,
    max_bytes: int | None = None,
) -> PowderData:
    """Parse and check the files. ``coordinates`` defaults to the CSV's sibling ``location_coordinates.json``;
    ``test_sets`` maps split keys (:data:`SPLIT_FILES`) to files; a key not given, or given as None,
    uses the CSV's sibling file of that name when it exists (else that split is not recorded).
    ``max_bytes`` caps each file's size (default: the HEIMDALL_MAX_IMPORT_BYTES setting)."""
    csv_path = Path(csv_path)
    coords = read_coordinates(
        Path(coordinates) if coordinates else csv_path.parent / COORDINATES_FILE, max_bytes
    )
    given = dict(test_sets or {})
    unknown_keys = sorted(set(given) - set(SPLIT_FILES))
    if unknown_keys:
        raise PowderImportError(f"unknown test-set key(s) {unknown_keys}; known: {list(SPLIT_FILES)}")
    test_files: dict[str, Path] = {}
    for key, name in SPLIT_FILES.items():
        path = given.get(key)
        if path is not None:
            test_files[key] = Path(path)
        elif (csv_path.parent / name).is_file():
            test_files[key] = csv_path.parent / name
    _check_size(csv_path, max_bytes)
    try:
        f = csv_path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise PowderImportError(f"{csv_path}: file not found") from None
    except OSError as exc:
        raise PowderImportError(f"{csv_path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.reader(f)
    try:
        with f:
            data, seen = _read_rows(csv_path, reader, coords)
    except UnicodeDecodeError as exc:
        raise PowderImportError(
            f"{csv_path}, line {reader.line_num + 1}: not UTF-8 text ({_line(exc.reason)})"
        ) from None
    except OSError as exc:  # a folder given as the CSV
        raise PowderImportError(f"{csv_path}: cannot read: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise PowderImportError(
            f"{csv_path}, line {reader.line_num}: not a readable CSV row: {_line(exc)}"
        ) from None
    if not seen:
        raise PowderImportError(f"{csv_path}: no data rows")
    by_stamp = {s.timestamp: s for s in data.samples}
    for key, path in test_files.items():
        data.test_sets[key] = _check_test_set(path, seen, csv_path, by_stamp, max_bytes)
    return data


def _read_rows(
    csv_path: Path, reader: Any, coords: dict[str, tuple[float, float] | None]
) -> tuple[PowderData, dict[str, int]]:
    """The checked rows of an open CSV reader; (data without test sets, timestamp → line)."""
    header = next(reader, None)
    if not header:
        raise PowderImportError(f"{csv_path}: empty file (no header row)")
    header = [h.strip() for h in header]
    fixed_idx, bus_idx = _columns(header, csv_path, coords)
    data = PowderData([], {h: coords[h] for h in fixed_idx}, list(bus_idx), {})  # type: ignore[misc]
    i_ts, i_lat, i_lon = header.index(TIMESTAMP), header.index(TX_LAT), header.index(TX_LON)
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise PowderImportError(
                f"{csv_path}, line {line}: {len(row)} fields, the header has {len(header)}"
            )
        where = f"{csv_path}, line {line}"
        stamp = row[i_ts].strip()
        if stamp in seen:
            raise PowderImportError(f"{where}: timestamp {_line(repr(stamp), 80)} repeats line {seen[stamp]}")
        seen[stamp] = line
        start = _timestamp(stamp, where)
        lat, lon = _number(row[i_lat], f"{where}, {TX_LAT}"), _number(row[i_lon], f"{where}, {TX_LON}")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat, lon) == (0.0, 0.0):
            raise PowderImportError(f"{where}: transmitter position ({lat}, {lon}) is not a position")
        readings: list[Reading] = []
        for name, k in fixed_idx.items():
            rss = _number(row[k], f"{where}, column {_line(name, 80)}")
            data.rss_cells += 1
            if rss == ABSENT_RSS:
                data.absent_cells += 1
                continue
            readings.append(Reading(name, rss))
        for bus, (kr, kx, ky) in bus_idx.items():
            col = f"{where}, column {_line(bus, 80)}"
            rss = _number(row[kr], f"{col}_rss")
            bx, by = _number(row[kx], f"{col}_x"), _number(row[ky], f"{col}_y")
            data.rss_cells += 1
            if rss == ABSENT_RSS:
                data.absent_cells += 1
                continue
            if bx in ABSENT_COORDS or by in ABSENT_COORDS:
                data.dropped["bus_reading_without_position"] += 1
                continue
            if not (-90 <= bx <= 90 and -180 <= by <= 180):
                raise PowderImportError(f"{where}: {_line(bus, 80)} position ({bx}, {by}) is out of range")
            readings.append(Reading(bus, rss, bx, by))
        if not readings:
            data.skipped["no_receiver_present"] += 1
            continue
        data.samples.append(Sample(line, stamp, start, lat, lon, tuple(readings)))
    return data, seen


def _check_test_set(
    path: Path, seen: dict[str, int], csv_path: Path, samples: dict[str, Sample], max_bytes: int | None = None
) -> set[str]:
    """The test timestamps, all of which must be CSV rows (with the same transmitter position if given)."""
    entries = read_test_set(path, max_bytes)
    stamps = {str(k).strip() for k in entries}
    foreign = sorted(stamps - set(seen))
    if foreign:
        raise PowderImportError(
            f"{path}: {len(foreign)} test sample(s) are not rows of {csv_path} (e.g. {_line(foreign[:3])}): "
            "the test set must belong to this file"
        )
    for key, entry in entries.items():
        s = samples.get(str(key).strip())
        tx = entry.get("tx_coords") if isinstance(entry, dict) else None
        if s is None or not (
            isinstance(tx, list) and tx and isinstance(tx[0], list | tuple) and len(tx[0]) == 2
        ):
            continue
        where = f"{path}: sample {_line(repr(key), 80)}, tx_coords"
        lat, lon = (_coordinate(v, where) for v in tx[0])
        if abs(lat - s.tx_lat) > 1e-6 or abs(lon - s.tx_lon) > 1e-6:
            raise PowderImportError(
                f"{path}: sample {_line(repr(key), 80)} has transmitter ({lat}, {lon}), but {csv_path} "
                f"line {s.line} says ({s.tx_lat}, {s.tx_lon})"
            )
    return stamps


def _coordinate(value: object, where: str) -> float:
    """A JSON number of a test-set file (a bool, string or null is refused, naming the place)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PowderImportError(f"{where}: {_line(repr(value), 80)} is not a number")
    return _number(str(value), where)
