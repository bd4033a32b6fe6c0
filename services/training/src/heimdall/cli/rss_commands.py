"""`heimdall import rss`: any power-only RSS dataset in the CSV layout of docs/YOUR_NETWORK.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heimdall.cli.app import import_app, load_settings, user_errors


@import_app.command("rss")
@user_errors
def import_rss_command(
    csv_path: Annotated[
        Path, typer.Argument(help="The RSS CSV (wide: rss_<station> columns; long: station, rss_dbm).")
    ],
    frequency_hz: float = typer.Option(
        ..., "--frequency-hz", "--frequency_hz", help="Carrier frequency of the dataset (Hz)."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Dataset label of the imported sessions.", show_default="the CSV's file name"
    ),
    tx_power_dbm: str = typer.Option(
        "unknown", "--tx-power-dbm", "--tx_power_dbm", help="Transmit power in dBm, or 'unknown'."
    ),
    truth_sigma_m: float = typer.Option(
        0.0, "--truth-sigma-m", "--truth_sigma_m", help="Truth uncertainty (m) where tx_sigma_m is empty."
    ),
    receivers: Path | None = typer.Option(
        None, "--receivers", help="A stations CSV/YAML (as `stations add`), registered with the import."
    ),
    missing_marker: float | None = typer.Option(
        None,
        "--missing-marker",
        "--missing_marker",
        help="A legacy value meaning 'not received' (e.g. -101); empty cells always mean it.",
    ),
    pending: bool = typer.Option(False, "--pending", help="Store as pending review instead of approved."),
) -> None:
    """Import a power-only RSS CSV (one session per transmitter sample), checked whole first, idempotently."""
    from heimdall.jobs.ingest import RssImportRequest, import_rss, parse_power

    request = RssImportRequest(
        csv_path=csv_path,
        frequency_hz=frequency_hz,
        dataset=dataset,
        tx_power_dbm=parse_power(tx_power_dbm),
        truth_sigma_m=truth_sigma_m,
        receivers=receivers,
        missing_marker=missing_marker,
        pending=pending,
    )
    r = import_rss(request, load_settings())
    skipped = ", ".join(f"{k}: {v}" for k, v in r.skipped.items()) or "none"
    dropped = ", ".join(f"{k}: {v}" for k, v in r.dropped_readings.items()) or "none"
    typer.echo(
        f"RSS {csv_path} ({r.layout} layout): {r.sessions} session(s) of dataset {r.dataset!r}: "
        f"{r.written} written, {r.already_present} already present; skipped: {skipped} "
        f"({r.seconds:.1f} s, into {r.database})"
    )
    typer.echo(
        f"  {r.measurements} measurement(s) from {len(r.receivers)} receiver(s) "
        f"({r.moving_readings} from moving receivers); {100 * r.not_received_fraction:.1f} % of RSS cells "
        f"not received; readings dropped: {dropped}"
    )
    if r.receivers_registered:
        typer.echo(f"  new station(s): {', '.join(r.receivers_registered)}")
    typer.echo(f"next: heimdall train --dataset {r.dataset}")
