"""heimdall.jobs.simulate: typed outcome, progress callback, idempotent re-run, and what the CLI prints."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.errors import UserError
from heimdall.jobs.simulate import SimulateRequest, simulate


def test_outcome_and_progress(pipeline) -> None:
    out = pipeline.simulated
    assert (out.scenario, out.sessions, out.seed, out.written, out.skipped) == ("nw-italy-v1", 40, 11, 40, 0)
    assert out.elapsed_s > 0 and out.database.startswith("sqlite") and out.object_store
    assert pipeline.progress[0] == ("nw-italy-v1", 0, 40) and pipeline.progress[-1] == ("nw-italy-v1", 40, 40)


def test_rerun_skips_and_the_cli_prints_the_outcome(cli_env) -> None:
    again = simulate(SimulateRequest(sessions=40, seed=11, duration=0.1), cli_env.settings)
    assert (again.written, again.skipped) == (0, 40)
    r = CliRunner().invoke(
        app, ["simulate", "--sessions", "40", "--seed", "11", "--duration", "0.1", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert (
        "simulated 40 sessions of nw-italy-v1 (seed 11): 0 written, 40 already present, " in r.output
        and f"into {again.database} + {again.object_store}" in r.output
    )


def test_bad_request_is_refused_before_any_io(tmp_path) -> None:
    from heimdall.settings import Settings

    settings = Settings(data_dir=tmp_path / "hd")
    with pytest.raises(UserError, match="--sessions must be"):
        simulate(SimulateRequest(sessions=-1), settings)
    with pytest.raises(UserError, match="non-empty"):
        simulate(SimulateRequest(sessions=1, dataset=" "), settings)
    assert not (tmp_path / "hd").exists()
