"""Read and check a power-only RSS CSV (``heimdall import rss``), no database. The layout (YOUR_NETWORK.md):

* **wide** — one row per session: ``tx_lat, tx_lon`` (the transmitter's truth), optional ``session``
  (a key, unique in the file), ``timestamp`` and ``tx_sigma_m``, and one ``rss_<station>`` column per
  receiver (``<station>`` = a registered station's name), with optional ``<station>_lat`` and
  ``<station>_lon`` columns for a receiver that moves (its position when it measured);
* **long** — one row per (session, receiver): ``session, station, rss_dbm, tx_lat, tx_lon`` and
  optional ``timestamp``, ``tx_sigma_m``, ``rx_lat, rx_lon`` (a moving receiver's position; empty
  for a receiver at its registered position). The session's truth must be the same on all its rows.

An **empty** RSS cell means "not received" (no measurement is stored, as for POWDER's absent
receivers), so no real reading is ever mistaken for a marker. A legacy marker value (POWDER's -101) may
be mapped to "not received" with ``missing_marker``; it is refused when it lies inside the range of the
file's real readings, where it could be one. In the wide layout a reading of a moving receiver
without a position is dropped (counted). A session nobody received is skipped (counted).
``timestamp`` is ISO 8601 (no zone = UTC) or Unix seconds; without the column, sessions get 1 s
apart from 2000-01-01 UTC in file order, which keeps a re-import identical. Any other column, an
unknown station, a repeated session (or session and station) is refused with one line naming the
file, line and column.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from heimdall.errors import DataError, UserError
from heimdall.settings import Settings

SESSION, STATION, RSS, TIMESTAMP = "session", "station", "rss_dbm", "timestamp"
TX_LAT, TX_LON, TX_SIGMA, RX_LAT, RX_LON = "tx_lat", "tx_lon", "tx_sigma_m", "rx_lat", "rx_lon"
RSS_PREFIX = "rss_"
WIDE_COLUMNS = (SESSION, TIMESTAMP, TX_LAT, TX_LON, TX_SIGMA)
LONG_COLUMNS = (SESSION, STATION, RSS, TIMESTAMP, TX_LAT, TX_LON, TX_SIGMA, RX_LAT, RX_LON)
NO_TIMESTAMP_BASE = datetime(2000, 1, 1, tzinfo=UTC)


class RssImportError(DataError):
    """The RSS CSV cannot be imported; the message names the file, line and column. Nothing written."""


@dataclass(frozen=True)
class RssReading:
    station: str
    rss_dbm: float
    latitude: float | None = None  # a moving receiver's position when it measured
    longitude: float | None = None


@dataclass(frozen=True)
class RssSession:
    key: str
    line: int  # first CSV line of the session
    start: datetime
    tx_lat: float
    tx_lon: float
    tx_sigma_m: float | None
    readings: tuple[RssReading, ...]


@dataclass
class RssData:
    """The parsed, checked file."""

    layout: str  # "wide" or "long"
    sessions: list[RssSession]
    stations: list[str]  # station names of the file, in column (wide) or first-seen (long) order
    cells: int = 0  # RSS cells read
    empty_cells: int = 0  # "not received": empty, or the missing marker
    marker_cells: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # sessions not imported, by reason
    dropped: Counter[str] = field(default_factory=Counter)  # single readings not stored, by reason


def _cut(text: object, limit: int = 80) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _number(text: str, where: str) -> float | None:
    """A finite number, or None for an empty cell."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise RssImportError(f"{where}: {_cut(repr(text))} is not a number") from None
    if not math.isfinite(value):
        raise RssImportError(f"{where}: {_cut(repr(text))} is not a finite number")
    return value


def _timestamp(text: str, where: str) -> datetime:
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise RssImportError(
            f"{where}: {_cut(repr(text))} is not an ISO 8601 time (2024-05-01T12:00:00Z) or Unix seconds"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _position(lat: float | None, lon: float | None, where: str, what: str) -> tuple[float, float] | None:
    if lat is None and lon is None:
        return None
    if lat is None or lon is None:
        raise RssImportError(f"{where}: {what} has a latitude or a longitude but not both")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise RssImportError(f"{where}: {what} ({lat}, {lon}) is out of range")
    return lat, lon


@dataclass
class _Draft:
    key: str
    line: int
    start: datetime | None
    truth: tuple[float, float]
    sigma: float | None
    readings: dict[str, tuple[float | None, tuple[float, float] | None, bool]]  # rss, position, moving


class _Reader:
    """One pass over the rows; sessions as drafts (the marker is applied once every value is known)."""

    def __init__(self, path: Path, header: list[str], known: Collection[str]) -> None:
        self.path, self.header, self.known = path, header, set(known)
        self.col = {h: i for i, h in enumerate(header)}
        self.drafts: dict[str, _Draft] = {}
        self.stations: list[str] = []

    def where(self, line: int, column: str | None = None) -> str:
        return f"{self.path}, line {line}" + (f", column {_cut(column)}" if column else "")

    def cell(self, row: list[str], name: str) -> str:
        return row[self.col[name]] if name in self.col else ""

    def num(self, row: list[str], name: str, line: int) -> float | None:
        return _number(self.cell(row, name), self.where(line, name))

    def session_fields(
        self, row: list[str], line: int
    ) -> tuple[datetime | None, tuple[float, float], float | None]:
        start = None
        if TIMESTAMP in self.col:
            text = self.cell(row, TIMESTAMP)
            if not text.strip():
                raise RssImportError(f"{self.where(line, TIMESTAMP)}: empty (every row needs its time)")
            start = _timestamp(text, self.where(line, TIMESTAMP))
        truth = _position(self.num(row, TX_LAT, line), self.num(row, TX_LON, line), self.where(line), "tx")
        if truth is None:
            raise RssImportError(f"{self.where(line)}: no transmitter position (tx_lat, tx_lon are empty)")
        sigma = self.num(row, TX_SIGMA, line)
        if sigma is not None and sigma < 0:
            raise RssImportError(f"{self.where(line, TX_SIGMA)}: must be ≥ 0 m, got {sigma:g}")
        return start, truth, sigma

    def check_station(self, name: str, where: str) -> None:
        if name not in self.known:
            raise RssImportError(
                f"{where}: station {_cut(repr(name))} is not registered: add it with "
                "`heimdall stations add FILE` or give --receivers FILE"
            )
        if name not in self.stations:
            self.stations.append(name)


def _wide(r: _Reader, rows: Iterator[tuple[int, list[str]]]) -> None:
    stations = [h.removeprefix(RSS_PREFIX) for h in r.header if h.startswith(RSS_PREFIX)]
    for s in stations:
        r.check_station(s, f"{r.path}, header, column {_cut(RSS_PREFIX + s)}")
    moving = {s for s in stations if f"{s}_lat" in r.col or f"{s}_lon" in r.col}
    allowed = {*WIDE_COLUMNS, *(RSS_PREFIX + s for s in stations)} | {
        f"{s}_{c}" for s in moving for c in ("lat", "lon")
    }
    extra = [h for h in r.header if h not in allowed]
    if extra:
        raise RssImportError(
            f"{r.path}, header: unknown column(s) {_cut(extra, 200)} (wide layout: "
            f"{', '.join(WIDE_COLUMNS)}, rss_<station>, <station>_lat, <station>_lon)"
        )
    if SESSION not in r.col and TIMESTAMP not in r.col:
        raise RssImportError(f"{r.path}, header: a wide file needs a 'session' or a 'timestamp' column")
    for line, row in rows:
        start, truth, sigma = r.session_fields(row, line)
        key = r.cell(row, SESSION).strip() if SESSION in r.col else r.cell(row, TIMESTAMP).strip()
        if not key:
            raise RssImportError(f"{r.where(line, SESSION)}: empty session key")
        if key in r.drafts:
            raise RssImportError(
                f"{r.where(line)}: session {_cut(repr(key))} repeats line {r.drafts[key].line}"
            )
        readings: dict[str, tuple[float | None, tuple[float, float] | None, bool]] = {}
        for s in stations:
            rss = r.num(row, RSS_PREFIX + s, line)
            pos = None
            if s in moving:
                pos = _position(
                    r.num(row, f"{s}_lat", line), r.num(row, f"{s}_lon", line), r.where(line), f"{s} position"
                )
            readings[s] = (rss, pos, s in moving)
        r.drafts[key] = _Draft(key, line, start, truth, sigma, readings)


def _long(r: _Reader, rows: Iterator[tuple[int, list[str]]]) -> None:
    extra = [h for h in r.header if h not in LONG_COLUMNS]
    if extra:
        raise RssImportError(
            f"{r.path}, header: unknown column(s) {_cut(extra, 200)} (long layout: {', '.join(LONG_COLUMNS)})"
        )
    missing = [c for c in (SESSION, STATION, RSS, TX_LAT, TX_LON) if c not in r.col]
    if missing:
        raise RssImportError(f"{r.path}, header: missing column(s) {', '.join(missing)}")
    moving = RX_LAT in r.col or RX_LON in r.col
    for line, row in rows:
        key = r.cell(row, SESSION).strip()
        if not key:
            raise RssImportError(f"{r.where(line, SESSION)}: empty session key")
        station = r.cell(row, STATION).strip()
        r.check_station(station, r.where(line, STATION))
        start, truth, sigma = r.session_fields(row, line)
        rss = r.num(row, RSS, line)
        pos = (
            _position(r.num(row, RX_LAT, line), r.num(row, RX_LON, line), r.where(line), "rx")
            if moving
            else None
        )
        d = r.drafts.get(key)
        if d is None:
            d = r.drafts[key] = _Draft(key, line, start, truth, sigma, {})
        elif max(abs(d.truth[0] - truth[0]), abs(d.truth[1] - truth[1])) > 1e-9 or d.sigma != sigma:
            raise RssImportError(
                f"{r.where(line)}: session {_cut(repr(key))} has another transmitter truth "
                f"than on line {d.line}"
            )
        elif start is not None and d.start is not None and start < d.start:
            d.start = start  # the session starts with its earliest measurement
        if station in d.readings:
            raise RssImportError(
                f"{r.where(line)}: station {_cut(repr(station))} repeats in session {_cut(repr(key))}"
            )
        d.readings[station] = (rss, pos, False)  # empty rx_lat/rx_lon: at its registered position


def _finish(r: _Reader, layout: str, missing_marker: float | None) -> RssData:
    data = RssData(layout, [], list(r.stations))
    values = [v for d in r.drafts.values() for v, _, _ in d.readings.values() if v is not None]
    if missing_marker is not None:
        real = [v for v in values if v != missing_marker]
        if real and min(real) < missing_marker < max(real):
            raise RssImportError(
                f"{r.path}: the missing marker {missing_marker:g} lies inside the range of the real "
                f"readings ({min(real):g} … {max(real):g}) and could be one: leave such cells empty instead"
            )
    for n, d in enumerate(r.drafts.values()):
        readings = []
        for station, (rss, pos, moving) in d.readings.items():
            data.cells += 1
            if rss is None or rss == missing_marker:
                data.empty_cells += 1
                data.marker_cells += rss is not None
                continue
            if moving and pos is None:
                data.dropped["moving_receiver_without_position"] += 1
                continue
            readings.append(RssReading(station, rss, *(pos or (None, None))))
        if not readings:
            data.skipped["no_receiver_heard"] += 1
            continue
        start = d.start if d.start is not None else NO_TIMESTAMP_BASE + timedelta(seconds=n)
        data.sessions.append(RssSession(d.key, d.line, start, *d.truth, d.sigma, tuple(readings)))
    return data


def read_rss(
    path: Path, known: Collection[str], missing_marker: float | None = None, max_bytes: int | None = None
) -> RssData:
    """Parse and check ``path`` against the ``known`` station names (see the module docstring).

    ``max_bytes`` caps the file's size (default: the HEIMDALL_MAX_IMPORT_BYTES setting), checked first.
    """
    path = Path(path)
    if missing_marker is not None and not math.isfinite(missing_marker):
        raise UserError(f"--missing-marker must be a finite number, got {missing_marker}")
    cap = Settings().max_import_bytes if max_bytes is None else max_bytes
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RssImportError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read its size: {exc.strerror or exc}") from None
    if size > cap:
        raise RssImportError(
            f"{path}: {size} bytes, over the import size cap of {cap} bytes (set HEIMDALL_MAX_IMPORT_BYTES)"
        )
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise RssImportError(f"{path}: file not found") from None
    except OSError as exc:
        raise RssImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.reader(f)
    try:
        with f:
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise RssImportError(f"{path}: empty file (no header row)")
            header = [h.strip() for h in header]
            dup = sorted(h for h, k in Counter(header).items() if k > 1)
            if dup:
                raise RssImportError(f"{path}, header: duplicate column(s) {_cut(dup, 200)}")
            r = _Reader(path, header, known)

            def rows() -> Iterator[tuple[int, list[str]]]:
                for row in reader:
                    if not row or all(not c.strip() for c in row):
                        continue
                    if len(row) != len(header):
                        raise RssImportError(
                            f"{path}, line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
                        )
                    yield reader.line_num, row

            is_long = STATION in r.col or RSS in r.col
            is_wide = any(h.startswith(RSS_PREFIX) and h != RSS for h in header)
            if is_long == is_wide:
                raise RssImportError(
                    f"{path}, header: give either rss_<station> columns (wide) or station and rss_dbm "
                    "columns (long), see docs/YOUR_NETWORK.md"
                )
            (_long if is_long else _wide)(r, rows())
    except UnicodeDecodeError as exc:
        raise RssImportError(f"{path}, line {reader.line_num + 1}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise RssImportError(f"{path}, line {reader.line_num}: not a readable CSV row: {_cut(exc)}") from None
    if not r.drafts:
        raise RssImportError(f"{path}: no data rows")
    return _finish(r, "long" if is_long else "wide", missing_marker)
