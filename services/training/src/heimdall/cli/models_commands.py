"""`heimdall models list|promote` (the registry) and `heimdall predict` (one session → position + ellipse).

mlflow, torch and onnxruntime are imported inside the commands so `heimdall --help` stays fast.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from heimdall.cli.app import app, console, load_settings, user_errors
from heimdall.cli.map_output import FORMAT_HELP, OUTPUT_HELP, check_format, emit
from heimdall.jobs.models import PromoteRequest, promote
from heimdall.jobs.models import list_models as list_registered

models_app = typer.Typer(
    help="Model registry (heimdall-localizer): list versions, move the champion alias.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@models_app.command("list")
@user_errors
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print the versions as JSON."),
) -> None:
    """Registered versions of heimdall-localizer: aliases, MLflow run ids (= model ids), test metrics."""
    out = list_registered(load_settings())
    versions = out.versions
    if as_json:
        typer.echo(json.dumps([v.as_dict() for v in versions], indent=2))
        return
    if not versions:
        typer.echo(f"no versions of {out.model_name} registered at {out.registry}")
        return
    typer.echo(f"{out.model_name} at {out.registry}")
    header = f"{'version':>7}  {'aliases':<12} {'run id (model id)':<32}  {'RMSE m':>8}  {'median m':>8}  "
    typer.echo(header + f"{'n_test':>6}  {'test ids':<16}  created (UTC)")
    for v in versions:
        created = (
            datetime.fromtimestamp(v.created / 1000, UTC).strftime("%Y-%m-%d %H:%M") if v.created else "-"
        )
        typer.echo(
            f"{v.version:>7}  {','.join(v.aliases) or '-':<12} {v.run_id or '-':<32}  "
            f"{_fmt(v.test_rmse_m):>8}  {_fmt(v.test_median_error_m):>8}  "
            f"{v.n_test if v.n_test is not None else '-':>6}  {v.test_ids_sha256_16 or '-':<16}  {created}"
        )


@models_app.command("promote")
@user_errors
def promote_model(
    version: str = typer.Argument(..., help="The version number to make the champion."),
) -> None:
    """Point the `champion` alias at VERSION (an unknown version is an error; the alias is unchanged)."""
    out = promote(PromoteRequest(version=version), load_settings())
    decision = out.decision
    if decision.moved:
        typer.echo(
            f"{out.model_name}@{out.alias} → version {decision.version} (was {decision.previous or 'unset'})"
        )
    else:
        typer.echo(f"{out.model_name}@{out.alias} already is version {decision.version}")


@app.command()
@user_errors
def predict(
    session: str = typer.Option(..., "--session", help="Recording session id (UUID) in the database."),
    model: str = typer.Option(
        "models:/heimdall-localizer@champion",
        "--model",
        help="models:/heimdall-localizer@champion (or @alias, /VERSION), runs:/…, or a model.onnx path.",
    ),
    fmt: str = typer.Option("json", "--format", help=FORMAT_HELP),
    output: Path | None = typer.Option(None, "--output", help=OUTPUT_HELP),
) -> None:
    """Locate one stored session with an ONNX model: lat/lon, covariance (m²), the 1σ/2σ/95 % ellipses and
    the receivers (heard or not, SNR), as JSON, GeoJSON or a self-contained HTML map.

    A receiver the model set aside (its reading fits no position) is named on stderr, one line each."""
    from heimdall.inference.formats import render, set_aside_lines
    from heimdall.jobs.predict import predict_stored

    output = check_format(fmt, output)
    result = predict_stored(load_settings(), session, model, "json")
    for line in set_aside_lines(result):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    emit(render([result], fmt, title=f"Heimdall predict: session {session}"), fmt, output, [session])
