"""`heimdall import powder`: the POWDER 462.7 MHz RSS dataset as power-only sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heimdall.cli.app import import_app, load_settings, user_errors
from heimdall.ingest.powder_read import COORDINATES_FILE, DATASET, SPLIT_FILES  # light: no numpy/SQLAlchemy


@import_app.command("powder")
@user_errors
def import_powder_command(
    csv_path: Annotated[Path, typer.Argument(help="The dataset's single_tx.csv.")],
    coordinates: Path | None = typer.Option(
        None,
        "--coordinates",
        help="Fixed receivers' positions.",
        show_default=f"{COORDINATES_FILE} beside the CSV",
    ),
    random_test: Path | None = typer.Option(
        None,
        "--random-test",
        help="Random split's test set.",
        show_default=f"{SPLIT_FILES['powder_random']} beside the CSV, if any",
    ),
    grid_test: Path | None = typer.Option(
        None,
        "--grid-test",
        help="Test set of the grid split.",
        show_default=f"{SPLIT_FILES['powder_grid']} beside the CSV, if any",
    ),
    dataset: str = typer.Option(DATASET, "--dataset", help="Dataset label of the imported sessions."),
    pending: bool = typer.Option(False, "--pending", help="Store as pending review instead of approved."),
) -> None:
    """Import POWDER samples (one session per CSV row, power only), checked first, idempotently."""
    from heimdall.jobs.ingest import PowderImportRequest, import_powder

    request = PowderImportRequest(
        csv_path=csv_path,
        coordinates=coordinates,
        random_test=random_test,
        grid_test=grid_test,
        dataset=dataset,
        pending=pending,
    )
    r = import_powder(request, load_settings())
    skipped = ", ".join(f"{k}: {v}" for k, v in r.skipped.items()) or "none"
    dropped = ", ".join(f"{k}: {v}" for k, v in r.dropped_readings.items()) or "none"
    typer.echo(
        f"POWDER {csv_path}: {r.rows} row(s) → {r.sessions} session(s) of dataset {r.dataset!r}: "
        f"{r.written} written, {r.already_present} already present; skipped rows: {skipped} "
        f"({r.seconds:.1f} s, into {r.database})"
    )
    typer.echo(
        f"  {r.measurements} measurement(s) from {len(r.receivers)} receiver(s) "
        f"({r.bus_receivers} on buses); "
        f"{100 * r.absent_fraction:.1f} % of RSS cells absent (-101); readings dropped: {dropped}"
    )
    if r.receivers_created:
        typer.echo(f"  new station(s): {', '.join(r.receivers_created)}")
    for key, n in r.test_sizes.items():
        typer.echo(f"  split {key}: {n} test session(s), {r.sessions - n} train (use split: {key})")
    if not r.test_sizes:
        typer.echo("  no test-set files found: only the 'hash' split is available for these sessions")
