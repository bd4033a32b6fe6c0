"""One small pipeline through the jobs, shared by the tests of this folder: simulate → train → evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from heimdall.jobs.evaluate import EvaluateOutcome, EvaluateRequest, evaluate
from heimdall.jobs.simulate import SimulateOutcome, SimulateRequest, simulate
from heimdall.jobs.train import TrainOutcome, TrainRequest, train
from heimdall.settings import Settings


@dataclass
class Pipeline:
    settings: Settings
    root: Path
    simulated: SimulateOutcome
    progress: list[tuple[str, int, int]]
    trained: TrainOutcome
    evaluated: EvaluateOutcome


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("jobs")
    settings = Settings(data_dir=root / "heimdall-data")
    seen: list[tuple[str, int, int]] = []
    simulated = simulate(
        SimulateRequest(sessions=40, seed=11, duration=0.1), settings, progress=lambda *a: seen.append(a)
    )
    trained = train(
        TrainRequest(
            epochs=2,
            batch_size=16,
            seed=5,
            output_dir=root / "model",
            tracking=False,
            progress=False,
            # the network: these tests exercise its band input; the radio map has its own job tests
            localizer="network",
        ),
        settings,
    )
    evaluated = evaluate(
        EvaluateRequest(
            model=str(root / "model"), output_dir=root / "evaluation", outage=False, oracle=False
        ),
        settings,
    )
    return Pipeline(settings, root, simulated, seen, trained, evaluated)


@pytest.fixture
def cli_env(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """The CLI pointed at the pipeline's embedded database and store."""
    for var in ("HEIMDALL_DATABASE_URL", "HEIMDALL_OBJECT_STORE", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(pipeline.settings.data_dir))
    return pipeline
