"""Shared simulator fixtures: the shipped scenario, its world and one batch of kept sessions."""

from __future__ import annotations

import pytest

from heimdall.simulate import Scenario, SimulatedSession, World, build_world, load_scenario, simulate_sessions

SEED = 11
N_SESSIONS = 240


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    return load_scenario("nw-italy-v1")


@pytest.fixture(scope="session")
def world(scenario: Scenario) -> World:
    return build_world(scenario)


@pytest.fixture(scope="session")
def sessions(scenario: Scenario, world: World) -> list[SimulatedSession]:
    return list(simulate_sessions(scenario, N_SESSIONS, SEED))
