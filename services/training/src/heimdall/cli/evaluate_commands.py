"""`heimdall evaluate`: one table of methods × metrics on held-out sessions."""

from __future__ import annotations

from pathlib import Path

import typer

from heimdall.cli.app import app, console, load_settings, user_errors
from heimdall.cli.noise import quiet_mlflow
from heimdall.cli.summary import km, label, verdict

MODEL, ORACLE = "model", "bayes_oracle"  # heimdall.evaluate.job's method names


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
    scenario: Path | None = typer.Option(
        None,
        "--scenario",
        help="Your scenario file for the Bayes oracle (must be the one the sessions were simulated from).",
    ),
    tracking: bool = typer.Option(
        True, "--tracking/--no-tracking", help="Attach the evaluation to the model's MLflow run (if any)."
    ),
) -> None:
    """Evaluate a model against weighted centroid, log-distance NLS, kNN fingerprints and the Bayes oracle."""
    from heimdall.jobs.evaluate import EvaluateRequest
    from heimdall.jobs.evaluate import evaluate as run_evaluate

    if model.startswith(("models:/", "runs:/")):
        quiet_mlflow()

    request = EvaluateRequest(
        model=model,
        split=split,
        output_dir=output_dir,
        outage=outage,
        oracle=oracle,
        outage_sessions=outage_sessions,
        scenario=scenario,
        tracking=tracking,
    )
    out = run_evaluate(request, load_settings(), progress=lambda m: console.print(f"… {m}"))
    for name, m in out.methods.items():
        typer.echo(f"{name:>20}: RMSE {km(m.rmse_m):>10}  median {km(m.median_error_m):>10}")
    mine = out.methods.get(MODEL)
    if mine is not None:
        for name, m in out.methods.items():
            if name not in (MODEL, ORACLE):
                typer.echo(verdict(mine.rmse_m, label(name), m.rmse_m))
        bayes = out.methods.get(ORACLE)
        if bayes is not None and bayes.rmse_m > 0:
            typer.echo(
                f"model RMSE {km(mine.rmse_m)} vs Bayes oracle {km(bayes.rmse_m)}: "
                f"{mine.rmse_m / bayes.rmse_m:.2f}× the best achievable"
            )
    typer.echo(f"evaluation: {out.report}")
    if out.mlflow.attached:
        typer.echo(f"mlflow: attached to run {out.mlflow.run_id} ({out.mlflow.artifact_path})")
    else:
        typer.echo(f"mlflow: not attached ({out.mlflow.reason})")
    typer.echo(f"next: heimdall predict --model {_onnx(model)} --session {_a_session(model, split)}")


def _onnx(model: str) -> str:
    """A training folder's model.onnx; any other reference as given."""
    return str(Path(model) / "model.onnx") if Path(model).is_dir() else model


def _a_session(model: str, split: str) -> str:
    """The first session of the split (from the training folder's split.json), else a placeholder."""
    import json

    try:
        ids = json.loads((Path(model) / "split.json").read_text(encoding="utf-8")).get(split) or []
    except (OSError, ValueError, AttributeError):
        ids = []
    return str(ids[0]) if ids else "SESSION_ID"
