"""A user's own recordings for inference, with no database: SigMF files or ``.npy`` IQ + a JSON sidecar.

``heimdall locate`` reads recordings made outside Heimdall, one file per receiver, and groups them into
captures (one transmission heard by several receivers) by capture time. Two inputs are read:

* **SigMF**: ``NAME.sigmf-meta`` + ``NAME.sigmf-data`` (or their folder), checked by
  :func:`heimdall.ingest.sigmf_read.read_recording` exactly as ``heimdall import sigmf`` checks them. The
  receiver is ``heimdall:station_id`` when present, else the model receiver at the ``core:geolocation``.
* **NumPy**: ``NAME.npy`` (1-D complex64/complex128 IQ in √mW) + ``NAME.json``, the sidecar
  (:data:`SIDECAR_KEYS`; see docs/INFERENCE_HANDOFF.md).

Every unreadable or malformed file is a :class:`~heimdall.errors.DataError` naming it: a bad file stops
the whole command before the model runs, while a readable recording the model cannot use is refused by
:mod:`heimdall.inference.checks` and the others go on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import DataError, PathNotFoundError, UserError
from heimdall.ingest.sigmf_format import META_EXT, SESSION_ID, STATION_ID, STATION_NAME, TRUTH
from heimdall.ingest.sigmf_read import read_recording
from heimdall.storage.iq import IQDataError, check_iq

__all__ = [
    "CARRIER_TOLERANCE",
    "SIDECAR_KEYS",
    "Capture",
    "RecordingInputError",
    "UserRecording",
    "group_captures",
    "read_user_recordings",
]

#: Sidecar keys: required first three, then optional ones. Any other key is refused (it is a typo).
SIDECAR_KEYS = ("station_id", "sample_rate_hz", "capture_start", "frequency_hz", "truth", "session")
_REQUIRED_SIDECAR = SIDECAR_KEYS[:3]
_MAX_SIDECAR_BYTES = 1 << 20
_DATA_EXT = ".sigmf-data"


class RecordingInputError(DataError):
    """A recording file that cannot be read or is malformed; the message names the file."""


@dataclass(frozen=True, eq=False)
class UserRecording:
    """One receiver's recording as the user gave it (before any resampling or cropping)."""

    source: Path  # the .sigmf-meta or .npy
    iq: np.ndarray  # complex64 (n,)
    sample_rate_hz: float
    start: datetime  # capture start (UTC)
    station_id: int | None = None  # None: identify by position
    station_name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    frequency_hz: float | None = None
    session: str | None = None  # heimdall:session_id or the sidecar's "session": splits a time group
    truth_latlon: tuple[float, float] | None = None

    @property
    def duration_s(self) -> float:
        return self.iq.size / self.sample_rate_hz


@dataclass(frozen=True)
class Capture:
    """The recordings of one transmission: one estimate."""

    label: str  # the session id when the files carry one, else the capture start (ISO 8601)
    start: datetime
    recordings: tuple[UserRecording, ...]
    truth_latlon: tuple[float, float] | None
    frequency_hz: float | None = None  # the carrier the recordings state (median); None = none states it


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------------------
# SigMF
# --------------------------------------------------------------------------------------------------------


def _truth(where: Path, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordingInputError(f"{where}: truth must be an object with latitude and longitude")
    lat, lon = (_finite(where, value, k, f"truth {k}") for k in ("latitude", "longitude"))
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise RecordingInputError(f"{where}: truth ({lat}, {lon}) is not a latitude/longitude")
    return lat, lon


def _finite(where: Path, obj: dict[str, Any], key: str, what: str | None = None) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordingInputError(f"{where}: {what or key} must be a finite number, got {value!r}")
    return float(value)


def _station_id(where: Path, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordingInputError(f"{where}: station id must be an integer ≥ 0, got {value!r}")
    return value


def _read_sigmf(meta: Path, max_bytes: int) -> UserRecording:
    rec = read_recording(meta, max_bytes)  # InterchangeError (a DataError) naming the file
    ext = rec.ext
    name = ext.get(STATION_NAME) or rec.hw
    session = ext.get(SESSION_ID)
    return UserRecording(
        source=meta,
        iq=rec.iq,
        sample_rate_hz=rec.sample_rate,
        start=rec.start,
        station_id=_station_id(meta, ext.get(STATION_ID)),
        station_name=str(name) if name else None,
        latitude=rec.latitude,
        longitude=rec.longitude,
        # core:frequency ≤ 0 (a file centred on 0 Hz) states no carrier: the model reads it as unknown
        frequency_hz=rec.frequency_hz if rec.frequency_hz is not None and rec.frequency_hz > 0 else None,
        session=str(session) if session is not None else None,
        truth_latlon=_truth(meta, ext.get(TRUTH)),
    )


# --------------------------------------------------------------------------------------------------------
# .npy + JSON sidecar
# --------------------------------------------------------------------------------------------------------


def _sidecar(npy: Path) -> dict[str, Any]:
    side = npy.with_suffix(".json")
    if not side.is_file():
        raise RecordingInputError(
            f"{npy}: its sidecar {side.name} is missing (JSON with {', '.join(_REQUIRED_SIDECAR)})"
        )
    if side.stat().st_size > _MAX_SIDECAR_BYTES:
        raise RecordingInputError(f"{side}: a sidecar of {side.stat().st_size} bytes is not a sidecar")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordingInputError(f"{side}: not valid JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise RecordingInputError(f"{side}: must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        raise RecordingInputError(f"{side}: unknown key(s) {unknown}; the keys are {list(SIDECAR_KEYS)}")
    missing = [k for k in _REQUIRED_SIDECAR if data.get(k) is None]
    if missing:
        raise RecordingInputError(f"{side}: {', '.join(missing)} missing")
    return data


def _start(where: Path, value: Any) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise RecordingInputError(
            f"{where}: capture_start {value!r} is not an ISO 8601 time (e.g. 2025-05-01T12:00:00Z)"
        ) from None
    if ts.tzinfo is None:
        raise RecordingInputError(f"{where}: capture_start {value!r} has no time zone (end with Z: UTC)")
    return ts.astimezone(UTC)


def _read_npy(npy: Path, max_bytes: int) -> UserRecording:
    size = npy.stat().st_size
    if size > max_bytes:
        raise RecordingInputError(
            f"{npy}: {size} bytes, over the import size cap of {max_bytes} bytes (HEIMDALL_MAX_IMPORT_BYTES)"
        )
    meta = _sidecar(npy)
    side = npy.with_suffix(".json")
    try:
        arr = np.load(npy, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RecordingInputError(f"{npy}: not a readable .npy array: {' '.join(str(exc).split())}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype not in (np.complex64, np.complex128):
        raise RecordingInputError(
            f"{npy}: dtype {getattr(arr, 'dtype', type(arr).__name__)}, expected complex64 or complex128 IQ "
            "(calibrated, √mW)"
        )
    iq = np.ascontiguousarray(arr.astype(np.complex64, copy=False))
    try:
        check_iq(iq)
    except IQDataError as exc:
        raise RecordingInputError(f"{npy}: {exc}") from None
    rate = _finite(side, meta, "sample_rate_hz")
    if rate <= 0:
        raise RecordingInputError(f"{side}: sample_rate_hz must be > 0, got {rate}")
    freq = None if meta.get("frequency_hz") is None else _finite(side, meta, "frequency_hz")
    if freq is not None and freq <= 0:
        raise RecordingInputError(f"{side}: frequency_hz must be the carrier in Hz (> 0), got {freq}")
    return UserRecording(
        source=npy,
        iq=iq,
        sample_rate_hz=rate,
        start=_start(side, meta["capture_start"]),
        station_id=_station_id(side, meta["station_id"]),
        frequency_hz=freq,
        session=None if meta.get("session") is None else str(meta["session"]),
        truth_latlon=_truth(side, meta.get("truth")),
    )


# --------------------------------------------------------------------------------------------------------
# Files → recordings → captures
# --------------------------------------------------------------------------------------------------------


def _files(paths: Iterable[Path]) -> list[Path]:
    """The .sigmf-meta and .npy files the paths name (a folder: those in it), deduplicated, in order."""
    found: dict[Path, None] = {}
    for p in paths:
        if p.is_dir():
            inside = sorted([*p.glob(f"*{META_EXT}"), *p.glob("*.npy")])
            if not inside:
                raise UserError(f"{p}: no recordings here (.sigmf-meta + .sigmf-data, or .npy + .json)")
            found.update(dict.fromkeys(f.absolute() for f in inside))
            continue
        if p.suffix == ".npy" or (p.suffix == ".json" and p.with_suffix(".npy").exists()):
            target = p.with_suffix(".npy")
        elif p.name.endswith((META_EXT, _DATA_EXT)):
            target = p.with_name(p.name.rsplit(".", 1)[0] + META_EXT)
        elif p.with_name(p.name + META_EXT).exists():
            target = p.with_name(p.name + META_EXT)  # a SigMF base name
        else:
            target = p
        if not target.exists():
            raise PathNotFoundError(f"{target}: no such recording")
        if target.suffix != ".npy" and not target.name.endswith(META_EXT):
            raise UserError(f"{p}: not a recording (give .sigmf-meta/.sigmf-data, .npy + .json, or a folder)")
        found[target.absolute()] = None
    if not found:
        raise UserError("no recordings given")
    return list(found)


def read_user_recordings(paths: Sequence[str | Path], max_bytes: int) -> list[UserRecording]:
    """Read every recording the paths name; a bad file is a :class:`RecordingInputError` naming it."""
    out = []
    for f in _files([Path(p).expanduser() for p in paths]):
        out.append(_read_npy(f, max_bytes) if f.suffix == ".npy" else _read_sigmf(f, max_bytes))
    return out


def _truth_of(group: Sequence[UserRecording]) -> tuple[float, float] | None:
    truths = {r.truth_latlon for r in group if r.truth_latlon is not None}
    if len(truths) > 1:
        listing = ", ".join(str(r.source) for r in group if r.truth_latlon is not None)
        raise RecordingInputError(f"the recordings of one capture disagree on the truth: {listing}")
    return next(iter(truths), None)


#: Recordings of one capture whose centre frequencies differ by more than this fraction are not one
#: transmission (receivers tuned a few kHz apart around 433.5 MHz differ by ~1e-5).
CARRIER_TOLERANCE = 1e-3


def _frequency_of(group: Sequence[UserRecording]) -> float | None:
    """The capture's carrier: the median of the frequencies its files state (SigMF ``core:frequency``,
    the sidecar's ``frequency_hz``); None when none does. Files that disagree beyond
    :data:`CARRIER_TOLERANCE` are a RecordingInputError (two bands are two transmissions)."""
    stated = sorted(r.frequency_hz for r in group if r.frequency_hz is not None)
    if not stated:
        return None
    carrier = float(np.median(stated))
    if stated[-1] - stated[0] > CARRIER_TOLERANCE * carrier:
        listing = ", ".join(
            f"{r.source.name} {r.frequency_hz:g} Hz" for r in group if r.frequency_hz is not None
        )
        raise RecordingInputError(
            f"the recordings of one capture disagree on the carrier frequency ({listing}): give each band's "
            "recordings separately, or name their sessions apart"
        )
    return carrier


def group_captures(recordings: Sequence[UserRecording]) -> list[Capture]:
    """Recordings that overlap in time are one capture; files that name different sessions stay apart.

    Sorted by start, a recording joins the current group when it starts before the end of the group's
    first recording (receivers' clocks differ by far less than a recording lasts); otherwise it opens a
    new group. Within a time group, recordings carrying different session names (``heimdall:session_id``,
    the sidecar's ``session``) are separate captures. A capture's carrier is what its files state
    (:func:`_frequency_of`), the model's ``frequency_hz`` input.
    """
    groups: list[list[UserRecording]] = []
    for r in sorted(recordings, key=lambda r: (r.start, str(r.source))):
        first = groups[-1][0] if groups else None
        if first is not None and r.start < first.start + timedelta(seconds=first.duration_s):
            groups[-1].append(r)
        else:
            groups.append([r])
    captures = []
    for group in groups:
        by_session: dict[str | None, list[UserRecording]] = {}
        for r in group:
            by_session.setdefault(r.session, []).append(r)
        for session, members in by_session.items():
            start = min(r.start for r in members)
            captures.append(
                Capture(
                    label=session if session is not None else _iso(start),
                    start=start,
                    recordings=tuple(members),
                    truth_latlon=_truth_of(members),
                    frequency_hz=_frequency_of(members),
                )
            )
    return sorted(captures, key=lambda c: (c.start, c.label))
