"""Reading a training run back (``heimdall train --from-run RUN_ID``): its config and its exact split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heimdall.errors import DataError, UserError
from heimdall.settings import redact_text
from heimdall.tracking.artifacts import download_run_artifact
from heimdall.tracking.connection import TrackingError, TrackingTarget


@dataclass(frozen=True)
class RunSpec:
    """What reproduces a run: its resolved config file and its session ids per split."""

    run_id: str
    config_path: Path
    split: dict[str, list[str]]


class RunNotFoundError(UserError, LookupError):
    """``--from-run`` names no run on the MLflow server (the user's reference, not an outage)."""


def _is_missing(exc: Exception) -> bool:
    text = str(exc)
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or any(
        k in text for k in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "not found")
    )


def fetch_run_spec(target: TrackingTarget, client: Any, run_id: str, dst: Path) -> RunSpec:
    """Download ``config.yaml`` and ``split.json`` of ``run_id`` into ``dst``."""
    try:
        client.get_run(run_id)
    except Exception as exc:
        reason = (redact_text(str(exc)).splitlines() or [type(exc).__name__])[0]
        if _is_missing(exc):  # the user's --from-run names no run (connect() already reached the server)
            raise RunNotFoundError(f"no MLflow run {run_id!r} at {target.display}: {reason}") from None
        raise TrackingError(f"cannot look up MLflow run {run_id!r} at {target.display}: {reason}") from None
    dst.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in ("config.yaml", "split.json"):
        try:
            paths[name] = download_run_artifact(target, client, run_id, name, dst)
        except Exception as exc:
            raise TrackingError(
                f"MLflow run {run_id} at {target.display} has no {name} artifact "
                f"(was it logged by `heimdall train`?): {redact_text(str(exc)).splitlines()[0]}"
            ) from None
    try:
        split = json.loads(paths["split.json"].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:200]
        raise DataError(f"split.json of MLflow run {run_id} is not readable JSON: {reason}") from None
    if not isinstance(split, dict) or not all(isinstance(v, list) for v in split.values()):
        raise DataError(f"split.json of run {run_id} is not {{split: [session ids]}}")
    return RunSpec(run_id, paths["config.yaml"], {str(k): [str(x) for x in v] for k, v in split.items()})
