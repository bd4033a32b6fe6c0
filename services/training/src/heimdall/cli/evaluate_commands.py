"""`heimdall evaluate`: one table of methods × metrics on held-out sessions."""

from __future__ import annotations

from pathlib import Path

import typer

from heimdall.cli.app import app, console, load_settings, user_errors


@app.command()
@user_errors
def evaluate(
    model: str = typer.Option(
        ..., "--model", help="A training output dir, a model.onnx path or models:/NAME@ALIAS."
    ),
    split: str = typer.Option("test", "--split", help="Which recorded split to evaluate (test, val)."),
    output_dir: Path = typer.Option(
        Path("evaluation"), "--output-dir", "--output_dir", help="Where results go."
    ),
    outage: bool = typer.Option(
        True, "--outage/--no-outage", help="Remove each receiver in turn at test time."
    ),
    oracle: bool = typer.Option(True, "--oracle/--no-oracle", help="Bayes oracle (simulated data only)."),
    outage_sessions: int | None = typer.Option(
        None, "--outage-sessions", "--outage_sessions", min=1, help="Outage on a fixed subset of N sessions."
    ),
) -> None:
    """Evaluate a model against weighted centroid, log-distance NLS, kNN fingerprints and the Bayes oracle."""
    from heimdall.jobs.evaluate import EvaluateRequest
    from heimdall.jobs.evaluate import evaluate as run_evaluate

    request = EvaluateRequest(
        model=model,
        split=split,
        output_dir=output_dir,
        outage=outage,
        oracle=oracle,
        outage_sessions=outage_sessions,
    )
    out = run_evaluate(request, load_settings(), progress=lambda m: console.print(f"… {m}"))
    for name, m in out.methods.items():
        typer.echo(f"{name:>20}: RMSE {m.rmse_m:9.0f} m  median {m.median_error_m:9.0f} m")
    typer.echo(f"evaluation: {out.report}")
