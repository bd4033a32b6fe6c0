"""Station commands: `stations add FILE` and `stations list`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from heimdall.cli.app import console, load_settings, stations_app, user_errors
from heimdall.stations import STATION_FILE_COLUMNS as COLUMNS

FILE_HELP = f"CSV (header row) or YAML list of stations; columns {', '.join(COLUMNS)}."


def _mhz(hz: float | None) -> str:
    return "?" if hz is None else f"{hz / 1e6:g}"


@stations_app.command("add")
@user_errors
def stations_add(
    file: Path = typer.Argument(..., help=FILE_HELP),
) -> None:
    """Add receivers from a file (all rows checked first; re-adding the same stations is a no-op)."""
    from heimdall.jobs.stations import AddStationsRequest, add_stations

    out = add_stations(AddStationsRequest(file=file), load_settings())
    added = ", ".join(map(str, out.added)) or "none"
    typer.echo(
        f"stations from {out.file}: {len(out.added)} added ({added}), {len(out.present)} already present "
        f"in {out.database}"
    )


@stations_app.command("list")
@user_errors
def stations_list(json_out: bool = typer.Option(False, "--json", help="One JSON list on stdout.")) -> None:
    """List the stored receivers (id, name, position, bands, active); creates no database."""
    from heimdall.jobs.stations import stations

    out = stations(load_settings())
    console.print(out.missing or f"stations in {out.database}", highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in out.stations], indent=2))
        return
    for s in out.stations:
        alt = "?" if s.altitude_asl is None else f"{s.altitude_asl:g}"
        bands = (
            "-"
            if s.frequency_min_hz is None and s.frequency_max_hz is None
            else f"{_mhz(s.frequency_min_hz)}–{_mhz(s.frequency_max_hz)} MHz"
        )
        typer.echo(
            f"{s.id:>4}  {s.name:<24} {s.latitude:>10.5f} {s.longitude:>11.5f} {alt:>6} m  {bands:<16} "
            f"{'active' if s.active else 'inactive'}"
        )
