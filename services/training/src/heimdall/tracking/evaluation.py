"""Attaching an evaluation (``heimdall evaluate``) to the MLflow run that trained the model.

The run then holds, next to its training record, what the held-out comparison found: the files under
``evaluation/<split>/`` (evaluation.json, evaluation.md and the plots) and the headline figures as
metrics named ``eval_<split>_<method>_<figure>`` (e.g. ``eval_test_model_rmse_m``,
``eval_test_weighted_centroid_median_error_m``). MLflow accepts metrics and artifacts on a finished run;
evaluating again replaces the files and adds a newer value to each metric's history (step 0), which is
the one MLflow shows. Artifact writes are relocated like every other (:mod:`heimdall.tracking.artifacts`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heimdall.settings import redact_text
from heimdall.tracking.artifacts import run_repository
from heimdall.tracking.connection import TrackingError, TrackingTarget

#: Per-method figures logged as metrics (where the method has them: coverage only with covariances).
METHOD_FIGURES = (
    "rmse_m",
    "median_error_m",
    "mean_error_m",
    "p68_error_m",
    "p90_error_m",
    "p95_error_m",
    "coverage_1sigma",
    "coverage_2sigma",
    "coverage_95",
    "nll",
    "mean_ellipse_area_km2",
)
EVALUATION_FILES = ("evaluation.json", "evaluation.md")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class AttachedEvaluation:
    """What was attached to which run."""

    run_id: str
    artifact_path: str  # evaluation/<split>
    artifacts: tuple[str, ...]  # file names uploaded there
    metrics: dict[str, float]


def metric_name(*parts: str) -> str:
    """``eval_<parts…>`` with anything MLflow would refuse in a metric name replaced by ``_``."""
    return "_".join(["eval", *(_UNSAFE.sub("_", p).strip("_") or "_" for p in parts)])


def evaluation_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures of an evaluation.json as MLflow metrics (finite numbers only)."""
    split = str(report.get("split", "test"))
    out: dict[str, float] = {}
    n = report.get("n_sessions")
    if isinstance(n, int | float) and not isinstance(n, bool):
        out[metric_name(split, "n_sessions")] = float(n)
    for method, figures in (report.get("methods") or {}).items():
        for key in METHOD_FIGURES:
            value = figures.get(key) if isinstance(figures, Mapping) else None
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            out[metric_name(split, str(method), key)] = float(value)
    return out


def evaluation_artifacts(out_dir: Path, report: Mapping[str, Any]) -> list[Path]:
    """evaluation.json, evaluation.md, the plots the report lists and any other PNG beside them."""
    names = [*EVALUATION_FILES, *[str(p) for p in report.get("plots") or []]]
    names += sorted(p.name for p in out_dir.glob("*.png"))
    seen: list[Path] = []
    for name in names:
        path = out_dir / name
        if path.is_file() and path not in seen:
            seen.append(path)
    return seen


def attach_evaluation(
    target: TrackingTarget, client: Any, run_id: str, out_dir: Path, report: Mapping[str, Any]
) -> AttachedEvaluation:
    """Upload the evaluation files of ``out_dir`` and log its metrics to run ``run_id``.

    TrackingError (one line, the store named) when the run cannot take them.
    """
    from mlflow.entities import Metric, RunTag

    split = _UNSAFE.sub("_", str(report.get("split", "test"))) or "test"
    artifact_path = f"evaluation/{split}"
    metrics = evaluation_metrics(report)
    files = evaluation_artifacts(out_dir, report)
    try:
        repo = run_repository(target, client, run_id)
        for path in files:
            repo.log_artifact(str(path), artifact_path)
        ts = int(time.time() * 1000)
        batch = [Metric(k, v, ts, 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow's per-batch metric limit
            client.log_batch(run_id, metrics=batch[i : i + 1000])
        client.log_batch(
            run_id,
            tags=[RunTag(f"heimdall.evaluated.{split}", time.strftime("%Y-%m-%dT%H:%M:%S%z"))],
        )
    except Exception as exc:  # MlflowException, OSError of a local root, botocore errors
        reason = " ".join(redact_text(f"{type(exc).__name__}: {exc}").split())[:300]
        raise TrackingError(
            f"MLflow tracking at {target.display}: cannot attach the evaluation to run {run_id}: {reason}"
        ) from None
    return AttachedEvaluation(run_id, artifact_path, tuple(p.name for p in files), metrics)
