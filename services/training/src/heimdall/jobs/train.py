"""Train a model (``heimdall train``): configuration, tracking, ``--from-run`` replay, registry, champion.

:func:`train` is the whole use case: load the configuration with the request's overrides, connect to
MLflow (fail-fast, before any data is read), replay a recorded run's config and split, train, log the
run, register the model and decide on the champion alias, and compare a re-run with its original.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from heimdall.errors import UserError
from heimdall.jobs.models import ChampionOutcome, VersionRecord
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.training.config import TrainConfig, load_config
from heimdall.training.report import TrainReport
from heimdall.training.runner import TrainResult, resume_checkpoint, run_training


class TrainRequest(BaseModel):
    """The options of ``heimdall train``; None leaves the configuration's value (or its default)."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    output_dir: Path | None = None
    seed: int | None = None
    config: Path | None = None
    datasets: list[str] | None = None
    max_sessions: int | None = None
    accelerator: str | None = None
    devices: str | None = None
    num_nodes: int | None = None
    strategy: str | None = None
    patience: int | None = None
    split: str | None = None
    val_datasets: list[str] | None = None
    test_datasets: list[str] | None = None
    site_radius_m: float | None = None
    resume: bool = False
    progress: bool = True  # Lightning's progress bar
    tracking: bool = True
    promote: bool = False
    from_run: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The configuration overrides these options make."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "output_dir": self.output_dir,
            "seed": self.seed,
            "datasets": self.datasets or None,
            "max_sessions": self.max_sessions,
            "accelerator": self.accelerator,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "strategy": self.strategy,
            "patience": self.patience,
            "split": self.split,
            "val_datasets": self.val_datasets,
            "test_datasets": self.test_datasets,
            "site_radius_m": self.site_radius_m,
        }


class TrackedRunInfo(BaseModel):
    """Where the run was logged."""

    run_id: str
    experiment: str
    tracking: str  # the tracking store, password masked


class RerunComparison(BaseModel):
    """After ``--from-run``: the original run's test RMSE next to the re-run's."""

    run_id: str
    original_rmse_m: float
    rerun_rmse_m: float
    relative_difference: float


class TrainOutcome(BaseModel):
    """What a training run produced."""

    model_id: str
    output_dir: Path
    report: TrainReport
    mlflow: TrackedRunInfo | None = None
    model_name: str | None = None
    alias: str | None = None
    registered: VersionRecord | None = None
    champion: ChampionOutcome | None = None
    comparison: RerunComparison | None = None

    @property
    def mlflow_run_id(self) -> str | None:
        return self.mlflow.run_id if self.mlflow is not None else None


def _outcome(result: TrainResult, **extra: Any) -> TrainOutcome:
    return TrainOutcome(model_id=result.model_id, output_dir=result.output_dir, report=result.report, **extra)


def train(
    request: TrainRequest, settings: Settings, echo: Callable[[str], None] | None = None
) -> TrainOutcome:
    """Train, evaluate, export and report; with tracking, log, register and decide on the champion.

    ``echo`` receives the training's console lines (split sizes, epochs, how it ended; see run_training).
    """
    if request.promote and not request.tracking:
        raise UserError("--promote registers the model in MLflow: drop --no-tracking")
    if request.from_run and request.config is not None:
        raise UserError("--from-run re-uses the run's own config.yaml: do not combine it with --config")
    overrides = request.overrides()
    if not (request.tracking or request.from_run):
        cfg = load_config(request.config, overrides)
        services = open_services(settings)
        try:
            result = run_training(cfg, services, resume=request.resume, progress=request.progress, echo=echo)
        finally:
            services.close()
        return _outcome(result)
    from heimdall.tracking.connection import connect
    from heimdall.tracking.replay import fetch_run_spec

    with ExitStack() as stack:
        if not request.from_run:
            # an invalid config fails before any server is contacted
            cfg = load_config(request.config, overrides)
        target, client = connect(settings)  # fail fast, before any data is read or training starts
        split_override = None
        if request.from_run:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="heimdall-from-run-")))
            spec = fetch_run_spec(target, client, request.from_run, tmp)
            cfg = _rerun_config(load_config(spec.config_path, overrides), request)
            split_override = spec.split
        services = open_services(settings)
        stack.callback(services.close)
        if not request.tracking:
            result = run_training(
                cfg,
                services,
                resume=request.resume,
                progress=request.progress,
                split_override=split_override,
                echo=echo,
            )
            return _outcome(result, comparison=_compare_with(client, request.from_run, result))
        return _tracked(request, cfg, services, target, client, split_override, echo)


def _rerun_config(cfg: TrainConfig, request: TrainRequest) -> TrainConfig:
    """A re-run never overwrites the original run's folder unless --output-dir says so."""
    if request.output_dir is not None or not request.from_run:
        return cfg
    base = cfg.output_dir if cfg.output_dir.name else Path("models")
    return cfg.model_copy(update={"output_dir": base.with_name(f"{base.name}-rerun-{request.from_run[:8]}")})


def _tracked(
    request: TrainRequest,
    cfg: TrainConfig,
    services: Any,
    target: Any,
    client: Any,
    split_override: dict[str, list[str]] | None,
    echo: Callable[[str], None] | None = None,
) -> TrainOutcome:
    from heimdall.jobs.predict import session_inputs
    from heimdall.tracking.registry import CHAMPION, MODEL_NAME, register, update_champion
    from heimdall.tracking.run import start_run

    from_run = request.from_run
    # --resume continues the MLflow run recorded in OUTPUT_DIR/mlflow_run.json (see start_run)
    with start_run(
        target,
        client,
        cfg,
        tags={"heimdall.from_run": from_run} if from_run else None,
        resume=request.resume and resume_checkpoint(cfg.output_dir) is not None,
    ) as run:
        result = run_training(
            cfg,
            services,
            resume=request.resume,
            progress=request.progress,
            model_id=run.run_id,
            callbacks=[run.callback()],
            split_override=split_override,
            echo=echo,
        )
        model_uri = run.log_result(result, services, session_inputs)
        version = register(client, model_uri, run.run_id, result.report)
        decision = update_champion(client, version, promote=request.promote)
        run.set_tags(
            {
                "heimdall.registered_version": version.version,
                "heimdall.champion_decision": decision.reason,
            }
        )
    return _outcome(
        result,
        mlflow=TrackedRunInfo(run_id=run.run_id, experiment=target.experiment, tracking=target.display),
        model_name=MODEL_NAME,
        alias=CHAMPION,
        registered=VersionRecord.of(version),
        champion=ChampionOutcome.of(decision),
        comparison=_compare_with(client, from_run, result),
    )


def _compare_with(client: Any, run_id: str | None, result: TrainResult) -> RerunComparison | None:
    """After --from-run: the original run's test RMSE next to the re-run's (None when unavailable)."""
    if not run_id:
        return None
    try:
        before = client.get_run(run_id).data.metrics.get("test_rmse_m")
    except Exception:
        return None
    if before is None:
        return None
    now = result.report.test.rmse_m
    rel = abs(now - before) / max(abs(before), 1e-12)
    return RerunComparison(
        run_id=run_id, original_rmse_m=float(before), rerun_rmse_m=now, relative_difference=rel
    )
