"""Recording a training run in MLflow: params, tags, per-epoch metrics, artifacts and the ONNX model.

The training run is recorded live: its id is kept in ``OUTPUT_DIR/mlflow_run.json`` from the moment it
is created, so ``heimdall train --resume`` continues the same run after a crash or ``kill -9``.
Every call goes through the run's own ``MlflowClient`` (its target's tracking and registry URI): no
MLflow active run, no process-wide tracking URI, so runs in several threads do not mix.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heimdall.errors import HeimdallError
from heimdall.settings import redact_text
from heimdall.tracking.artifacts import repository, run_repository
from heimdall.tracking.connection import TrackingError, TrackingTarget, experiment_id, fail

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from heimdall.inference.localizer import OnnxLocalizer
    from heimdall.services import Services
    from heimdall.training.config import TrainConfig
    from heimdall.training.runner import TrainResult

    #: How a stored session becomes model inputs (``heimdall.jobs.predict.session_inputs``): passed in by
    #: the caller, so that tracking never imports the prediction layer above it.
    SessionInputsFn = Callable[[Services, str, OnnxLocalizer], Any]

log = logging.getLogger("heimdall.tracking")

EPOCH_METRICS = ("train_loss", "val_loss", "val_median_error_m")
RUN_ARTIFACTS = (
    "report.json",
    "report.md",
    "config.yaml",
    "normalization.json",
    "network.json",
    "split.json",
    "loss_curves.png",
    "error_cdf.png",
    "prediction_map.png",
)
VERSIONED_PACKAGES = {
    "torch": "torch",
    "lightning": "pytorch-lightning",
    "mlflow": "mlflow",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "numpy": "numpy",
    "heimdall": "heimdall-training",
}
RUN_MARKER = "mlflow_run.json"


# --------------------------------------------------------------------------------------------------------
# What a run records
# --------------------------------------------------------------------------------------------------------


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"model.embed_dim": "64", "datasets": '["sim:nw-italy-v1"]', …}``."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value))
        else:
            out[name] = "null" if value is None else str(value)
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment_tags() -> dict[str, str]:
    """Git commit (when the code is a checkout) and the versions of the packages that shape a model."""
    tags: dict[str, str] = {"heimdall.python": platform.python_version()}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["heimdall.git_commit"] = commit
        status = _git("status", "--porcelain", "--untracked-files=no")
        if status is not None:
            tags["heimdall.git_dirty"] = str(bool(status))
    for label, dist in VERSIONED_PACKAGES.items():
        try:
            tags[f"heimdall.version.{label}"] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            tags[f"heimdall.version.{label}"] = "not installed"
    return tags


def snapshot_params(report: Mapping[str, Any]) -> dict[str, str]:
    """The data snapshot: sessions and id hash per split, dataset labels, feature-config hash."""
    out = {
        "data.datasets": json.dumps(list(report.get("datasets", []))),
        "data.feature_config_hash": str(report.get("feature_config_hash")),
    }
    for split, snap in report.get("data_snapshot", {}).items():
        out[f"data.{split}.n"] = str(snap["n"])
        out[f"data.{split}.ids_sha256_16"] = str(snap["ids_sha256_16"])
    return out


def result_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Final numbers of a run: test metrics, the baseline, ONNX parity/latency/size, timing."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if math.isfinite(float(value)):
            out[name] = float(value)

    for k, v in report.get("test", {}).items():
        put(f"test_{k}", v)
    for k, v in report.get("baselines", {}).get("weighted_centroid", {}).items():
        put(f"baseline_weighted_centroid_{k}", v)
    for k in (
        "max_position_diff_m",
        "max_covariance_rel_diff",
        "size_bytes",
        "latency_ms_p50",
        "latency_ms_p90",
    ):
        put(f"onnx_{k}", report.get("onnx", {}).get(k))
    for k, v in report.get("timing", {}).items():
        put(k, v)
    put("epochs_run", report.get("epochs_run"))
    return out


def _metric_batch(values: Mapping[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, int(step)) for k, v in values.items()]


def epoch_metrics_callback(client: Any, run_id: str) -> pl.Callback:
    """A Lightning callback logging train_loss/val_loss/val_median_error_m with step = epoch.

    Epoch N is sent once its checkpoint is written (at the start of epoch N+1, or when training
    ends), so a run killed and resumed never logs an epoch twice; an epoch whose checkpoint was
    written but whose metrics were not sent is filled in by :meth:`TrackedRun.log_history`.
    """
    import pytorch_lightning as pl

    class MlflowEpochMetrics(pl.Callback):
        def __init__(self) -> None:
            self.failed = False
            self.pending: tuple[int, dict[str, float]] | None = None

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            m = trainer.callback_metrics
            values = {k: float(m[k]) for k in EPOCH_METRICS if k in m}
            values = {k: v for k, v in values.items() if math.isfinite(v)}
            self.pending = (trainer.current_epoch, values) if values else None

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.flush()

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.flush()

        def flush(self) -> None:
            if self.pending is None:
                return
            epoch, values = self.pending
            self.pending = None
            try:
                client.log_batch(run_id, metrics=_metric_batch(values, epoch))
            except Exception as exc:  # a tracking hiccup must not kill hours of training
                if not self.failed:
                    log.warning("could not log epoch metrics to MLflow: %s", redact_text(str(exc)))
                self.failed = True

    return MlflowEpochMetrics()


def onnx_signature(model_path: Path) -> Any:
    """The tensor signature of a Heimdall ONNX model (names, float32, dynamic batch)."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from heimdall.inference.localizer import OnnxLocalizer

    loc = OnnxLocalizer(model_path)
    r = loc.n_receivers
    f32 = np.dtype(np.float32)
    first = (
        TensorSpec(f32, (-1, r, 2, int(loc.n_samples or -1)), "iq")
        if loc.input_kind == "iq"
        else TensorSpec(f32, (-1, r, 4), "scalars")
    )
    carrier = [TensorSpec(f32, (-1,), "frequency_hz")] if loc.reads_frequency else []  # contract 2
    trust = [TensorSpec(f32, (-1, r), "receiver_trust")] if loc.reports_trust else []  # older files lack it
    return ModelSignature(
        inputs=Schema([first, TensorSpec(f32, (-1, r), "receiver_mask"), *carrier]),
        outputs=Schema(
            [
                TensorSpec(f32, (-1, 2), "position_enu_m"),
                TensorSpec(f32, (-1, 2, 2), "covariance_enu_m2"),
                *trust,
            ]
        ),
    )


def _input_example(
    services: Services | None,
    model_path: Path,
    split: Mapping[str, list[str]],
    session_inputs: SessionInputsFn | None,
) -> Any:
    """One real test session as the model reads it (None when it cannot be built)."""
    if services is None or session_inputs is None or not split.get("test"):
        return None
    from heimdall.inference.localizer import OnnxLocalizer

    try:
        loc = OnnxLocalizer(model_path)
        inputs = session_inputs(services, split["test"][0], loc)
    except Exception as exc:
        log.warning("no input example for the logged model: %s", redact_text(str(exc)))
        return None
    first = "iq" if loc.input_kind == "iq" else "scalars"
    example = {first: inputs.inputs, "receiver_mask": inputs.receiver_mask}
    if loc.reads_frequency:  # JSON has no NaN: an unknown carrier is given as the one the model assumes
        import numpy as np

        f = inputs.frequency_hz if inputs.frequency_hz is not None else loc.frequency_fill_hz
        example["frequency_hz"] = np.array([1e6 if f is None else f], np.float32)  # None: carrier ignored
    return example


def log_onnx_model(
    client: Any,
    run_id: str,
    experiment_id: str,
    model_path: Path,
    *,
    name: str = "model",
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, str] | None = None,
    step: int = 0,
    target: TrackingTarget | None = None,
) -> str:
    """Log ``model_path`` as the run's MLflow ONNX model through ``client``; returns ``models:/<id>``.

    What ``mlflow.onnx.log_model`` does, without its reliance on MLflow's process-wide tracking URI
    and active run: a LoggedModel (the run's params, MLflow's context tags) linked to the run as an
    output at ``step``, the run's metrics of that step linked to it, the MLflow Model folder
    (``MLmodel``, ``model.onnx``, signature, input example, requirements) saved locally and uploaded,
    then the model marked READY (FAILED if anything in between raises). With ``target``, the upload
    goes to the model's location relocated below the current data folder (:mod:`heimdall.tracking.artifacts`).
    """
    import mlflow.onnx
    import onnx
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model
    from mlflow.tracking.context import registry as context_registry

    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=run_id,
        tags={k: str(v) for k, v in context_registry.resolve_tags(None).items()},
        params={k: str(v) for k, v in run.data.params.items()},
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
        linked = [
            Metric(
                m.key,
                m.value,
                m.timestamp,
                m.step,
                model_id=logged.model_id,
                dataset_name=m.dataset_name,
                dataset_digest=m.dataset_digest,
                run_id=run_id,
            )
            for key in run.data.metrics
            for m in client.get_metric_history(run_id, key)
            if m.step == step and m.model_id is None
        ]
        for i in range(0, len(linked), 1000):  # MLflow's per-batch metric limit
            client.log_batch(run_id, metrics=linked[i : i + 1000])
        mlflow_model = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            metadata=dict(metadata) if metadata else None,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="heimdall-mlflow-model-") as tmp:
            local = Path(tmp) / "model"
            mlflow.onnx.save_model(
                onnx.load_model(str(model_path)),
                path=str(local),
                mlflow_model=mlflow_model,
                signature=signature,
                input_example=input_example,
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
                pip_requirements=["onnxruntime", "onnx", "numpy"],
            )
            if target is None:
                client.log_model_artifacts(logged.model_id, str(local))
            else:
                repository(target, client, str(logged.artifact_location)).log_artifacts(str(local))
    except BaseException as exc:
        try:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        except Exception as exc2:
            log.warning("could not mark logged model %s FAILED: %s", logged.model_id, redact_text(str(exc2)))
        if isinstance(exc, HeimdallError) or not isinstance(exc, Exception):
            raise  # already one line for the user, or Ctrl-C / SystemExit
        reason = " ".join(redact_text(f"{type(exc).__name__}: {exc}").split())
        raise TrackingError(f"cannot log the ONNX model to MLflow run {run_id}: {reason[:300]}") from None
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


@dataclass
class TrackedRun:
    """One MLflow run wrapped around a training run (see :func:`start_run`)."""

    target: TrackingTarget
    client: Any
    run_id: str
    experiment_id: str
    model_uri: str | None = None
    logged: dict[str, Any] = field(default_factory=dict)

    def callback(self) -> pl.Callback:
        return epoch_metrics_callback(self.client, self.run_id)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch parameter limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_history(self, history: list[Mapping[str, float]]) -> int:
        """Log the epochs of ``history`` that the run does not have yet (e.g. the epoch a kill
        interrupted between its checkpoint and its metrics); returns how many epochs were added."""
        logged: dict[str, set[int]] = {}
        for key in EPOCH_METRICS:
            logged[key] = {int(m.step) for m in self.client.get_metric_history(self.run_id, key)}
        batch: list[Any] = []
        added = 0
        for row in history:
            step = int(row["epoch"])
            values = {
                k: float(row[k])
                for k in EPOCH_METRICS
                if k in row and step not in logged[k] and math.isfinite(float(row[k]))
            }
            if values:
                batch.extend(_metric_batch(values, step))
                added += 1
        for i in range(0, len(batch), 1000):  # MLflow's per-batch metric limit
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])
        return added

    def log_result(
        self,
        result: TrainResult,
        services: Services | None = None,
        session_inputs: SessionInputsFn | None = None,
    ) -> str:
        """Snapshot params, final metrics, run artifacts and the ONNX model; returns the model URI.

        With ``services`` and ``session_inputs`` (``heimdall.jobs.predict.session_inputs``), the first test
        session, as the model reads it, is logged as the model's input example.
        """
        report = result.report if isinstance(result.report, Mapping) else result.report.as_json()
        out = Path(result.output_dir)
        self.log_history(report.get("history", []))
        self.log_params(snapshot_params(report))
        snap = report.get("data_snapshot", {})
        self.set_tags(
            {
                "heimdall.resumed": str(bool(report.get("resumed", False))).lower(),
                "heimdall.resumed_from_epoch": str(report.get("resumed_from_epoch")),
                "heimdall.model_id": result.model_id,
                "heimdall.data_snapshot": json.dumps(snap, sort_keys=True),
                "heimdall.test_ids_sha256_16": str(snap.get("test", {}).get("ids_sha256_16", "")),
                "heimdall.datasets": json.dumps(list(report.get("datasets", []))),
                "heimdall.feature_config_hash": str(report.get("feature_config_hash")),
                "heimdall.onnx_object_key": str(report.get("onnx", {}).get("object_key", "")),
            }
        )
        metrics = result_metrics(report)
        self.client.log_batch(self.run_id, metrics=_metric_batch(metrics, int(report.get("epochs_run", 0))))
        repo = run_repository(self.target, self.client, self.run_id)  # relocated if the data folder moved
        for name in RUN_ARTIFACTS:
            if (out / name).is_file():
                repo.log_artifact(str(out / name))
        best = out / "checkpoints" / str(report.get("best_checkpoint", "best.ckpt"))
        if best.is_file():
            repo.log_artifact(str(best), "checkpoints")
        model_path = out / "model.onnx"
        split = json.loads((out / "split.json").read_text()) if (out / "split.json").is_file() else {}
        model_uri = log_onnx_model(
            self.client,
            self.run_id,
            self.experiment_id,
            model_path,
            signature=onnx_signature(model_path),
            input_example=_input_example(services, model_path, split, session_inputs),
            metadata={"heimdall_model_id": result.model_id},
            target=self.target,
        )
        self.model_uri = model_uri
        self.logged = {"metrics": metrics, "model_uri": model_uri}
        return model_uri


def write_run_marker(output_dir: Path, run: TrackedRun) -> Path:
    """Record the run in ``output_dir/mlflow_run.json`` (atomically) so ``--resume`` finds it."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_MARKER
    tmp = path.with_name(f".{RUN_MARKER}.tmp-{os.getpid()}")
    data = {
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "tracking_uri": run.target.display,
        "pid": os.getpid(),
        "host": platform.node(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_run_marker(output_dir: Path) -> str | None:
    """The MLflow run id recorded in ``output_dir/mlflow_run.json``, or None (absent or unreadable)."""
    try:
        data = json.loads((Path(output_dir) / RUN_MARKER).read_text())
    except (OSError, ValueError):
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return str(run_id) if run_id else None


RESUMABLE_STATUSES = ("RUNNING", "SCHEDULED", "FAILED", "KILLED")


def _previous_run(client: Any, run_id: str | None) -> Any:
    """The recorded run if it still exists (and is not deleted) at this tracking store, else None."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        log.warning("MLflow run %s of the output folder is not available: %s", run_id, redact_text(str(exc)))
        return None
    return None if run.info.lifecycle_stage == "deleted" else run


@contextmanager
def start_run(
    target: TrackingTarget,
    client: Any,
    config: TrainConfig,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    resume: bool = False,
) -> Iterator[TrackedRun]:
    """Create the run (config as params, environment tags), recorded through ``client`` only.

    The run id is written to ``OUTPUT_DIR/mlflow_run.json`` as soon as the run exists. With ``resume``
    (training continues from a checkpoint), the run recorded there is continued when it is RUNNING
    (its process was killed), FAILED or KILLED: same run id, so same model id, with the epochs
    before and after the interruption in one metric history. A FINISHED run is left as it is and a
    new run starts (tagged ``heimdall.resumed_from_run``). Without ``resume``, a recorded run still
    RUNNING is ended as KILLED (its folder is being overwritten) before the new run starts.

    The run ends FINISHED when the block completes, FAILED when it raises (KILLED on Ctrl-C). It is
    never made MLflow's (thread-local, process-URI) active run: every call names the run and client.

    In a distributed run only rank 0 records: any other rank (``heimdall.training.distributed``) gets a
    detached :class:`TrackedRun` with an empty ``run_id`` that no call reaches MLflow through; it
    trains and exits after ``fit`` (its epoch callback logs nothing off rank 0 either).
    """
    from heimdall.training.distributed import is_rank_zero

    if not is_rank_zero():
        yield TrackedRun(target, client, run_id="", experiment_id="")
        return
    out = Path(config.output_dir)
    previous = _previous_run(client, read_run_marker(out))
    exp_id = experiment_id(client, target)
    base_tags = {
        "mlflow.source.name": "heimdall train",
        "mlflow.source.type": "LOCAL",
        **environment_tags(),
        **(tags or {}),
    }
    params = {**flatten_params(config.resolved()), "seed": str(config.seed)}
    continued = resume and previous is not None and previous.info.status in RESUMABLE_STATUSES
    try:
        if continued:
            run = previous
            exp_id = str(run.info.experiment_id)
            count = int(run.data.tags.get("heimdall.resume_count", "0")) + 1
            base_tags.update({"heimdall.resumed": "true", "heimdall.resume_count": str(count)})
            before = run.data.params
            changed = {k: [before[k], v] for k, v in params.items() if before.get(k, v) != v}
            if changed:  # MLflow params are immutable: record what the resumed part changed
                base_tags["heimdall.resume_changed_params"] = json.dumps(changed, sort_keys=True)[:5000]
            params = {k: v for k, v in params.items() if k not in before}
            log.warning("resuming MLflow run %s (was %s)", run.info.run_id, run.info.status)
        else:
            if previous is not None and previous.info.status == "RUNNING":
                client.set_terminated(previous.info.run_id, status="KILLED")
                log.warning("MLflow run %s of %s was left RUNNING: marked KILLED", previous.info.run_id, out)
            if resume and previous is not None:
                base_tags["heimdall.resumed_from_run"] = previous.info.run_id
            run = client.create_run(exp_id, run_name=run_name, tags=base_tags)
    except Exception as exc:
        raise fail(target, "cannot create a run", exc) from None
    tracked = TrackedRun(target, client, run.info.run_id, exp_id)
    status = "FAILED"
    try:
        write_run_marker(out, tracked)
        if continued:
            tracked.set_tags(base_tags)
        tracked.log_params(params)
        if continued and run.info.status != "RUNNING":
            client.update_run(tracked.run_id, status="RUNNING")  # as mlflow.start_run(run_id=…) does
        yield tracked
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            client.set_terminated(tracked.run_id, status=status)
        except Exception as exc:
            log.warning("could not mark MLflow run %s %s: %s", tracked.run_id, status, redact_text(str(exc)))
