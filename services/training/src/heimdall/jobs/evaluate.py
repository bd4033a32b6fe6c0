"""Evaluate a model (``heimdall evaluate``): resolve it to local files, then run the evaluation core.

The model is a training output folder, a model.onnx path or an MLflow URI (``models:/NAME@ALIAS``,
``runs:/…``); an MLflow model whose folder lacks split.json/network.json gets them from the training
run that logged it (its model id). :func:`heimdall.evaluate.job.evaluate` does the rest on local files.

When the model came from a tracked training run (an MLflow URI, or a training folder with its
``mlflow_run.json``) and ``tracking`` is on, the evaluation's files and headline metrics are attached
to that run afterwards (:mod:`heimdall.tracking.evaluation`). A failure there never removes the
evaluation already written: the outcome says why nothing was attached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from heimdall.atomic import check_output_dir, removed_on_failure
from heimdall.errors import UserError
from heimdall.evaluate.job import EvaluationError, ModelFiles
from heimdall.evaluate.job import evaluate as evaluate_files
from heimdall.evaluate.report import EvaluationReport
from heimdall.services import Services, open_services
from heimdall.settings import Settings

log = logging.getLogger("heimdall.evaluate")


class EvaluateRequest(BaseModel):
    """The options of ``heimdall evaluate``."""

    model: str
    split: str = "test"
    output_dir: Path = Path("evaluation")
    outage: bool = True
    oracle: bool = True
    outage_sessions: int | None = None
    #: a user's scenario file for the oracle (refused unless the sessions recorded its content hash)
    scenario: Path | None = None
    #: attach the evaluation to the model's MLflow training run, when it has one
    tracking: bool = True


class MlflowAttachment(BaseModel):
    """Whether the evaluation reached the model's MLflow run, and why not."""

    run_id: str | None = None
    attached: bool = False
    artifact_path: str | None = None  # evaluation/<split> inside the run's artifacts
    artifacts: list[str] = []
    metrics: dict[str, float] = {}
    reason: str | None = None  # why nothing was attached


class MethodSummary(BaseModel):
    """One method's headline figures on the split (all of them are in ``evaluation``)."""

    rmse_m: float
    median_error_m: float


class EvaluateOutcome(BaseModel):
    """The evaluation: headline figures per method, where the report is, and the full evaluation.json."""

    model_id: str
    output_dir: Path
    report: Path  # evaluation.md
    methods: dict[str, MethodSummary]
    evaluation: EvaluationReport  # evaluation.json (``.as_json()``)
    mlflow: MlflowAttachment = MlflowAttachment(reason="not attempted")


def resolve_model_files(model: str, settings: Settings, workdir: Path) -> ModelFiles:
    """model.onnx plus the split.json and network.json of the run that made it, as local files."""
    from heimdall.jobs.predict import is_mlflow_uri, resolve_model

    onnx_path = resolve_model(model, settings, dst=workdir / "model")
    split, network = onnx_path.parent / "split.json", onnx_path.parent / "network.json"
    if (not split.is_file() or not network.is_file()) and is_mlflow_uri(model):
        from heimdall.inference.localizer import OnnxLocalizer
        from heimdall.tracking.models import download_run_artifacts

        run_id = OnnxLocalizer(onnx_path).model_id
        split, network = download_run_artifacts(
            settings, run_id, ("split.json", "network.json"), workdir / "run"
        )
    for f in (split, network):
        if not f.is_file():
            raise EvaluationError(f"{f.name} of model {model} not found beside {onnx_path}")
    return ModelFiles(onnx_path, split, network, model)


def evaluate_with(
    request: EvaluateRequest, services: Services, progress: Callable[[str], None] | None = None
) -> EvaluateOutcome:
    """The evaluation with services already open (a worker that keeps them)."""
    out = request.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --output-dir {out}: {exc.strerror or exc}") from None
    scenario = None
    if request.scenario is not None:
        from heimdall.simulate.scenario import load_scenario

        scenario = load_scenario(Path(request.scenario))
    files = resolve_model_files(request.model, services.settings, out)
    result = evaluate_files(
        files,
        services,
        out,
        request.split,
        request.outage,
        request.oracle,
        progress=progress,
        outage_sessions=request.outage_sessions,
        scenario=scenario,
    )
    return EvaluateOutcome(
        model_id=result.model_id,
        output_dir=out,
        report=out / "evaluation.md",
        methods={
            name: MethodSummary(rmse_m=m.rmse_m, median_error_m=m.median_error_m)
            for name, m in result.methods.items()
        },
        evaluation=result,
    )


def evaluate(
    request: EvaluateRequest, settings: Settings, progress: Callable[[str], None] | None = None
) -> EvaluateOutcome:
    """Evaluate ``request.model`` on its recorded split; a failed evaluation leaves no half-written folder."""
    check_output_dir(request.output_dir)
    services = open_services(settings)
    try:
        with removed_on_failure(request.output_dir):
            outcome = evaluate_with(request, services, progress)
    finally:
        services.close()
    if request.tracking:
        outcome.mlflow = attach_to_run(request.model, outcome, settings)
    else:
        outcome.mlflow = MlflowAttachment(reason="tracking off")
    return outcome


def tracked_run_id(model: str, model_id: str) -> str | None:
    """The MLflow run that trained ``model``: its model id for an MLflow URI, else the training folder's
    ``mlflow_run.json`` (written only by a tracked ``heimdall train``); None for an untracked model."""
    from heimdall.jobs.predict import is_mlflow_uri

    if is_mlflow_uri(model):
        return model_id
    from heimdall.tracking.run import read_run_marker

    path = Path(model).expanduser()
    return read_run_marker(path if path.is_dir() else path.parent)


def attach_to_run(model: str, outcome: EvaluateOutcome, settings: Settings) -> MlflowAttachment:
    """Attach ``outcome``'s files and metrics to the model's training run (see the module docstring)."""
    from heimdall.tracking.connection import TrackingError, TrackingTarget, connect
    from heimdall.tracking.evaluation import attach_evaluation

    run_id = tracked_run_id(model, outcome.model_id)
    if run_id is None:
        return MlflowAttachment(reason="the model has no MLflow run (trained with --no-tracking?)")
    target = TrackingTarget.from_settings(settings)
    if target.kind == "sqlite":
        db = Path(target.uri.split("///", 1)[-1])
        if not db.is_file():  # an embedded store that does not exist cannot hold the run: create nothing
            return MlflowAttachment(run_id=run_id, reason=f"no MLflow store at {db}")
    try:
        target, client = connect(settings)
        try:
            client.get_run(run_id)
        except Exception:  # MLflow says "not found" in several ways
            where = target.display
            return MlflowAttachment(run_id=run_id, reason=f"run {run_id} is not in MLflow at {where}")
        done = attach_evaluation(target, client, run_id, outcome.output_dir, outcome.evaluation.as_json())
    except TrackingError as exc:
        log.warning("evaluation not attached to MLflow run %s: %s", run_id, exc)
        return MlflowAttachment(run_id=run_id, reason=str(exc))
    return MlflowAttachment(
        run_id=run_id,
        attached=True,
        artifact_path=done.artifact_path,
        artifacts=list(done.artifacts),
        metrics=done.metrics,
    )
