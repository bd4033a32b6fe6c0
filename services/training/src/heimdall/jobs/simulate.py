"""Simulate sessions (``heimdall simulate``) into the configured database and object store.

Batches of :data:`BATCH` sessions, each written atomically; a batch whose rows and objects are all in
place is skipped, one with anything missing is simulated again and repaired (idempotent re-runs).
The scenario's receivers are registered as stations first: one already stored as the same station is
used as it is, one whose id or name is another stored station's is a UserError (never mapped onto it).
The scenario itself is stored next (content-addressed; another content under a stored name is refused
before anything is simulated), and every session is written with its simulation truth.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from heimdall.errors import UserError
from heimdall.ingest.simulated import session_record
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import session_id_for, simulate_sessions
from heimdall.storage.queries import existing_session_ids
from heimdall.storage.recordings import missing_objects, write_sessions
from heimdall.storage.scenarios import register_scenario, simulation_truth
from heimdall.storage.stations import NewStation, register_stations

BATCH = 64

#: ``progress(scenario name, sessions done, sessions in all)``: once before the first batch, then per batch.
SimulateProgress = Callable[[str, int, int], None]


class SimulateRequest(BaseModel):
    """The options of ``heimdall simulate``."""

    scenario: str = "nw-italy-v1"  # a shipped scenario name or a scenario YAML path
    sessions: int = 300
    seed: int = 0
    duration: float | None = None
    start: int = 0
    dataset: str | None = None


class SimulateOutcome(BaseModel):
    """How many sessions were written and how many were already present, and where they went."""

    scenario: str
    sessions: int
    seed: int
    written: int
    skipped: int
    elapsed_s: float
    database: str  # URL, password masked
    object_store: str

    @property
    def sessions_per_s(self) -> float:
        return self.sessions / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def simulate(
    request: SimulateRequest, settings: Settings, progress: SimulateProgress | None = None
) -> SimulateOutcome:
    """Simulate ``request.sessions`` sessions (atomic per batch, idempotent); arguments checked first."""
    if request.sessions < 0:
        raise UserError(f"--sessions must be ≥ 0, got {request.sessions}")
    if request.dataset is not None and not request.dataset.strip():
        raise UserError("--dataset must be a non-empty label")
    scenario = request.scenario
    spec = load_scenario(Path(scenario) if scenario.endswith((".yaml", ".yml")) else scenario)
    n, seed, start, duration = request.sessions, request.seed, request.start, request.duration
    simulate_sessions(spec, n, seed, duration, start)  # validates the arguments before any I/O
    say = progress or (lambda _name, _done, _total: None)
    services = open_services(settings)
    written = skipped = done = 0
    t0 = time.perf_counter()
    try:
        # the scenario's receivers become stations (identical ones a no-op, clashing ones a UserError)
        register_stations(
            services.db,
            [NewStation(r.id, r.name, r.latitude, r.longitude, r.altitude_asl) for r in spec.receivers],
            [f"scenario {scenario}: receiver {r.id} ({r.name})" for r in spec.receivers],
        )
        register_scenario(services.db, spec)  # refuses another content under a stored name
        say(spec.name, 0, n)
        for first in range(start, start + n, BATCH):
            count = min(BATCH, start + n - first)
            ids = [session_id_for(spec, seed, k) for k in range(first, first + count)]
            stored = existing_session_ids(services.db, ids)
            if len(stored) == count and not missing_objects(services.db, services.store, ids):
                # a re-run with every row and object in place: nothing to simulate
                skipped += count
            else:
                batch = simulate_sessions(spec, count, seed, duration, first)
                records = [
                    dataclasses.replace(
                        session_record(s, spec.name, seed, request.dataset), truth=simulation_truth(s, spec)
                    )
                    for s in batch
                ]
                w, k = write_sessions(services.db, services.store, services.settings.raw_iq_bucket, records)
                written, skipped = written + w, skipped + k
            done += count
            say(spec.name, done, n)
    finally:
        services.close()
    return SimulateOutcome(
        scenario=spec.name,
        sessions=n,
        seed=seed,
        written=written,
        skipped=skipped,
        elapsed_s=time.perf_counter() - t0,
        database=services.db.safe_url,
        object_store=services.store.url,
    )
