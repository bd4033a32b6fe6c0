"""`heimdall train` split flags: both spellings reach the request; bad values are one line, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from heimdall.cli import app

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, embedded_env: Path) -> list[Any]:
    """Replace the training job: record the request instead of training."""
    import heimdall.jobs.train as job

    seen: list[Any] = []

    def fake(request: Any, settings: Any, echo: Any = None) -> Any:
        seen.append(request)
        raise job.UserError("stopped by the test")

    monkeypatch.setattr(job, "train", fake)
    return seen


@pytest.mark.parametrize(
    "flags",
    [
        [
            "--split",
            "powder-grid",
            "--val-datasets",
            "v1,v2",
            "--test-datasets",
            "t",
            "--site-radius-m",
            "25",
        ],
        [
            "--split",
            "powder_grid",
            "--val_datasets",
            "v1, v2",
            "--test_datasets",
            "t",
            "--site_radius_m",
            "25",
        ],
    ],
)
def test_split_flags_reach_the_configuration(captured: list[Any], flags: list[str]) -> None:
    r = runner.invoke(app, ["train", "--no-tracking", *flags])
    assert r.exit_code == 2 and "stopped by the test" in r.output
    overrides = captured[0].overrides()
    assert overrides["split"] == "powder_grid"
    assert overrides["val_datasets"] == ["v1", "v2"] and overrides["test_datasets"] == ["t"]
    assert overrides["site_radius_m"] == 25.0


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--split", "powder-walk"], ["--split", "'powder-walk'", "powder-grid"]),
        (["--val-datasets", "a,,b"], ["--val-datasets", "'a,,b'"]),
        (["--test-datasets", ","], ["--test-datasets"]),
        (["--site-radius-m", "-3"], ["--site-radius-m", "-3"]),
    ],
)
def test_bad_split_flags_fail_cleanly(captured: list[Any], flags: list[str], names: list[str]) -> None:
    r = runner.invoke(app, ["train", "--no-tracking", *flags])
    assert r.exit_code == 2 and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    assert all(name in errors[0] for name in names), errors[0]
    assert not captured  # rejected before the job
