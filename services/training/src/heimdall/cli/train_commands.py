"""`heimdall train`: the flags into a TrainRequest, :func:`heimdall.jobs.train.train`, the outcome printed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from heimdall.cli.app import app, load_settings, user_errors
from heimdall.cli.noise import quiet_mlflow
from heimdall.cli.summary import km, label, verdict
from heimdall.errors import UserError

if TYPE_CHECKING:
    from heimdall.jobs.train import TrainOutcome


@app.command()
@user_errors
def train(
    epochs: int | None = typer.Option(None, "--epochs", help="Maximum epochs.", show_default="100"),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "--batch_size", help="Sessions per batch.", show_default="32"
    ),
    learning_rate: float | None = typer.Option(
        None, "--learning-rate", "--learning_rate", help="AdamW rate.", show_default="0.001"
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "--output_dir", help="Where the model and report go.", show_default="models"
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seeds every random generator.", show_default="42"),
    config: Path | None = typer.Option(None, "--config", help="YAML run configuration; options override it."),
    dataset: list[str] | None = typer.Option(
        None, "--dataset", help="Dataset label(s) to train on (repeatable).", show_default="sim:nw-italy-v1"
    ),
    max_sessions: int | None = typer.Option(
        None, "--max-sessions", "--max_sessions", help="Use at most N sessions.", show_default="all"
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help="hash (whole transmitter sites by a hash), or a published POWDER test set: powder-grid, "
        "powder-random (validation then from whole time blocks of train).",
        show_default="hash",
    ),
    val_datasets: str | None = typer.Option(
        None,
        "--val-datasets",
        "--val_datasets",
        metavar="LABEL[,LABEL]",
        help="Dataset label(s) held out whole as the validation split (also listed in --dataset).",
        show_default="none: carved from train",
    ),
    test_datasets: str | None = typer.Option(
        None,
        "--test-datasets",
        "--test_datasets",
        metavar="LABEL[,LABEL]",
        help="Dataset label(s) held out whole as the test split (also listed in --dataset).",
        show_default="none: by the hash",
    ),
    site_radius_m: float | None = typer.Option(
        None,
        "--site-radius-m",
        "--site_radius_m",
        help="Truths closer than this (m, chained) are one transmitter site, never split across "
        "train/val/test.",
        show_default="100",
    ),
    accelerator: str | None = typer.Option(None, "--accelerator", help="cpu, gpu, auto…", show_default="cpu"),
    devices: str | None = typer.Option(None, "--devices", help="Devices per node.", show_default="1"),
    num_nodes: int | None = typer.Option(
        None, "--num-nodes", "--num_nodes", help="Nodes for multi-node training.", show_default="1"
    ),
    strategy: str | None = typer.Option(
        None, "--strategy", help="Lightning strategy, e.g. ddp.", show_default="auto"
    ),
    patience: int | None = typer.Option(
        None, "--patience", help="Early-stopping patience in epochs.", show_default="15"
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/checkpoints/last.ckpt."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress: a bar on a terminal, else one line per epoch."
    ),
    tracking: bool = typer.Option(
        True,
        "--tracking/--no-tracking",
        help="Log the run to MLflow (MLFLOW_TRACKING_URI, else heimdall-data/mlflow.db) and register it.",
    ),
    promote: bool = typer.Option(
        False, "--promote", help="Make the new version the champion even if it does not beat the current one."
    ),
    from_run: str | None = typer.Option(
        None,
        "--from-run",
        "--from_run",
        help="Re-run MLflow run RUN_ID: its config.yaml and its exact train/val/test sessions.",
    ),
    init_from: str | None = typer.Option(
        None,
        "--init-from",
        "--init_from",
        metavar="RUN_OR_MODEL",
        help="Fine-tune: start from the weights and normalisation of an earlier run of the same network "
        "(a run folder, an MLflow run id, models:/NAME/VERSION or NAME@ALIAS).",
        show_default="none: random initialisation",
    ),
    receiver_dropout: float | None = typer.Option(
        None,
        "--receiver-dropout",
        "--receiver_dropout",
        help="Probability (0-0.9) of hiding each receiver of a training session, keeping at least "
        "min_receivers heard (outage augmentation; never in validation or test).",
        show_default="0",
    ),
    localizer: str | None = typer.Option(
        None,
        "--localizer",
        help="What ships: auto (the network, the radio map or their fusion, by validation RMSE), "
        "network or radiomap.",
        show_default="auto",
    ),
) -> None:
    """Train LocalizationNet on approved sessions, export and verify ONNX, write report.json/.md and plots."""
    from heimdall.jobs.train import TrainRequest
    from heimdall.jobs.train import train as run_train

    if tracking or from_run or init_from:
        quiet_mlflow()
    split = _split_name(split)
    if site_radius_m is not None and not 0.0 <= site_radius_m <= 100_000.0:
        raise UserError(f"--site-radius-m {site_radius_m:g}: give a distance from 0 to 100000 m")

    request = TrainRequest(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        output_dir=output_dir,
        seed=seed,
        config=config,
        datasets=dataset or None,
        max_sessions=max_sessions,
        split=split,
        val_datasets=_labels("--val-datasets", val_datasets),
        test_datasets=_labels("--test-datasets", test_datasets),
        site_radius_m=site_radius_m,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        patience=patience,
        resume=resume,
        progress=progress,
        tracking=tracking,
        promote=promote,
        from_run=from_run,
        init_from=init_from,
        receiver_dropout=receiver_dropout,
        localizer=localizer,
    )
    _print(run_train(request, load_settings(), echo=lambda line: typer.echo(line, err=True)))


def _split_name(value: str | None) -> str | None:
    """The configuration's name of a --split value (powder-grid → powder_grid), or a UserError."""
    if value is None:
        return None
    from heimdall.data.splits import SPLIT_STRATEGIES

    name = value.strip().lower().replace("-", "_")
    if name not in SPLIT_STRATEGIES:
        choices = ", ".join(s.replace("_", "-") for s in SPLIT_STRATEGIES)
        raise UserError(f"--split {value!r} is not a split; choose one of {choices}")
    return name


def _labels(flag: str, value: str | None) -> list[str] | None:
    """LABEL[,LABEL] as a list, or a UserError naming the flag when a label is empty."""
    if value is None:
        return None
    labels = [v.strip() for v in value.split(",")]
    if not all(labels):
        raise UserError(f"{flag} {value!r}: give dataset labels separated by commas, none empty")
    return labels


def _print(outcome: TrainOutcome) -> None:
    """The summary and the verdict against each baseline, then (tracked) the MLflow run and the registry,
    then (--from-run) the comparison, then the next command to run."""
    t = outcome.report.test
    typer.echo(
        f"model {outcome.model_id}: test RMSE {km(t.rmse_m)}, median {km(t.median_error_m)}, "
        f"1σ coverage {t.coverage_1sigma:.2f}; "
        f"ONNX parity {outcome.report.onnx.max_position_diff_m:.2g} m"
    )
    for name, baseline in outcome.report.baselines:  # typed ones and any a later report adds (dicts)
        rmse = baseline.get("rmse_m") if isinstance(baseline, dict) else getattr(baseline, "rmse_m", None)
        if rmse is not None:
            typer.echo(verdict(t.rmse_m, label(name), float(rmse)))
    typer.echo(f"report: {outcome.output_dir / 'report.md'}")
    if outcome.mlflow is not None and outcome.registered is not None and outcome.champion is not None:
        m, decision = outcome.mlflow, outcome.champion
        typer.echo(f"mlflow run {m.run_id} (experiment {m.experiment!r}) at {m.tracking}")
        state = "moved to" if decision.moved else "stays at"
        champ = decision.version if decision.moved else (decision.previous or "none")
        typer.echo(
            f"registered {outcome.model_name} version {outcome.registered.version}; "
            f"{outcome.alias} {state} version {champ}: {decision.reason}"
        )
    c = outcome.comparison
    if c is not None:
        typer.echo(
            f"re-run of {c.run_id}: test RMSE {c.rerun_rmse_m:.3f} m vs {c.original_rmse_m:.3f} m "
            f"(relative difference {c.relative_difference:.1e})"
        )
    out = outcome.output_dir
    typer.echo(f"next: heimdall evaluate --model {out} --split test --output-dir {out / 'evaluation'}")
