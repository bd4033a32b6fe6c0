"""heimdall.jobs.simulate: typed outcome, progress callback, idempotent re-run, and what the CLI prints."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.errors import UserError
from heimdall.jobs.simulate import SimulateRequest, simulate
from heimdall.services import open_services
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import simulate_sessions
from heimdall.storage.iq import load_iq
from heimdall.storage.queries import list_sessions


def test_outcome_and_progress(pipeline) -> None:
    out = pipeline.simulated
    assert (out.scenario, out.sessions, out.seed, out.written, out.skipped) == ("nw-italy-v1", 40, 11, 40, 0)
    assert out.elapsed_s > 0 and out.database.startswith("sqlite") and out.object_store
    assert pipeline.progress[0] == ("nw-italy-v1", 0, 40) and pipeline.progress[-1] == ("nw-italy-v1", 40, 40)
    done = [d for _, d, _ in pipeline.progress]
    assert done == sorted(done) and {(n, t) for n, _, t in pipeline.progress} == {("nw-italy-v1", 40)}


def test_the_store_holds_exactly_what_the_simulator_draws(pipeline) -> None:
    """Sessions 0-39 of seed 11, drawn here straight from the simulator, are what the job stored: ids,
    transmitter truth, every receiver's power and the IQ samples themselves (no batch lost, doubled or
    shifted, no seed ignored)."""
    drawn = {s.session_id: s for s in simulate_sessions(load_scenario("nw-italy-v1"), 40, 11, 0.1)}
    services = open_services(pipeline.settings)
    try:
        stored = list_sessions(services.db, ["sim:nw-italy-v1"])
        assert {s.id for s in stored} == set(drawn) and len(stored) == 40
        for s in stored:
            sim = drawn[s.id]
            assert (s.source.latitude, s.source.longitude) == (sim.latitude, sim.longitude)
            by_station = {r.station_id: r for r in sim.receivers}
            assert sorted(m.station_id for m in s.measurements) == sorted(by_station)
            for m in s.measurements:
                assert m.signal_strength_db == by_station[m.station_id].signal_strength_db
        first = next(s for s in stored if drawn[s.id].index == 0)
        for m in first.measurements:
            bucket, key = m.iq_bucket_key
            iq = load_iq(services.store, bucket, key, m.iq_samples_count)
            np.testing.assert_array_equal(
                iq, {r.station_id: r for r in drawn[first.id].receivers}[m.station_id].iq
            )
    finally:
        services.close()


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
