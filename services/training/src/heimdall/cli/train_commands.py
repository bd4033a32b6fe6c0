"""`heimdall train`: the training run (the seed's train_model.py calls the same function)."""

from __future__ import annotations

from pathlib import Path

import typer

from heimdall.cli.app import app, user_errors
from heimdall.services import open_services
from heimdall.training.config import load_config
from heimdall.training.runner import run_training


@app.command()
@user_errors
def train(
    epochs: int | None = typer.Option(None, "--epochs", help="Maximum epochs (default 100)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "--batch_size", help="Sessions per batch (32)."
    ),
    learning_rate: float | None = typer.Option(
        None, "--learning-rate", "--learning_rate", help="AdamW rate (1e-3)."
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "--output_dir", help="Where the model and report go."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seeds every random generator (42)."),
    config: Path | None = typer.Option(None, "--config", help="YAML run configuration; options override it."),
    dataset: list[str] | None = typer.Option(
        None, "--dataset", help="Dataset label(s) to train on (repeatable)."
    ),
    max_sessions: int | None = typer.Option(
        None, "--max-sessions", "--max_sessions", help="Use at most N sessions."
    ),
    accelerator: str | None = typer.Option(None, "--accelerator", help="cpu (default), gpu, auto…"),
    devices: str | None = typer.Option(None, "--devices", help="Devices per node (1)."),
    num_nodes: int | None = typer.Option(
        None, "--num-nodes", "--num_nodes", help="Nodes for multi-node training."
    ),
    strategy: str | None = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp."),
    patience: int | None = typer.Option(None, "--patience", help="Early-stopping patience in epochs (15)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/checkpoints/last.ckpt."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train LocalizationNet on approved sessions, export and verify ONNX, write report.json/.md and plots."""
    cfg = load_config(
        config,
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "output_dir": output_dir,
            "seed": seed,
            "datasets": dataset or None,
            "max_sessions": max_sessions,
            "accelerator": accelerator,
            "devices": devices,
            "num_nodes": num_nodes,
            "strategy": strategy,
            "patience": patience,
        },
    )
    services = open_services()
    try:
        result = run_training(cfg, services, resume=resume, progress=progress)
    finally:
        services.close()
    t = result.report["test"]
    typer.echo(
        f"model {result.model_id}: test RMSE {t['rmse_m']:.0f} m, median {t['median_error_m']:.0f} m, "
        f"1σ coverage {t['coverage_1sigma']:.2f}; "
        f"ONNX parity {result.report['onnx']['max_position_diff_m']:.2g} m"
    )
    typer.echo(f"report: {result.output_dir / 'report.md'}")
