"""`heimdall train`: the training run (the seed's train_model.py calls the same function)."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer

from heimdall.cli.app import app, load_settings, user_errors
from heimdall.errors import UserError
from heimdall.services import open_services
from heimdall.training.config import load_config
from heimdall.training.runner import resume_checkpoint, run_training


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
    tracking: bool = typer.Option(
        True,
        "--tracking/--no-tracking",
        help="Log the run to MLflow (MLFLOW_TRACKING_URI, default heimdall-data/mlflow.db) and register it.",
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
) -> None:
    """Train LocalizationNet on approved sessions, export and verify ONNX, write report.json/.md and plots."""
    if promote and not tracking:
        raise UserError("--promote registers the model in MLflow: drop --no-tracking")
    if from_run and config is not None:
        raise UserError("--from-run re-uses the run's own config.yaml: do not combine it with --config")
    overrides: dict[str, Any] = {
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
    }
    settings = load_settings()
    if not (tracking or from_run):
        cfg = load_config(config, overrides)
        services = open_services(settings)
        try:
            result = run_training(cfg, services, resume=resume, progress=progress)
        finally:
            services.close()
        _summary(result)
        return
    from heimdall.tracking.connection import connect
    from heimdall.tracking.replay import fetch_run_spec

    with ExitStack() as stack:
        if not from_run:
            cfg = load_config(config, overrides)  # an invalid config fails before any server is contacted
        target, client = connect(settings)  # fail fast, before any data is read or training starts
        split_override = None
        if from_run:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="heimdall-from-run-")))
            spec = fetch_run_spec(target, client, from_run, tmp)
            cfg = load_config(spec.config_path, overrides)
            if output_dir is None:  # never overwrite the original run's folder
                base = cfg.output_dir if cfg.output_dir.name else Path("models")
                cfg = cfg.model_copy(
                    update={"output_dir": base.with_name(f"{base.name}-rerun-{from_run[:8]}")}
                )
            split_override = spec.split
        services = open_services(settings)
        stack.callback(services.close)
        if not tracking:
            result = run_training(
                cfg, services, resume=resume, progress=progress, split_override=split_override
            )
            _summary(result)
            _compare_with(client, from_run, result)
            return
        from heimdall.predict import session_inputs
        from heimdall.tracking.registry import CHAMPION, MODEL_NAME, register, update_champion
        from heimdall.tracking.run import start_run

        # --resume continues the MLflow run recorded in OUTPUT_DIR/mlflow_run.json (see start_run)
        with start_run(
            target,
            client,
            cfg,
            tags={"heimdall.from_run": from_run} if from_run else None,
            resume=resume and resume_checkpoint(cfg.output_dir) is not None,
        ) as run:
            result = run_training(
                cfg,
                services,
                resume=resume,
                progress=progress,
                model_id=run.run_id,
                callbacks=[run.callback()],
                split_override=split_override,
            )
            model_uri = run.log_result(result, services, session_inputs)
            version = register(client, model_uri, run.run_id, result.report)
            decision = update_champion(client, version, promote=promote)
            run.set_tags(
                {
                    "heimdall.registered_version": version.version,
                    "heimdall.champion_decision": decision.reason,
                }
            )
        _summary(result)
        typer.echo(f"mlflow run {run.run_id} (experiment {target.experiment!r}) at {target.display}")
        state = "moved to" if decision.moved else "stays at"
        champ = decision.version if decision.moved else (decision.previous or "none")
        typer.echo(
            f"registered {MODEL_NAME} version {version.version}; {CHAMPION} {state} version {champ}: "
            f"{decision.reason}"
        )
        if from_run:
            _compare_with(client, from_run, result)


def _compare_with(client: Any, run_id: str | None, result: Any) -> None:
    """After --from-run: the original run's test RMSE next to the re-run's."""
    if not run_id:
        return
    try:
        before = client.get_run(run_id).data.metrics.get("test_rmse_m")
    except Exception:
        return
    now = result.report["test"]["rmse_m"]
    if before is not None:
        rel = abs(now - before) / max(abs(before), 1e-12)
        typer.echo(
            f"re-run of {run_id}: test RMSE {now:.3f} m vs {before:.3f} m (relative difference {rel:.1e})"
        )


def _summary(result: Any) -> None:
    t = result.report["test"]
    typer.echo(
        f"model {result.model_id}: test RMSE {t['rmse_m']:.0f} m, median {t['median_error_m']:.0f} m, "
        f"1σ coverage {t['coverage_1sigma']:.2f}; "
        f"ONNX parity {result.report['onnx']['max_position_diff_m']:.2g} m"
    )
    typer.echo(f"report: {result.output_dir / 'report.md'}")
