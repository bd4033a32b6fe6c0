"""SigMF interchange, the vocabulary: the `heimdall` extension keys, limits and the records passed around.

One SigMF recording (`.sigmf-meta` + `.sigmf-data`) holds one receiver's IQ of one session; a
session is the set of recordings sharing `heimdall:session_id` (or, for foreign files without it,
the files imported together). What Heimdall needs beyond the SigMF core (station, measurement
values, the known transmitter) travels in the optional `heimdall` extension namespace, spelled only
by the constants below, so an export re-imports into any database as the very same session.
Reading and checking files is :mod:`heimdall.ingest.sigmf_read`, writing them
:mod:`heimdall.ingest.sigmf_export`, storing them :mod:`heimdall.ingest.sigmf_store`.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import DataError
from heimdall.storage.recordings import SessionRecord

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


def _line(text: object, limit: int = 300) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters: fit for a one-line error."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


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
