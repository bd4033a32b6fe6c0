"""Recordings in and out: ``heimdall import sigmf``, ``import powder``, ``import rss``, ``export sigmf``.

Each job opens the services from ``Settings``, calls the importer or exporter of :mod:`heimdall.ingest`
and returns what was stored. The importers are imported inside the functions so that a front door that
only trains never loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from heimdall.atomic import check_output_dir
from heimdall.errors import UserError
from heimdall.services import open_services
from heimdall.settings import Settings

# ----------------------------------------------------------------------------------------------- SigMF


class SigmfImportRequest(BaseModel):
    """The arguments of ``heimdall import sigmf``; no truth position means the files' own (if any)."""

    paths: list[Path]
    dataset: str | None = None
    truth_lat: float | None = None
    truth_lon: float | None = None
    truth_error_m: float | None = None
    truth_power_dbm: float | None = None
    pending: bool = False

    def truth(self) -> Any:
        """The requested :class:`heimdall.ingest.sigmf.Truth`, or None; a partial position is refused."""
        from heimdall.ingest.sigmf import Truth

        lat, lon, error_m = self.truth_lat, self.truth_lon, self.truth_error_m
        if lat is None and lon is None:
            if error_m is not None or self.truth_power_dbm is not None:
                raise UserError("--truth-error-m/--truth-power-dbm need --truth-lat and --truth-lon")
            return None
        if lat is None or lon is None:
            raise UserError("give both --truth-lat and --truth-lon")
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise UserError(f"truth position ({lat}, {lon}) is out of range")
        if error_m is not None and error_m < 0:
            raise UserError(f"--truth-error-m must be ≥ 0, got {error_m}")
        return Truth(lat, lon, error_margin_meters=error_m or 0.0, power_dbm=self.truth_power_dbm)


class ImportedSession(BaseModel):
    id: str
    receivers: int
    dataset: str
    approval_status: str


class SigmfImportOutcome(BaseModel):
    """The sessions an import stored (written now or already there) and the stations it added."""

    sessions: list[ImportedSession]
    recordings: int  # SigMF file pairs, one per receiver
    written: int
    already_present: int
    new_stations: list[str]
    without_truth: list[str]  # stored as pending: no transmitter position known
    database: str  # URL, password masked
    object_store: str


def import_sigmf(request: SigmfImportRequest, settings: Settings) -> SigmfImportOutcome:
    """Import the SigMF recordings of one or more sessions (one file pair per receiver), atomically."""
    from heimdall.ingest.sigmf import import_sigmf as store_sigmf

    truth = request.truth()
    services = open_services(settings)
    try:
        result = store_sigmf(
            services.db,
            services.store,
            services.settings.raw_iq_bucket,
            request.paths,
            dataset=request.dataset,
            truth=truth,
            approval="pending" if request.pending else "approved",
        )
    finally:
        services.close()
    return SigmfImportOutcome(
        sessions=[
            ImportedSession(
                id=str(r.id),
                receivers=len(r.measurements),
                dataset=r.dataset,
                approval_status=r.approval_status,
            )
            for r in result.records
        ],
        recordings=sum(len(r.measurements) for r in result.records),
        written=result.written,
        already_present=result.already_present,
        new_stations=list(result.new_stations),
        without_truth=[str(s) for s in result.without_truth],
        database=services.db.safe_url,
        object_store=services.store.url,
    )


class SigmfExportRequest(BaseModel):
    session_id: str
    out_dir: Path
    author: str | None = None


class SigmfExportOutcome(BaseModel):
    session_id: str
    out_dir: Path
    recordings: list[Path]  # the .sigmf-meta files, one per receiver with IQ


def export_sigmf(request: SigmfExportRequest, settings: Settings) -> SigmfExportOutcome:
    """Export one session as SigMF: a .sigmf-meta/.sigmf-data pair per receiver with IQ."""
    from heimdall.ingest.sigmf import export_session_sigmf

    check_output_dir(request.out_dir, "OUT_DIR")
    services = open_services(settings)
    try:
        metas = export_session_sigmf(
            services.db, services.store, request.session_id, request.out_dir, author=request.author
        )
    finally:
        services.close()
    return SigmfExportOutcome(session_id=request.session_id, out_dir=request.out_dir, recordings=list(metas))


# ---------------------------------------------------------------------------------------------- POWDER


class PowderImportRequest(BaseModel):
    """The arguments of ``heimdall import powder``; None finds the file beside the CSV."""

    csv_path: Path
    coordinates: Path | None = None
    random_test: Path | None = None
    grid_test: Path | None = None
    dataset: str | None = None  # None: heimdall.ingest.powder.DATASET
    pending: bool = False


class PowderImportOutcome(BaseModel):
    """What a POWDER import found and stored."""

    csv_path: Path
    dataset: str
    rows: int
    sessions: int  # importable sessions (written now + already present)
    written: int
    already_present: int
    skipped: dict[str, int]  # rows not imported, by reason
    dropped_readings: dict[str, int]  # single receiver readings not stored, by reason
    measurements: int
    receivers: list[str]  # station names used, fixed then bus
    receivers_created: list[str]
    bus_receivers: int
    absent_fraction: float  # share of RSS cells that were -101
    test_sizes: dict[str, int]
    seconds: float
    database: str  # URL, password masked


def import_powder(request: PowderImportRequest, settings: Settings) -> PowderImportOutcome:
    """Import POWDER samples (one session per CSV row, power only), checked first, idempotently."""
    from heimdall.ingest.powder import DATASET
    from heimdall.ingest.powder import import_powder as store_powder

    dataset = request.dataset if request.dataset is not None else DATASET
    services = open_services(settings)
    try:
        r = store_powder(
            services.db,
            services.store,
            services.settings.raw_iq_bucket,
            request.csv_path,
            coordinates=request.coordinates,
            test_sets={"powder_random": request.random_test, "powder_grid": request.grid_test},
            dataset=dataset,
            approval="pending" if request.pending else "approved",
        )
    finally:
        services.close()
    return PowderImportOutcome(
        csv_path=request.csv_path,
        dataset=dataset,
        rows=r.rows,
        sessions=r.sessions,
        written=r.written,
        already_present=r.already_present,
        skipped=dict(r.skipped),
        dropped_readings=dict(r.dropped_readings),
        measurements=r.measurements,
        receivers=list(r.receivers),
        receivers_created=list(r.receivers_created),
        bus_receivers=r.bus_receivers,
        absent_fraction=r.absent_fraction,
        test_sizes=dict(r.test_sizes),
        seconds=r.seconds,
        database=services.db.safe_url,
    )


# ------------------------------------------------------------------------------------------------- RSS


class RssImportRequest(BaseModel):
    """The arguments of ``heimdall import rss``; ``receivers`` is a stations file registered with it."""

    csv_path: Path
    frequency_hz: float
    dataset: str | None = None  # None: the CSV file's name without its extension
    tx_power_dbm: float | None = None  # None: unknown
    truth_sigma_m: float = 0.0
    receivers: Path | None = None
    missing_marker: float | None = None
    pending: bool = False


class RssImportOutcome(BaseModel):
    """What an RSS import found and stored."""

    csv_path: Path
    dataset: str
    layout: str  # wide or long
    sessions: int  # importable sessions (written now + already present)
    written: int
    already_present: int
    skipped: dict[str, int]
    dropped_readings: dict[str, int]
    measurements: int
    receivers: list[str]
    receivers_registered: list[str]
    moving_readings: int
    not_received_fraction: float
    seconds: float
    database: str  # URL, password masked


def parse_power(text: str) -> float | None:
    """``--tx-power-dbm``: a number of dBm, or ``unknown`` (None)."""
    import math

    if text.strip().lower() == "unknown":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--tx-power-dbm must be a number of dBm or 'unknown', got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"--tx-power-dbm must be a finite number of dBm, got {text!r}")
    return value


def import_rss(request: RssImportRequest, settings: Settings) -> RssImportOutcome:
    """Import a power-only RSS CSV (one documented layout), checked whole first, idempotently."""
    from heimdall.ingest.rss_csv import RssOptions
    from heimdall.ingest.rss_csv import import_rss as store_rss
    from heimdall.jobs.stations import read_stations_file

    dataset = request.dataset if request.dataset is not None else request.csv_path.stem
    receivers = read_stations_file(request.receivers) if request.receivers is not None else []
    labels = [f"{request.receivers}: row {n}" for n in range(1, len(receivers) + 1)]
    options = RssOptions(
        dataset=dataset,
        frequency_hz=request.frequency_hz,
        tx_power_dbm=request.tx_power_dbm,
        truth_sigma_m=request.truth_sigma_m,
        missing_marker=request.missing_marker,
        approval="pending" if request.pending else "approved",
    )
    options.check()
    services = open_services(settings)
    try:
        r = store_rss(
            services.db,
            services.store,
            services.settings.raw_iq_bucket,
            request.csv_path,
            options,
            receivers,
            labels,
            max_bytes=services.settings.max_import_bytes,
        )
    finally:
        services.close()
    return RssImportOutcome(
        csv_path=request.csv_path,
        dataset=dataset,
        layout=r.layout,
        sessions=r.sessions,
        written=r.written,
        already_present=r.already_present,
        skipped=dict(r.skipped),
        dropped_readings=dict(r.dropped_readings),
        measurements=r.measurements,
        receivers=list(r.receivers),
        receivers_registered=list(r.receivers_registered),
        moving_readings=r.moving_readings,
        not_received_fraction=r.not_received_fraction,
        seconds=r.seconds,
        database=services.db.safe_url,
    )
