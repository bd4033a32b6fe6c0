"""Seeded, physically grounded RF simulator (docs/SIMULATOR.md): pure computation, no storage.

`load_scenario` → `build_world` (fixed by the scenario) → `simulate_sessions(scenario, n, seed)`
yields `SimulatedSession`s with per-receiver IQ and measurement values; `MeasurementModel` and
`mean_received_power_dbm` expose the exact noiseless field and measurement model for the Bayes oracle.
"""

from heimdall.simulate.channel import awgn, complex_gaussian, rician_fading
from heimdall.simulate.propagation import (
    MeasurementModel,
    free_space_path_loss_db,
    link_distance_m,
    mean_received_power_dbm,
    measurement_model,
    path_loss_db,
    received_power_field_db,
)
from heimdall.simulate.scenario import Scenario, ScenarioError, available_scenarios, load_scenario
from heimdall.simulate.session import (
    Candidate,
    SimulatedReceiver,
    SimulatedSession,
    draw_candidates,
    session_id_for,
    simulate_sessions,
)
from heimdall.simulate.signals import CONTENTS, modulating_signal, nbfm
from heimdall.simulate.world import Area, World, build_world

__all__ = [
    "CONTENTS",
    "Area",
    "Candidate",
    "MeasurementModel",
    "Scenario",
    "ScenarioError",
    "SimulatedReceiver",
    "SimulatedSession",
    "World",
    "available_scenarios",
    "awgn",
    "build_world",
    "complex_gaussian",
    "draw_candidates",
    "free_space_path_loss_db",
    "link_distance_m",
    "load_scenario",
    "mean_received_power_dbm",
    "measurement_model",
    "modulating_signal",
    "nbfm",
    "path_loss_db",
    "received_power_field_db",
    "rician_fading",
    "session_id_for",
    "simulate_sessions",
]
