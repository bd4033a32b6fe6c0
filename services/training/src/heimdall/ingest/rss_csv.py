"""Import a power-only RSS dataset from one CSV (``heimdall import rss``): any network's, not only POWDER's.

:mod:`heimdall.ingest.rss_read` reads and checks the file (its docstring is the layout); this module
stores it the way POWDER is stored: one session per transmitter sample, ``dataset`` = the label, no
IQ, one measurement per receiver that heard (``signal_strength_db`` = the reading in dBm, ``snr_db``
unknown, a moving receiver's position on the measurement row), the truth as the known source with its
uncertainty and, when known, its transmit power. Session ids are uuid5 of the label and the session
key, so importing the same file again writes nothing. The receivers must be registered stations:
stations given with the import (``heimdall import rss --receivers FILE``) are registered only once
the whole CSV has been checked, and removed again if the very first chunk of sessions fails.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from heimdall.ingest.rss_read import RssData, RssImportError, read_rss
from heimdall.storage.database import Database
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.recordings import MeasurementRecord, SessionRecord, SourceRecord, write_sessions
from heimdall.storage.schema import APPROVAL_STATUSES
from heimdall.storage.stations import NewStation, list_stations, register_stations, remove_unused_stations

NAMESPACE = uuid.UUID("0b6f5c1e-3f9a-4d5e-8c21-7e4a9d2b6f10")
CHUNK = 500


@dataclass(frozen=True)
class RssOptions:
    """What the file does not say: the label, carrier, transmit power and the truth's uncertainty."""

    dataset: str
    frequency_hz: float
    tx_power_dbm: float | None = None  # None: unknown
    truth_sigma_m: float = 0.0  # where the file has no tx_sigma_m
    missing_marker: float | None = None
    approval: str = "approved"

    def check(self) -> None:
        if not (0 < len(self.dataset) <= 100) or not self.dataset.strip():
            raise RssImportError(f"dataset label must be 1 to 100 characters, got {self.dataset!r}")
        if not (math.isfinite(self.frequency_hz) and self.frequency_hz > 0):
            raise RssImportError(f"--frequency-hz must be a positive number of Hz, got {self.frequency_hz}")
        if self.tx_power_dbm is not None and not math.isfinite(self.tx_power_dbm):
            raise RssImportError(f"--tx-power-dbm must be a number or 'unknown', got {self.tx_power_dbm}")
        if not (math.isfinite(self.truth_sigma_m) and self.truth_sigma_m >= 0):
            raise RssImportError(f"--truth-sigma-m must be ≥ 0 m, got {self.truth_sigma_m}")
        if self.approval not in APPROVAL_STATUSES:
            raise RssImportError(f"approval must be one of {APPROVAL_STATUSES}, got {self.approval!r}")


@dataclass(frozen=True)
class RssImportResult:
    """What an import found and stored."""

    layout: str
    sessions: int  # importable sessions (written now + already present)
    written: int
    already_present: int
    skipped: dict[str, int]  # sessions not imported, by reason
    dropped_readings: dict[str, int]
    measurements: int
    receivers: tuple[str, ...]  # station names the file uses
    receivers_registered: tuple[str, ...]  # stations the import added
    moving_readings: int
    not_received_fraction: float  # share of RSS cells empty (or the missing marker)
    seconds: float


def _records(data: RssData, ids: dict[str, int], options: RssOptions) -> list[SessionRecord]:
    records = []
    for s in data.sessions:
        sid = uuid.uuid5(NAMESPACE, f"{options.dataset}/{s.key}")
        measurements = [
            MeasurementRecord(
                id=uuid.uuid5(sid, f"receiver/{ids[r.station]}"),
                timestamp=s.start,
                station_id=ids[r.station],
                frequency_hz=options.frequency_hz,
                signal_strength_db=r.rss_dbm,
                snr_db=None,
                receiver_latitude=r.latitude,
                receiver_longitude=r.longitude,
            )
            for r in s.readings
        ]
        records.append(
            SessionRecord(
                id=sid,
                acquisition_task_id=f"{options.dataset}/{s.key}"[:255],
                dataset=options.dataset,
                session_start=s.start,
                duration_seconds=0.0,
                measurements=tuple(sorted(measurements, key=lambda m: m.station_id)),
                source=SourceRecord(
                    id=uuid.uuid5(sid, "known_source"),
                    name=f"{options.dataset} transmitter {s.key}"[:255],
                    latitude=s.tx_lat,
                    longitude=s.tx_lon,
                    power_dbm=options.tx_power_dbm,
                    error_margin_meters=s.tx_sigma_m if s.tx_sigma_m is not None else options.truth_sigma_m,
                    frequency_hz=options.frequency_hz,
                ),
                approval_status=options.approval,
                notes=json.dumps({"rss_session": s.key, "rss_line": s.line}, sort_keys=True),
            )
        )
    return records


def import_rss(
    db: Database,
    store: ObjectStore,
    bucket: str,
    csv_path: Path,
    options: RssOptions,
    receivers: Sequence[NewStation] = (),
    receiver_labels: Sequence[str] | None = None,
    chunk_size: int = CHUNK,
    max_bytes: int | None = None,
) -> RssImportResult:
    """Check the whole file, register ``receivers``, then store the sessions in atomic, idempotent chunks.

    A failure before the first chunk is written leaves the store as it was (stations registered by
    this import removed again, unless a measurement uses them); a failure in a later chunk keeps the
    chunks before it, and running the import again completes it.
    """
    t0 = time.perf_counter()
    options.check()
    if chunk_size < 1:
        raise RssImportError(f"chunk_size must be ≥ 1, got {chunk_size}")
    known = {st.name for st in list_stations(db)} | {st.name for st in receivers}
    data = read_rss(csv_path, known, options.missing_marker, max_bytes)
    if not data.sessions:
        raise RssImportError(f"{csv_path}: no session was received by any receiver: nothing to import")
    used = set(data.stations)
    todo = [st for st in receivers if st.name in used]
    labels = list(receiver_labels) if receiver_labels is not None else None
    if labels is not None:
        labels = [lab for st, lab in zip(receivers, labels, strict=True) if st.name in used]
    added = register_stations(db, todo, labels).added if todo else []
    ids = {st.name: st.id for st in list_stations(db)}
    records = _records(data, ids, options)
    written = present = 0
    try:
        for k in range(0, len(records), chunk_size):
            w, p = write_sessions(db, store, bucket, records[k : k + chunk_size])
            written, present = written + w, present + p
    except Exception:
        if written == 0 and added:
            remove_unused_stations(db, added)
        raise
    by_id = {v: k for k, v in ids.items()}
    return RssImportResult(
        layout=data.layout,
        sessions=len(records),
        written=written,
        already_present=present,
        skipped=dict(data.skipped),
        dropped_readings=dict(data.dropped),
        measurements=sum(len(r.measurements) for r in records),
        receivers=tuple(data.stations),
        receivers_registered=tuple(by_id[i] for i in added),
        moving_readings=sum(r.latitude is not None for s in data.sessions for r in s.readings),
        not_received_fraction=data.empty_cells / max(data.cells, 1),
        seconds=time.perf_counter() - t0,
    )
