"""Where tracking goes and getting there fast: TrackingTarget, the preflight, ``connect``.

Three kinds of tracking URI work (``MLFLOW_TRACKING_URI``, default ``sqlite:///heimdall-data/mlflow.db``),
all read through :class:`heimdall.settings.Settings`:

* ``sqlite:///…`` — the embedded default; artifacts go under ``heimdall-data/mlartifacts``;
* ``postgresql://…`` — MLflow's SQLAlchemy store in-process (through psycopg 3); artifacts go where
  ``HEIMDALL_MLFLOW_ARTIFACT_ROOT`` says (e.g. ``s3://mlflow/artifacts`` with ``MLFLOW_S3_ENDPOINT_URL``
  or ``AWS_ENDPOINT_URL`` pointing at MinIO), else under ``heimdall-data/mlartifacts``;
* ``http(s)://…`` — a tracking server, which decides where artifacts go.

Every contact with a server has an explicit timeout and bounded retries, and every message names the
URI with its password masked. The MLflow run id is the model id (``report.json``,
``heimdall-models/{model_id}/model.onnx``).

Fail-fast bound, with T = ``HEIMDALL_CONNECT_TIMEOUT_S`` (default 3 s): against a silent (accepts, never
answers) or unreachable server every client gives up after at most 2 attempts of at most T each
(whole seconds, at least 2 s, where the client only takes whole seconds: libpq, MLflow's HTTP client),
with under 1 s of backoff, so the error surfaces within ``2 × max(2, ⌈T⌉) + 1`` seconds:

* the HTTP preflight: 2 GETs of ``/health`` with a T-second socket timeout, 0.5 s apart;
* MLflow's own HTTP client: ``MLFLOW_HTTP_REQUEST_TIMEOUT = ⌈T⌉``, one retry, no backoff (set by
  :func:`configure_mlflow_process`, which :func:`connect` calls, where the user has not set them);
* PostgreSQL (preflight and MLflow's engine): one attempt, ``connect_timeout = max(2, ⌈T⌉)``;
* the S3 artifact-root check: connect and read timeouts T, 2 attempts in total.

The process environment
-----------------------
This module is the one place below the CLI, besides :mod:`heimdall.settings`, that touches the process
environment, and only in :func:`configure_mlflow_process`: MLflow reads its HTTP timeouts and retries
(``MLFLOW_HTTP_REQUEST_*``) and its S3 artifact client reads its endpoint (``MLFLOW_S3_ENDPOINT_URL``)
and botocore's retry and checksum settings (``AWS_*``) from environment variables only, with no
argument to pass them. They are therefore set once for the process, never per call and never restored
or removed around a block (the old save/set/restore raced with other threads): every thread sees the
same values. A value the user exported always wins (and may loosen the fail-fast bound). The keys are
:data:`PROCESS_ENV_KEYS`; the only later change is to a key this module set itself, when a process opens
Settings that need another value (e.g. tests with a second S3 endpoint or another timeout).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from heimdall.errors import ServiceUnavailableError
from heimdall.settings import Settings, redact_text, redact_url

log = logging.getLogger("heimdall.tracking")

DEFAULT_EXPERIMENT = "heimdall"
# Defaults for MLflow's HTTP client (a user's own setting wins): fail in seconds, not minutes. The
# request timeout is ⌈HEIMDALL_CONNECT_TIMEOUT_S⌉ (see mlflow_process_env); one retry, which urllib3
# makes without backoff; AWS_* bound the attempts of MLflow's own S3 artifact client and, like
# Heimdall's own S3 clients (heimdall.storage.objectstore.s3_client_config), compute and check
# checksums only where S3 requires them (MinIO and other S3-compatible stores may reject the rest).
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "AWS_MAX_ATTEMPTS": "2",
    "AWS_RETRY_MODE": "standard",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED",
}
#: Every environment variable :func:`configure_mlflow_process` may set: the documented exception.
PROCESS_ENV_KEYS = ("MLFLOW_HTTP_REQUEST_TIMEOUT", *HTTP_ENV_DEFAULTS, "MLFLOW_S3_ENDPOINT_URL")

_process_lock = threading.Lock()
_set_by_us: dict[str, str] = {}  # the values configure_mlflow_process wrote, by key


def whole_seconds(timeout_s: float) -> int:
    """A timeout for clients that only take whole seconds (libpq, MLflow's HTTP client): ⌈T⌉, ≥ 2 s."""
    return max(2, math.ceil(timeout_s))


class TrackingError(ServiceUnavailableError):
    """MLflow cannot be used (unreachable, misconfigured, unknown run); the URI is shown without password."""


# --------------------------------------------------------------------------------------------------------
# Where tracking goes
# --------------------------------------------------------------------------------------------------------


def mlflow_store_uri(uri: str, connect_timeout_s: float | None = None) -> str:
    """The URI as MLflow's SQLAlchemy store needs it: ``postgresql://`` → ``postgresql+psycopg://``.

    The project ships psycopg 3, not psycopg2 (SQLAlchemy's default PostgreSQL driver). With
    ``connect_timeout_s``, a PostgreSQL URI without its own ``connect_timeout`` gets
    ``connect_timeout=max(2, ⌈T⌉)`` so MLflow's engine fails as fast as the preflight.
    """
    for prefix in ("postgres://", "postgresql://"):
        if uri.startswith(prefix):
            uri = "postgresql+psycopg://" + uri[len(prefix) :]
            break
    else:
        return uri
    parts = urlsplit(uri)
    if connect_timeout_s is not None and "connect_timeout=" not in parts.query:
        query = "&".join(q for q in (parts.query, f"connect_timeout={whole_seconds(connect_timeout_s)}") if q)
        uri = urlunsplit(parts._replace(query=query))
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
    s3_region: str = "us-east-1"

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingTarget:
        raw = settings.resolved_mlflow_uri
        kind = _kind(raw)
        root = settings.mlflow_artifact_root or None
        if root is None and kind in ("sqlite", "postgresql"):
            root = (settings.data_dir / "mlartifacts").resolve().as_uri()
        if root is not None and "://" not in root:
            root = Path(root).resolve().as_uri()
        return cls(
            uri=mlflow_store_uri(raw, settings.connect_timeout_s),
            display=redact_url(raw),
            kind=kind,
            experiment=settings.mlflow_experiment or DEFAULT_EXPERIMENT,
            artifact_root=root,
            s3_endpoint_url=settings.mlflow_s3_endpoint_url or settings.s3_endpoint_url or None,
            connect_timeout_s=settings.connect_timeout_s,
            s3_region=settings.aws_region or "us-east-1",
        )


# --------------------------------------------------------------------------------------------------------
# The one process-level setting: MLflow's environment-only client options
# --------------------------------------------------------------------------------------------------------


def mlflow_process_env(settings: Settings) -> dict[str, str | None]:
    """The variables :func:`configure_mlflow_process` wants for ``settings`` (None: not wanted)."""
    target = TrackingTarget.from_settings(settings)
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(whole_seconds(settings.connect_timeout_s)),
        **HTTP_ENV_DEFAULTS,
        "MLFLOW_S3_ENDPOINT_URL": target.s3_endpoint_url,
    }


def configure_mlflow_process(settings: Settings) -> None:
    """Give MLflow's environment-only options their Heimdall defaults, once per process (idempotent).

    The deliberate exception to "only Settings read the environment" (see the module docstring):
    MLflow and botocore read these options from ``os.environ`` only. A variable the user exported is
    never touched. A variable this function set earlier follows the settings of the latest call
    (updated, or dropped when no longer wanted), so a process that opens Settings with another
    endpoint or timeout gets it; values are otherwise constant, never restored around a block.
    """
    wanted = mlflow_process_env(settings)
    with _process_lock:
        for key, value in wanted.items():
            current, ours = os.environ.get(key), _set_by_us.get(key)
            if current is not None and current != ours:
                continue  # the user's own value wins
            if value is None:
                if current is not None:
                    del os.environ[key]
                _set_by_us.pop(key, None)
            else:
                if current != value:
                    os.environ[key] = value
                _set_by_us[key] = value


def fail(target: TrackingTarget, what: str, exc: BaseException | str) -> TrackingError:
    """A TrackingError naming the target (password masked) and the cause."""
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return TrackingError(
        f"MLflow tracking at {target.display} {what}: {redact_text(str(reason))}. "
        "Check MLFLOW_TRACKING_URI (or pass --no-tracking)"
    )


# --------------------------------------------------------------------------------------------------------
# Preflight: fail before any training starts
# --------------------------------------------------------------------------------------------------------


def _check_http(target: TrackingTarget, attempts: int = 2) -> None:
    """GET ``/health``: ``attempts`` tries with a T-second socket timeout, 0.5 s apart (≤ 2T + 0.5 s)."""
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
    raise fail(target, what, last or "no answer")


def _check_postgres(target: TrackingTarget) -> None:
    import psycopg

    conninfo = "postgresql://" + target.uri.split("://", 1)[1]
    try:
        with psycopg.connect(conninfo, connect_timeout=whole_seconds(target.connect_timeout_s)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise fail(target, "is unreachable", exc) from None


def _check_sqlite(target: TrackingTarget) -> None:
    path = target.uri.split("///", 1)[1] if "///" in target.uri else ""
    if path and path != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(target, "cannot create its folder", exc) from None


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
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from heimdall.storage.objectstore import s3_client_config

    bucket = parts.netloc
    where = f"MLflow artifact root {root} (endpoint {redact_url(target.s3_endpoint_url or 'AWS default')})"
    client = boto3.client(
        "s3",
        endpoint_url=target.s3_endpoint_url,
        config=s3_client_config(target.connect_timeout_s),
        region_name=target.s3_region,
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
    """An MlflowClient for tracking and registry at ``target`` (MLflow's global URI is left alone)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)


def connect(settings: Settings | None = None) -> tuple[TrackingTarget, Any]:
    """Resolve, configure MLflow's process options, preflight and open: (target, MlflowClient)."""
    settings = settings or Settings()
    target = TrackingTarget.from_settings(settings)
    configure_mlflow_process(settings)
    preflight(target)
    client = mlflow_client(target)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, requests errors, SQLAlchemy errors
        raise fail(target, "cannot be used", exc) from None
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
        raise fail(target, f"cannot open experiment {target.experiment!r}", exc) from None
