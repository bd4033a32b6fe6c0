"""MLflow tracking of training runs: a fail-fast preflight, then params, tags, metrics and artifacts.

Three kinds of tracking URI work (``MLFLOW_TRACKING_URI``, default ``sqlite:///heimdall-data/mlflow.db``):

* ``sqlite:///…`` — the embedded default; artifacts go under ``heimdall-data/mlartifacts``;
* ``postgresql://…`` — MLflow's SQLAlchemy store in-process (through psycopg 3); artifacts go where
  ``HEIMDALL_MLFLOW_ARTIFACT_ROOT`` says (e.g. ``s3://mlflow/artifacts`` with ``MLFLOW_S3_ENDPOINT_URL``
  or ``AWS_ENDPOINT_URL`` pointing at MinIO), else under ``heimdall-data/mlartifacts``;
* ``http(s)://…`` — a tracking server, which decides where artifacts go.

Every contact with a server has an explicit timeout and bounded retries, and every message names the
URI with its password masked. mlflow itself is imported lazily: commands that never track stay fast.
The MLflow run id is the model id (``report.json``, ``heimdall-models/{model_id}/model.onnx``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from heimdall.settings import Settings, redact_text, redact_url

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from heimdall.services import Services
    from heimdall.training.config import TrainConfig
    from heimdall.training.runner import TrainResult

log = logging.getLogger("heimdall.tracking")

EXPERIMENT_ENV = "HEIMDALL_MLFLOW_EXPERIMENT"
ARTIFACT_ROOT_ENV = "HEIMDALL_MLFLOW_ARTIFACT_ROOT"
DEFAULT_EXPERIMENT = "heimdall"
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
# Defaults for MLflow's HTTP client (a user's own setting wins): fail in seconds, not minutes.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class TrackingError(RuntimeError):
    """MLflow cannot be used (unreachable, misconfigured, unknown run); the URI is shown without password."""


# --------------------------------------------------------------------------------------------------------
# Where tracking goes
# --------------------------------------------------------------------------------------------------------


def mlflow_store_uri(uri: str) -> str:
    """The URI as MLflow's SQLAlchemy store needs it: ``postgresql://`` → ``postgresql+psycopg://``.

    The project ships psycopg 3, not psycopg2 (SQLAlchemy's default PostgreSQL driver).
    """
    for prefix in ("postgres://", "postgresql://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix) :]
    return uri


def _kind(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return "http"
    if scheme.startswith("postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("", "file"):
        return "file"
    return scheme


@dataclass(frozen=True)
class TrackingTarget:
    """A resolved tracking destination: the URI MLflow uses, how to show it, where artifacts go."""

    uri: str
    display: str
    kind: str
    experiment: str
    artifact_root: str | None  # None: the server (or MLflow) decides
    s3_endpoint_url: str | None = None
    connect_timeout_s: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> TrackingTarget:
        env = os.environ if environ is None else environ
        raw = settings.resolved_mlflow_uri
        kind = _kind(raw)
        root = env.get(ARTIFACT_ROOT_ENV) or None
        if root is None and kind in ("sqlite", "postgresql"):
            root = (settings.data_dir / "mlartifacts").resolve().as_uri()
        if root is not None and "://" not in root:
            root = Path(root).resolve().as_uri()
        return cls(
            uri=mlflow_store_uri(raw),
            display=redact_url(raw),
            kind=kind,
            experiment=env.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT,
            artifact_root=root,
            s3_endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or settings.s3_endpoint_url,
            connect_timeout_s=settings.connect_timeout_s,
        )


@contextmanager
def tracking_environment(target: TrackingTarget) -> Iterator[None]:
    """Bounded HTTP timeouts/retries and the S3 endpoint for MLflow, restored afterwards."""
    wanted = {k: v for k, v in HTTP_ENV_DEFAULTS.items() if k not in os.environ}
    if target.s3_endpoint_url and "MLFLOW_S3_ENDPOINT_URL" not in os.environ:
        wanted["MLFLOW_S3_ENDPOINT_URL"] = target.s3_endpoint_url
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fail(target: TrackingTarget, what: str, exc: BaseException | str) -> TrackingError:
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return TrackingError(
        f"MLflow tracking at {target.display} {what}: {redact_text(str(reason))}. "
        "Check MLFLOW_TRACKING_URI (or pass --no-tracking)"
    )


# --------------------------------------------------------------------------------------------------------
# Preflight: fail before any training starts
# --------------------------------------------------------------------------------------------------------


def _check_http(target: TrackingTarget, attempts: int = 2) -> None:
    url = target.uri.rstrip("/") + "/health"
    parts = urlsplit(url)
    if parts.username or parts.password:  # urllib wants credentials as a header, not in the URL
        import base64

        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = parts._replace(netloc=netloc).geturl()
        token = base64.b64encode(f"{parts.username or ''}:{parts.password or ''}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
    else:
        headers = {}
    last: BaseException | None = None
    what = "is unreachable"
    for attempt in range(attempts):
        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(req, timeout=target.connect_timeout_s) as resp:
                if resp.status == 200:
                    return
                last, what = RuntimeError(f"GET /health answered HTTP {resp.status}"), "is not healthy"
        except urllib.error.HTTPError as exc:
            last, what = RuntimeError(f"GET /health answered HTTP {exc.code}"), "is not healthy"
            break  # the server is there; retrying an error status will not help
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = exc.reason if isinstance(exc, urllib.error.URLError) else exc  # type: ignore[assignment]
        if attempt + 1 < attempts:
            time.sleep(0.5)
    raise _fail(target, what, last or "no answer")


def _check_postgres(target: TrackingTarget) -> None:
    import psycopg

    conninfo = "postgresql://" + target.uri.split("://", 1)[1]
    try:
        with psycopg.connect(conninfo, connect_timeout=max(1, math.ceil(target.connect_timeout_s))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise _fail(target, "is unreachable", exc) from None


def _check_sqlite(target: TrackingTarget) -> None:
    path = target.uri.split("///", 1)[1] if "///" in target.uri else ""
    if path and path != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(target, "cannot create its folder", exc) from None


def _check_artifact_root(target: TrackingTarget) -> None:
    """An ``s3://`` artifact root must be reachable; its bucket is created if missing (MinIO starts empty)."""
    root = target.artifact_root
    if not root:
        return
    parts = urlsplit(root)
    if parts.scheme == "file":
        from urllib.request import url2pathname

        try:
            Path(url2pathname(parts.path)).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"MLflow artifact root {root} cannot be created: {exc}") from None
        return
    if parts.scheme != "s3":
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = parts.netloc
    where = f"MLflow artifact root {root} (endpoint {redact_url(target.s3_endpoint_url or 'AWS default')})"
    client = boto3.client(
        "s3",
        endpoint_url=target.s3_endpoint_url,
        config=Config(
            connect_timeout=target.connect_timeout_s,
            read_timeout=2 * target.connect_timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise TrackingError(
            f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise TrackingError(f"{where} is not usable: {redact_text(str(exc))}") from None
        try:
            client.create_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc2:
            raise TrackingError(f"{where}: cannot create bucket: {redact_text(str(exc2))}") from None
    except BotoCoreError as exc:
        raise TrackingError(f"{where} is unreachable: {redact_text(str(exc))}") from None


def preflight(target: TrackingTarget) -> None:
    """Reach the tracking store (and an S3 artifact root) within seconds, or raise TrackingError."""
    if target.kind == "http":
        _check_http(target)
    elif target.kind == "postgresql":
        _check_postgres(target)
    elif target.kind == "sqlite":
        _check_sqlite(target)
    _check_artifact_root(target)


def mlflow_client(target: TrackingTarget) -> Any:
    """An MlflowClient for tracking and registry at ``target`` (also made MLflow's global URI)."""
    import mlflow

    mlflow.set_tracking_uri(target.uri)
    mlflow.set_registry_uri(target.uri)
    return mlflow.MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)


def connect(settings: Settings | None = None) -> tuple[TrackingTarget, Any]:
    """Resolve, preflight and open: (target, MlflowClient). Call inside :func:`tracking_environment`."""
    target = TrackingTarget.from_settings(settings or Settings())
    preflight(target)
    client = mlflow_client(target)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, requests errors, SQLAlchemy errors
        raise _fail(target, "cannot be used", exc) from None
    return target, client


def experiment_id(client: Any, target: TrackingTarget) -> str:
    """The experiment's id, creating it (with the target's artifact root) the first time."""
    try:
        exp = client.get_experiment_by_name(target.experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)
        return str(client.create_experiment(target.experiment, artifact_location=target.artifact_root))
    except Exception as exc:
        raise _fail(target, f"cannot open experiment {target.experiment!r}", exc) from None


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
    """A Lightning callback logging train_loss/val_loss/val_median_error_m with step = epoch."""
    import pytorch_lightning as pl

    class MlflowEpochMetrics(pl.Callback):
        def __init__(self) -> None:
            self.failed = False

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            m = trainer.callback_metrics
            values = {k: float(m[k]) for k in EPOCH_METRICS if k in m}
            values = {k: v for k, v in values.items() if math.isfinite(v)}
            if not values:
                return
            try:
                client.log_batch(run_id, metrics=_metric_batch(values, trainer.current_epoch))
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

    from heimdall.export import OnnxLocalizer

    loc = OnnxLocalizer(model_path)
    r = loc.n_receivers
    f32 = np.dtype(np.float32)
    first = (
        TensorSpec(f32, (-1, r, 2, int(loc.n_samples or -1)), "iq")
        if loc.input_kind == "iq"
        else TensorSpec(f32, (-1, r, 4), "scalars")
    )
    return ModelSignature(
        inputs=Schema([first, TensorSpec(f32, (-1, r), "receiver_mask")]),
        outputs=Schema(
            [TensorSpec(f32, (-1, 2), "position_enu_m"), TensorSpec(f32, (-1, 2, 2), "covariance_enu_m2")]
        ),
    )


def _input_example(services: Services | None, model_path: Path, split: Mapping[str, list[str]]) -> Any:
    """One real test session as the model reads it (None when it cannot be built)."""
    if services is None or not split.get("test"):
        return None
    from heimdall.export import OnnxLocalizer
    from heimdall.predict import session_inputs

    try:
        loc = OnnxLocalizer(model_path)
        inputs = session_inputs(services, split["test"][0], loc)
    except Exception as exc:
        log.warning("no input example for the logged model: %s", redact_text(str(exc)))
        return None
    first = "iq" if loc.input_kind == "iq" else "scalars"
    return {first: inputs.inputs, "receiver_mask": inputs.receiver_mask}


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

    def log_result(self, result: TrainResult, services: Services | None = None) -> str:
        """Snapshot params, final metrics, run artifacts and the ONNX model; returns the model URI."""
        import mlflow
        import mlflow.onnx
        import onnx

        report = result.report
        out = Path(result.output_dir)
        self.log_params(snapshot_params(report))
        snap = report.get("data_snapshot", {})
        self.set_tags(
            {
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
        for name in RUN_ARTIFACTS:
            if (out / name).is_file():
                self.client.log_artifact(self.run_id, str(out / name))
        best = out / "checkpoints" / str(report.get("best_checkpoint", "best.ckpt"))
        if best.is_file():
            self.client.log_artifact(self.run_id, str(best), artifact_path="checkpoints")
        model_path = out / "model.onnx"
        split = json.loads((out / "split.json").read_text()) if (out / "split.json").is_file() else {}
        example = _input_example(services, model_path, split)
        info = mlflow.onnx.log_model(
            onnx.load_model(str(model_path)),
            name="model",
            signature=onnx_signature(model_path),
            input_example=example,
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,
            pip_requirements=["onnxruntime", "onnx", "numpy"],
            metadata={"heimdall_model_id": result.model_id},
        )
        self.model_uri = info.model_uri
        self.logged = {"metrics": metrics, "model_uri": info.model_uri}
        return info.model_uri


@contextmanager
def start_run(
    target: TrackingTarget,
    client: Any,
    config: TrainConfig,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[TrackedRun]:
    """Create the run (config as params, environment tags) and make it MLflow's active run.

    The run ends FINISHED when the block completes, FAILED when it raises (KILLED on Ctrl-C).
    """
    import mlflow

    exp_id = experiment_id(client, target)
    base_tags = {
        "mlflow.source.name": "heimdall train",
        "mlflow.source.type": "LOCAL",
        **environment_tags(),
        **(tags or {}),
    }
    try:
        run = client.create_run(exp_id, run_name=run_name, tags=base_tags)
    except Exception as exc:
        raise _fail(target, "cannot create a run", exc) from None
    tracked = TrackedRun(target, client, run.info.run_id, exp_id)
    status = "FAILED"
    active = None
    try:
        tracked.log_params({**flatten_params(config.resolved()), "seed": str(config.seed)})
        active = mlflow.start_run(run_id=tracked.run_id)
        yield tracked
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            if active is not None:
                mlflow.end_run(status=status)
            else:
                client.set_terminated(tracked.run_id, status=status)
        except Exception as exc:
            log.warning("could not mark MLflow run %s %s: %s", tracked.run_id, status, redact_text(str(exc)))


# --------------------------------------------------------------------------------------------------------
# Reading a run back (heimdall train --from-run)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """What reproduces a run: its resolved config file and its session ids per split."""

    run_id: str
    config_path: Path
    split: dict[str, list[str]]


def fetch_run_spec(target: TrackingTarget, client: Any, run_id: str, dst: Path) -> RunSpec:
    """Download ``config.yaml`` and ``split.json`` of ``run_id`` into ``dst``."""
    import mlflow

    try:
        client.get_run(run_id)
    except Exception as exc:
        raise TrackingError(
            f"no MLflow run {run_id!r} at {target.display}: {redact_text(str(exc)).splitlines()[0]}"
        ) from None
    dst.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in ("config.yaml", "split.json"):
        try:
            paths[name] = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=str(dst), tracking_uri=target.uri
                )
            )
        except Exception as exc:
            raise TrackingError(
                f"MLflow run {run_id} at {target.display} has no {name} artifact "
                f"(was it logged by `heimdall train`?): {redact_text(str(exc)).splitlines()[0]}"
            ) from None
    split = json.loads(paths["split.json"].read_text())
    if not isinstance(split, dict) or not all(isinstance(v, list) for v in split.values()):
        raise TrackingError(f"split.json of run {run_id} is not {{split: [session ids]}}")
    return RunSpec(run_id, paths["config.yaml"], {str(k): [str(x) for x in v] for k, v in split.items()})
