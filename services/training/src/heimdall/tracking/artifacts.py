"""Artifact locations that survive a move of the data folder.

MLflow's SQL stores record every artifact location as an absolute URI: the experiment's root
(``file:///…/heimdall-data/mlartifacts`` on the embedded default), each run's ``artifact_uri`` and each
logged model's and model version's location below it. Moving or renaming ``heimdall-data/`` therefore
leaves the database pointing at a folder that no longer exists, and every ``models:/…`` download
fails. The database rows are MLflow's, so they are not rewritten; instead every artifact read and
write of Heimdall goes through :func:`relocate`: a ``file://`` location below a recorded experiment
root that no longer exists is mapped to the same relative place below the current artifact root
(:attr:`TrackingTarget.artifact_root`, i.e. ``<data dir>/mlartifacts``). A recorded root that still
exists is used as recorded (a copied data folder reads the original's artifacts until it is moved),
and remote locations (``s3://``, ``mlflow-artifacts:/``) are never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from heimdall.tracking.connection import TrackingTarget


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI or an absolute path; None for anything remote."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if parts.scheme == "" and Path(uri).is_absolute():
        return Path(uri)
    return None


def recorded_roots(client: Any) -> list[Path]:
    """The local artifact roots of every experiment (deleted ones too) of the store, longest first."""
    from mlflow.entities import ViewType

    roots: set[Path] = set()
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, page_token=token)
        for exp in page:
            path = local_path(str(exp.artifact_location or ""))
            if path is not None:
                roots.add(path)
        token = getattr(page, "token", None)
        if not token:
            break
    return sorted(roots, key=lambda p: len(p.parts), reverse=True)


def relocate(target: TrackingTarget, client: Any, uri: str, roots: list[Path] | None = None) -> str:
    """``uri``, or its place below the current artifact root when its recorded root has moved away.

    ``roots`` are the recorded experiment roots (:func:`recorded_roots`; looked up when not given).
    """
    current = local_path(target.artifact_root or "")
    path = local_path(uri)
    if current is None or path is None:
        return uri
    for root in recorded_roots(client) if roots is None else roots:
        if root == current or not path.is_relative_to(root):
            continue
        if root.exists():
            return uri
        return (current / path.relative_to(root)).as_uri()
    return uri


def repository(target: TrackingTarget, client: Any, uri: str) -> Any:
    """MLflow's artifact repository for the (relocated) ``uri``, with the target's URIs."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    where = relocate(target, client, uri)
    return get_artifact_repository(where, tracking_uri=target.uri, registry_uri=target.uri)


def run_repository(target: TrackingTarget, client: Any, run_id: str) -> Any:
    """The artifact repository of run ``run_id`` (relocated as :func:`relocate` says)."""
    return repository(target, client, str(client.get_run(run_id).info.artifact_uri))


def log_run_artifact(
    target: TrackingTarget, client: Any, run_id: str, local: Path, artifact_path: str | None = None
) -> None:
    """Upload one local file into run ``run_id``'s artifacts (at ``artifact_path``, a folder)."""
    run_repository(target, client, run_id).log_artifact(str(local), artifact_path)


def download_run_artifact(target: TrackingTarget, client: Any, run_id: str, name: str, dst: Path) -> Path:
    """Download the artifact ``name`` of run ``run_id`` into ``dst``; its local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(run_repository(target, client, run_id).download_artifacts(name, dst_path=str(dst)))
