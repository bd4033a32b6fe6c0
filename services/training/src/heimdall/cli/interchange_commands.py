"""Interchange commands: `import sigmf` and `export sigmf` against the configured database and store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heimdall.atomic import check_output_dir
from heimdall.cli.app import export_app, import_app, load_settings, user_errors
from heimdall.errors import UserError
from heimdall.services import open_services
from heimdall.sigmf_io import (
    DEFAULT_DATASET,
    TRUTH,
    Truth,
    export_session_sigmf,
    import_sigmf,
)


def _truth(
    lat: float | None, lon: float | None, error_m: float | None, power_dbm: float | None
) -> Truth | None:
    """The command-line truth, or None when no --truth-* option was given (partial positions are refused)."""
    if lat is None and lon is None:
        if error_m is not None or power_dbm is not None:
            raise UserError("--truth-error-m/--truth-power-dbm need --truth-lat and --truth-lon")
        return None
    if lat is None or lon is None:
        raise UserError("give both --truth-lat and --truth-lon")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise UserError(f"truth position ({lat}, {lon}) is out of range")
    if error_m is not None and error_m < 0:
        raise UserError(f"--truth-error-m must be ≥ 0, got {error_m}")
    return Truth(lat, lon, error_margin_meters=error_m or 0.0, power_dbm=power_dbm)


@import_app.command("sigmf")
@user_errors
def import_sigmf_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Recordings: .sigmf-meta, .sigmf-data, base names or folders.")
    ],
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help=f"Dataset label (default: the files' heimdall:dataset, else {DEFAULT_DATASET!r}).",
    ),
    truth_lat: float | None = typer.Option(
        None, "--truth-lat", help=f"Transmitter latitude (overrides {TRUTH})."
    ),
    truth_lon: float | None = typer.Option(None, "--truth-lon", help="Transmitter longitude."),
    truth_error_m: float | None = typer.Option(
        None, "--truth-error-m", help="Truth position uncertainty, m."
    ),
    truth_power_dbm: float | None = typer.Option(None, "--truth-power-dbm", help="Transmitter power, dBm."),
    pending: bool = typer.Option(False, "--pending", help="Store as pending review instead of approved."),
) -> None:
    """Import the SigMF recordings of one or more sessions (one file pair per receiver), atomically."""
    truth = _truth(truth_lat, truth_lon, truth_error_m, truth_power_dbm)
    services = open_services(load_settings())
    try:
        result = import_sigmf(
            services.db,
            services.store,
            services.settings.raw_iq_bucket,
            paths,
            dataset=dataset,
            truth=truth,
            approval="pending" if pending else "approved",
        )
    finally:
        services.close()
    n_files = sum(len(r.measurements) for r in result.records)
    typer.echo(
        f"imported {len(result.records)} session(s) from {n_files} SigMF recording(s): "
        f"{result.written} written, {result.already_present} already present, "
        f"into {services.db.safe_url} + {services.store.url}"
    )
    for r in result.records:
        typer.echo(
            f"  session {r.id}: {len(r.measurements)} receiver(s), dataset {r.dataset}, {r.approval_status}"
        )
    if result.new_stations:
        typer.echo(f"new station(s): {', '.join(result.new_stations)}")
    if result.without_truth:
        typer.echo(
            f"{len(result.without_truth)} session(s) have no truth ({TRUTH} or --truth-lat/--truth-lon) "
            "and were stored as 'pending': training will not use them until a transmitter position is known"
        )


@export_app.command("sigmf")
@user_errors
def export_sigmf_command(
    session_id: Annotated[str, typer.Argument(help="Recording session id (UUID).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write into (created if missing).")],
    author: str | None = typer.Option(None, "--author", help="core:author of the recordings (optional)."),
) -> None:
    """Export one session as SigMF: a .sigmf-meta/.sigmf-data pair per receiver with IQ."""
    check_output_dir(out_dir, "OUT_DIR")
    services = open_services(load_settings())
    try:
        metas = export_session_sigmf(services.db, services.store, session_id, out_dir, author=author)
    finally:
        services.close()
    typer.echo(f"exported session {session_id}: {len(metas)} SigMF recording(s) into {out_dir}")
