"""Loading a model from MLflow: a registered (``models:/heimdall-localizer@champion``, ``…/VERSION``) or
logged (``models:/m-…``, ``runs:/…``, artifact URIs) model, downloaded into a local folder.

This is the MLflow half of :func:`heimdall.jobs.predict.resolve_model` (which handles local paths and
finds the ``model.onnx`` in what is downloaded here); it connects with the fail-fast preflight and passes the
tracking and registry URI to every download, so threads may load models from different stores at once.

MLflow resolves ``models:/…`` (and a ``runs:/RUN/NAME`` that names a logged model) through its
process-wide registry URI whatever URIs ``download_artifacts`` is given, so :func:`resolve_uri`
resolves them through the target's own client first and only the storage location is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heimdall.settings import Settings, redact_text
from heimdall.tracking.artifacts import download_run_artifact, relocate, repository, run_repository
from heimdall.tracking.connection import TrackingError, connect

#: Written beside a downloaded registered model, as MLflow's ``models:/`` download does.
REGISTERED_MODEL_META = "registered_model_meta"


class ModelFetchError(TrackingError):
    """The tracking store answers, but the model cannot be downloaded from it."""


@dataclass(frozen=True)
class ResolvedUri:
    """Where an MLflow model URI points: a storage location, a path inside it, the registered version."""

    root: str  # file://, s3://, mlflow-artifacts:/, http(s)://, or runs:/ for a plain run artifact
    path: str = ""
    registered: tuple[str, str] | None = None  # (name, version) for models:/NAME…
    resolved: bool = True  # False: ``uri`` needed no resolution and is downloaded as MLflow would
    into: str = ""  # sub-folder of the destination (runs:/RUN/NAME: the model's NAME, as MLflow does)

    @property
    def uri(self) -> str:
        return f"{self.root.rstrip('/')}/{self.path.strip('/')}" if self.path.strip("/") else self.root


def _first_line(exc: BaseException) -> str:
    text = redact_text(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_has_artifact(client: Any, run_id: str, path: str) -> bool:
    parent = path.rsplit("/", 1)[0] if "/" in path else None
    return any(a.path == path for a in client.list_artifacts(run_id, parent))


def _logged_model_of_run(client: Any, run_id: str, name: str) -> Any:
    run = client.get_run(run_id)
    token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", page_token=token
        )
        for model in page:
            if model.source_run_id == run_id:
                return model
        token = page.token
        if not token:
            return None


def resolve_uri(client: Any, uri: str) -> ResolvedUri:
    """Resolve ``uri`` through ``client`` (its tracking and registry URI), never MLflow's global one.

    ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/NAME/STAGE`` and ``models:/m-ID`` (each
    optionally followed by a path) become the version's download location or the logged model's
    location; ``runs:/RUN/NAME/…`` naming a logged model of the run (not a run artifact) becomes the
    model's location. Anything else (a run artifact, a storage URI) is returned as it is.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if ModelsArtifactRepository.is_models_uri(uri):
        base, path = ModelsArtifactRepository.split_models_uri(uri)
        found = get_model_name_and_version(client, base)
        if len(found) == 1:
            return ResolvedUri(str(client.get_logged_model(found[0]).artifact_location), path)
        name, version = str(found[0]), str(found[1])
        location = str(client.get_model_version_download_uri(name, version))
        if ModelsArtifactRepository.is_models_uri(location):  # e.g. a version whose source is models:/m-…
            inner = resolve_uri(client, location)
            location = inner.uri
        return ResolvedUri(location, path, (name, version))
    if RunsArtifactRepository.is_runs_uri(uri):
        run_id, path = RunsArtifactRepository.parse_runs_uri(uri)
        name, _, rest = (path or "").partition("/")
        if name and not _run_has_artifact(client, run_id, path):
            model = _logged_model_of_run(client, run_id, name)
            if model is not None:
                return ResolvedUri(str(model.artifact_location), rest, into=name)
    return ResolvedUri(uri, resolved=False)


def download_model(model_uri: str, settings: Settings, dst: Path) -> Path:
    """Download the MLflow model ``model_uri`` into ``dst``; the local path of what was downloaded.

    Local artifact locations are relocated below the current data folder when it has moved
    (:mod:`heimdall.tracking.artifacts`). TrackingError when the store cannot be reached (preflight),
    ModelFetchError (naming the model and the store, password masked) when the download fails.
    """
    import mlflow
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    target, client = connect(settings)
    try:
        where = resolve_uri(client, model_uri)
        if not where.resolved and RunsArtifactRepository.is_runs_uri(where.uri):  # a plain run artifact
            run_id, path = RunsArtifactRepository.parse_runs_uri(where.uri)
            local = run_repository(target, client, run_id).download_artifacts(path or "", dst_path=str(dst))
        elif not where.resolved:  # a storage URI: MLflow resolves it with our URIs
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=relocate(target, client, where.uri),
                dst_path=str(dst),
                tracking_uri=target.uri,
                registry_uri=target.uri,
            )
        else:  # the model's own folder, downloaded like MLflow's models:/ repository does
            into = dst / where.into if where.into else dst
            into.mkdir(parents=True, exist_ok=True)
            local = repository(target, client, where.root).download_artifacts(where.path, dst_path=str(into))
    except Exception as exc:
        raise ModelFetchError(
            f"cannot fetch model {model_uri} from MLflow at {target.display}: {_first_line(exc)}"
        ) from None
    local_path = Path(local)
    if where.registered is not None and (local_path / "MLmodel").is_file():
        import yaml

        name, version = where.registered
        (local_path / REGISTERED_MODEL_META).write_text(
            yaml.safe_dump({"model_name": name, "model_version": version}, sort_keys=False)
        )
    return local_path


def download_run_artifacts(settings: Settings, run_id: str, names: Iterable[str], dst: Path) -> list[Path]:
    """Download the artifacts ``names`` of run ``run_id`` (e.g. its split.json) into ``dst``, in order."""
    target, client = connect(settings)
    return [download_run_artifact(target, client, run_id, name, dst) for name in names]
