"""Typed settings from the environment, with embedded defaults that need no servers.

Everything a deployment changes (database, object store, MLflow) comes from environment
variables so the same commands run on a laptop (SQLite + a local folder) and in production
(PostgreSQL + MinIO); credentials stay in the environment and are redacted wherever shown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("heimdall-data")


class Settings(BaseSettings):
    """Runtime configuration; field names map to `HEIMDALL_*` variables unless an alias says otherwise."""

    model_config = SettingsConfigDict(env_prefix="HEIMDALL_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=DEFAULT_DATA_DIR)
    database_url: str = Field(default="")
    object_store: str = Field(default="")
    raw_iq_bucket: str = Field(default="heimdall-raw-iq")
    models_bucket: str = Field(default="heimdall-models")
    mlflow_tracking_uri: str = Field(default="", validation_alias="MLFLOW_TRACKING_URI")
    s3_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_DEFAULT_REGION")
    # MLflow: experiment, artifact root of the embedded/PostgreSQL stores, and the S3 endpoint of
    # MLflow's own artifact client (defaults to AWS_ENDPOINT_URL, i.e. ``s3_endpoint_url``)
    mlflow_experiment: str = Field(default="heimdall")
    mlflow_artifact_root: str = Field(default="")
    mlflow_s3_endpoint_url: str | None = Field(default=None, validation_alias="MLFLOW_S3_ENDPOINT_URL")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    max_import_bytes: int = Field(default=2 * 1024**3, gt=0)  # per imported file, checked before reading
    # the training job service (heimdall serve / heimdall worker): the bearer token of /api/v1 (never
    # logged or returned), Celery's broker and result backend, the queue, and the lease after which a
    # running job whose worker stopped heartbeating is marked failed
    api_token: SecretStr | None = Field(default=None)
    broker_url: str = Field(default="amqp://guest:guest@127.0.0.1:5672//")
    result_backend: str = Field(default="redis://127.0.0.1:6379/0")
    local_only: bool = Field(default=False)
    job_queue: str = Field(default="heimdall-training", min_length=1, max_length=200)
    job_lease_s: float = Field(default=60.0, gt=0)
    job_heartbeat_s: float = Field(default=2.0, gt=0)
    # the scheduling niceness of a worker's training process: training is batch work, and on cores it
    # shares with the API the status reads must not queue behind it (0 = as the worker itself)
    job_nice: int = Field(default=10, ge=0, le=19)

    @field_validator("raw_iq_bucket", "models_bucket")
    @classmethod
    def _bucket_name(cls, v: str) -> str:
        if not v or "/" in v or ".." in v:
            raise ValueError(f"invalid bucket name {v!r}")
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'heimdall.db').as_posix()}"

    @property
    def resolved_object_store(self) -> str:
        return self.object_store or (self.data_dir / "objects").resolve().as_uri()

    @property
    def resolved_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').as_posix()}"


def redact_url(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@")


def redact_text(text: str) -> str:
    """Any `scheme://user:password@` inside free text (e.g. a library's error) with the password masked."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


#: environment variables naming a process's rank (Lightning's launcher, torchrun, the user per node)
RANK_VARIABLES = ("RANK", "GROUP_RANK", "NODE_RANK", "LOCAL_RANK")


def launcher_rank_environment() -> dict[str, str]:
    """The rank variables a distributed launcher set for this process (absent ones left out).

    Read here because settings is the one reader of the environment; the launcher, not the user's
    configuration, sets these, so they are not `Settings` fields.
    """
    return {name: os.environ[name] for name in RANK_VARIABLES if name in os.environ}
