"""Interchange commands: `import sigmf` and `export sigmf` against the configured database and store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heimdall.cli.app import export_app, import_app, load_settings, user_errors

# heimdall.ingest.sigmf's DEFAULT_DATASET and TRUTH, spelled out: importing it loads numpy and SQLAlchemy,
# which `heimdall --help` must not wait for (tests/cli/test_console.py checks they agree).
DEFAULT_DATASET = "sigmf:import"
TRUTH = "heimdall:truth"


@import_app.command("sigmf")
@user_errors
def import_sigmf_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Recordings: .sigmf-meta, .sigmf-data, base names or folders.")
    ],
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="Dataset label.",
        show_default=f"the files' heimdall:dataset, else {DEFAULT_DATASET}",
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
    from heimdall.jobs.ingest import SigmfImportRequest, import_sigmf

    request = SigmfImportRequest(
        paths=paths,
        dataset=dataset,
        truth_lat=truth_lat,
        truth_lon=truth_lon,
        truth_error_m=truth_error_m,
        truth_power_dbm=truth_power_dbm,
        pending=pending,
    )
    out = import_sigmf(request, load_settings())
    typer.echo(
        f"imported {len(out.sessions)} session(s) from {out.recordings} SigMF recording(s): "
        f"{out.written} written, {out.already_present} already present, "
        f"into {out.database} + {out.object_store}"
    )
    for r in out.sessions:
        typer.echo(f"  session {r.id}: {r.receivers} receiver(s), dataset {r.dataset}, {r.approval_status}")
    if out.new_stations:
        typer.echo(f"new station(s): {', '.join(out.new_stations)}")
    if out.without_truth:
        typer.echo(
            f"{len(out.without_truth)} session(s) have no truth ({TRUTH} or --truth-lat/--truth-lon) "
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
    from heimdall.jobs.ingest import SigmfExportRequest, export_sigmf

    out = export_sigmf(
        SigmfExportRequest(session_id=session_id, out_dir=out_dir, author=author), load_settings()
    )
    typer.echo(f"exported session {session_id}: {len(out.recordings)} SigMF recording(s) into {out.out_dir}")
