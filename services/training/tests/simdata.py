"""A small simulated dataset on the embedded default, shared by the data and training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdall.ingest.simulated import session_record
from heimdall.services import Services, open_services
from heimdall.settings import Settings
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import simulate_sessions
from heimdall.storage.recordings import write_sessions


def simulate_into(services: Services, n: int, seed: int, duration: float = 0.1) -> list:
    scenario = load_scenario("nw-italy-v1")
    records = [session_record(s, scenario.name, seed) for s in simulate_sessions(scenario, n, seed, duration)]
    write_sessions(services.db, services.store, services.settings.raw_iq_bucket, records)
    return records


@pytest.fixture(scope="module")
def sim_services(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("sim") / "heimdall-data"
    services = open_services(Settings(data_dir=data_dir))
    simulate_into(services, 40, seed=11)
    yield services
    services.close()


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "feature-cache"
