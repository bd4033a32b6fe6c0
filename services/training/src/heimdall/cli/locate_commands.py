"""`heimdall locate REC…`: a user's recordings → position and ellipse, from the model alone (no database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from heimdall.cli.app import app, console, load_settings, user_errors
from heimdall.cli.map_output import (
    FORMAT_HELP,
    OUTPUT_HELP,
    check_format,
    emit,
    locate_estimates,
    render_estimates,
)
from heimdall.errors import UserError

#: heimdall.jobs.locate's default, spelled out so `--help` does not import the job
DEFAULT_MODEL = "models:/heimdall-localizer@champion"


def _station_ids(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--exclude {text!r}: give station ids separated by commas, e.g. 3,5") from None


@app.command()
@user_errors
def locate(
    recordings: Annotated[
        list[Path],
        typer.Argument(
            help="SigMF recordings (.sigmf-meta/.sigmf-data or a folder of them), or .npy IQ with a .json "
            "sidecar: one per receiver, grouped into captures by capture time."
        ),
    ],
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        help="A model folder, a model.onnx, or models:/heimdall-localizer@champion (@alias, /VERSION).",
    ),
    exclude: str | None = typer.Option(
        None, "--exclude", help="Station ids to leave out, separated by commas (e.g. 3,5)."
    ),
    fmt: str = typer.Option("json", "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(None, "--output", help=OUTPUT_HELP),
) -> None:
    """Locate a transmitter from your own recordings: lat/lon, covariance and ellipses per capture.

    The receivers come from the model (no database). Unusable ones are refused, one line each.
    """
    from heimdall.jobs.locate import LocateRequest
    from heimdall.jobs.locate import locate as run_locate

    output = check_format(fmt, output)
    out = run_locate(
        LocateRequest(recordings=recordings, model=model, exclude=_station_ids(exclude)), load_settings()
    )
    for line in out.lines():
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    labels = [e.label for e in out.estimates]
    if fmt == "json":
        text = json.dumps(out.as_json(), indent=2) + "\n"
    else:
        text = render_estimates(locate_estimates(out), fmt, title=f"Heimdall locate: {', '.join(labels[:3])}")
    emit(text, fmt, output, labels)
