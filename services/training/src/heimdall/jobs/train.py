"""Train a model (``heimdall train``): configuration, tracking, ``--from-run`` replay, registry, champion.

:func:`train` is the whole use case: load the configuration with the request's overrides, connect to
MLflow (fail-fast, before any data is read), replay a recorded run's config and split, fetch the run an
``--init-from`` names (an MLflow run or registered model: its run folder's files, downloaded), train, log
the run, register the model and decide on the champion alias, and compare a re-run with its original.
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
from heimdall.jobs.train_options import TrainOptions, mlflow_reference
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.training.config import TrainConfig, load_config
from heimdall.training.init_from import RUN_FILES, InitFromError, shipped_checkpoint
from heimdall.training.report import TrainReport
from heimdall.training.runner import TrainResult, resume_checkpoint, run_training


class TrainRequest(TrainOptions):
    """The options of ``heimdall train``: the shared :class:`TrainOptions` and the local-only ones."""

    output_dir: Path | None = None
    config: Path | None = None
    resume: bool = False
    progress: bool = True  # Lightning's progress bar

    def overrides(self) -> dict[str, Any]:
        """The configuration overrides these options make."""
        return {**self.config_overrides(), "output_dir": self.output_dir}


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
        with ExitStack() as stack:
            init_dir, _ = init_source_folder(cfg.init_from, settings, stack)
            services = open_services(settings)
            stack.callback(services.close)
            result = run_training(
                cfg, services, resume=request.resume, progress=request.progress, echo=echo, init_dir=init_dir
            )
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
        init = init_source_folder(cfg.init_from, settings, stack, (target, client))
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
                init_dir=init[0],
            )
            return _outcome(result, comparison=_compare_with(client, request.from_run, result))
        return _tracked(request, cfg, services, target, client, split_override, echo, init)


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
    init: tuple[Path | None, str | None] = (None, None),
) -> TrainOutcome:
    from heimdall.jobs.predict import session_inputs
    from heimdall.tracking.registry import CHAMPION, MODEL_NAME, register, update_champion
    from heimdall.tracking.run import start_run

    from_run = request.from_run
    tags = {"heimdall.from_run": from_run} if from_run else {}
    if init[1]:  # the run an alias or version pointed at when training started (aliases move)
        tags["heimdall.init_from_run"] = init[1]
    # --resume continues the MLflow run recorded in OUTPUT_DIR/mlflow_run.json (see start_run)
    with start_run(
        target,
        client,
        cfg,
        tags=tags or None,
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
            init_dir=init[0],
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


#: An MLflow run id as MLflow creates them (a uuid4 in hex).
def _missing(exc: Exception) -> bool:
    text = str(exc)
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or any(
        k in text for k in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "not found")
    )


def _source_run_id(client: Any, reference: str, kind: str, value: str, where: str) -> str:
    """The MLflow run that holds the source's files (a model's version or logged model → its run)."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from heimdall.settings import redact_text

    def reason(exc: Exception) -> str:
        return (redact_text(str(exc)).strip().splitlines() or [type(exc).__name__])[0][:200]

    try:
        if kind == "run":
            client.get_run(value)
            return value
        base, _ = ModelsArtifactRepository.split_models_uri(value)
        found = get_model_name_and_version(client, base)
        if len(found) == 1:
            run_id = client.get_logged_model(found[0]).source_run_id
        else:
            run_id = client.get_model_version(str(found[0]), str(found[1])).run_id
    except Exception as exc:
        if _missing(exc):
            what = "run" if kind == "run" else "registered model"
            raise InitFromError(
                f"--init-from {reference}: no MLflow {what} {value} at {where}: {reason(exc)}"
            ) from None
        from heimdall.tracking.connection import TrackingError

        raise TrackingError(f"cannot look up --init-from {reference} at {where}: {reason(exc)}") from None
    if not run_id:
        raise InitFromError(f"--init-from {reference}: model {value} was not logged by a run (no source run)")
    return str(run_id)


def init_source_folder(
    reference: str | None, settings: Settings, stack: ExitStack, tracking: tuple[Any, Any] | None = None
) -> tuple[Path | None, str | None]:
    """The run folder an ``--init-from`` MLflow reference names, downloaded into a temporary folder that
    ``stack`` removes, and the MLflow run id it came from; ``(None, None)`` for a local folder (or
    anything else: :mod:`heimdall.training.init_from` reads and refuses it by its name).

    ``tracking``: an already connected ``(target, client)``; otherwise this connects (fail-fast).
    """
    kind = mlflow_reference(reference) if reference is not None and not Path(reference).exists() else None
    if reference is None or kind is None:
        return None, None
    from heimdall.tracking.artifacts import download_run_artifact
    from heimdall.tracking.connection import connect

    target, client = tracking if tracking is not None else connect(settings)
    run_id = _source_run_id(client, reference, kind[0], kind[1], target.display)
    dst = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="heimdall-init-from-")))
    for name in (*RUN_FILES, "report.json"):
        try:
            download_run_artifact(target, client, run_id, name, dst)
        except Exception:
            if name == "report.json":  # only says which checkpoint shipped
                continue
            raise InitFromError(
                f"--init-from {reference}: MLflow run {run_id} has no {name} artifact (was it logged by "
                "heimdall train?)"
            ) from None
    best = shipped_checkpoint(dst) or "best.ckpt"
    try:
        download_run_artifact(target, client, run_id, f"checkpoints/{best}", dst)
    except Exception:
        raise InitFromError(
            f"--init-from {reference}: MLflow run {run_id} has no checkpoints/{best} artifact (runs logged "
            "by heimdall train carry their best checkpoint)"
        ) from None
    return dst, run_id
