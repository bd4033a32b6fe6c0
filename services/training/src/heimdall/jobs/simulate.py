"""Simulate sessions (``heimdall simulate``) into the configured database and object store.

Batches of :data:`BATCH` sessions, each written atomically; a batch whose rows and objects are all in
place is skipped, one with anything missing is simulated again and repaired (idempotent re-runs).
The scenario's receivers are registered as stations first: one already stored as the same station is
used as it is, one whose id or name is another stored station's is a UserError (never mapped onto it).
The scenario itself is stored next (content-addressed; another content under a stored name is refused
before anything is simulated), and every session is written with its simulation truth.

With ``sites`` (``--sites FILE``, :mod:`heimdall.simulate.sites`) every session's transmitter stands at
one of the file's sites; the file is parsed, placed in the scenario's area and probed for sites no draw
can make heard before anything is written. Such sessions get their own ids and, by default, their own
dataset label ``sim:<scenario>:sites-<first 8 hex of the sites' hash>``, so a uniform training set never
takes them in silently; their notes name the site and the sites' hash.

With ``power_only`` (``--power-only``) the sessions are stored as an RSS network reports them: measurement
rows with power and SNR, no IQ objects (what ``heimdall import rss`` writes). They are the same draws as
the IQ run of that seed but their own sessions: ids ``uuid5(IQ session id, "power-only")`` and the label
``…:power``, so one store can hold both.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from pydantic import BaseModel

from heimdall.errors import UserError
from heimdall.ingest.simulated import session_record
from heimdall.services import Services, open_services
from heimdall.settings import Settings
from heimdall.simulate.scenario import Scenario, load_scenario
from heimdall.simulate.session import SimulatedSession, session_id_for, simulate_sessions
from heimdall.simulate.sites import Sites, load_sites
from heimdall.storage.queries import existing_session_ids
from heimdall.storage.recordings import SessionRecord, missing_objects, write_sessions
from heimdall.storage.scenarios import register_scenario, simulation_truth
from heimdall.storage.stations import NewStation, register_stations

BATCH = 64
POWER_ONLY = "power-only"  # uuid5 name deriving a power-only session's id from the IQ session's
MAX_WORKERS = 64

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
    workers: int = 1  # processes; sessions are seeded by index, so any count writes the same bytes
    sites: str | None = None  # a sites file (CSV or YAML): sessions only at those transmitter sites
    power_only: bool = False  # rows with power and SNR only, no IQ objects (an RSS network's sessions)


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
    dataset: str = ""  # the label of the sessions written
    sites: int | None = None  # how many fixed sites the run drew from (None: uniform over the area)

    @property
    def sessions_per_s(self) -> float:
        return self.sessions / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def simulate(
    request: SimulateRequest, settings: Settings, progress: SimulateProgress | None = None
) -> SimulateOutcome:
    """Simulate ``request.sessions`` sessions (atomic per batch, idempotent); arguments checked first."""
    if request.sessions < 0:
        raise UserError(f"--sessions must be ≥ 0, got {request.sessions}")
    if not 1 <= request.workers <= MAX_WORKERS:
        raise UserError(f"--workers must be 1..{MAX_WORKERS}, got {request.workers}")
    if request.dataset is not None and not request.dataset.strip():
        raise UserError("--dataset must be a non-empty label")
    scenario = request.scenario
    spec = load_scenario(Path(scenario) if scenario.endswith((".yaml", ".yml")) else scenario)
    n, seed, start, duration = request.sessions, request.seed, request.start, request.duration
    sites = None if request.sites is None else load_sites(request.sites)
    # validates the arguments before any I/O, sites included (outside the area, never heard)
    simulate_sessions(spec, n, seed, duration, start, sites)
    dataset = request.dataset or default_dataset(spec, sites, request.power_only)
    request = request.model_copy(update={"dataset": dataset})
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
        batches = [(first, min(BATCH, start + n - first)) for first in range(start, start + n, BATCH)]
        for w, k, count in _run_batches(spec, sites, request, settings, services, batches):
            written, skipped, done = written + w, skipped + k, done + count
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
        dataset=dataset,
        sites=None if sites is None else len(sites),
    )


def default_dataset(spec: Scenario, sites: Sites | None, power_only: bool = False) -> str:
    """``sim:<scenario>``, or ``sim:<scenario>:sites-<hash8>`` for a fixed-site run (kept apart);
    ``:power`` appended for a power-only run."""
    label = spec.dataset_label if sites is None else f"{spec.dataset_label}:sites-{sites.sha256[:8]}"
    return f"{label}:power" if power_only else label


def _power_only(record: SessionRecord) -> SessionRecord:
    """The session as an RSS network stores it: its receivers' power and SNR rows without IQ."""
    rows = tuple(dataclasses.replace(m, iq=None, iq_sample_rate=None) for m in record.measurements)
    return dataclasses.replace(record, measurements=rows)


def _session_id(spec: Scenario, seed: int, index: int, sites: Sites | None, power_only: bool) -> uuid.UUID:
    sid = session_id_for(spec, seed, index, sites)
    return uuid.uuid5(sid, POWER_ONLY) if power_only else sid


def _record(
    sim: SimulatedSession, spec: Scenario, sites: Sites | None, request: SimulateRequest
) -> SessionRecord:
    """The session's rows, IQ and truth; a fixed-site session's notes also name its site."""
    if request.power_only:  # its own session: ids of rows and source derive from the session id
        sim = dataclasses.replace(sim, session_id=uuid.uuid5(sim.session_id, POWER_ONLY))
    record = session_record(sim, spec.name, request.seed, request.dataset)
    if request.power_only:
        record = _power_only(record)
    if sites is not None and sim.site is not None:
        notes = {**json.loads(record.notes or "{}"), "site": sites.sites[sim.site].name}
        notes["sites_sha256"] = sites.sha256
        record = dataclasses.replace(record, notes=json.dumps(notes, sort_keys=True))
    return dataclasses.replace(record, truth=simulation_truth(sim, spec))


def _write_batch(
    spec: Scenario, sites: Sites | None, request: SimulateRequest, services: Services, first: int, count: int
) -> tuple[int, int]:
    """Simulate and write sessions ``first … first+count-1`` atomically; skip them if already complete."""
    seed = request.seed
    ids = [_session_id(spec, seed, k, sites, request.power_only) for k in range(first, first + count)]
    stored = existing_session_ids(services.db, ids)
    if len(stored) == count and not missing_objects(services.db, services.store, ids):
        return 0, count  # a re-run with every row and object in place: nothing to simulate
    records = [
        _record(s, spec, sites, request)
        for s in simulate_sessions(spec, count, seed, request.duration, first, sites)
    ]
    return write_sessions(services.db, services.store, services.settings.raw_iq_bucket, records)


def _run_batches(
    spec: Scenario,
    sites: Sites | None,
    request: SimulateRequest,
    settings: Settings,
    services: Services,
    batches: list[tuple[int, int]],
) -> Iterator[tuple[int, int, int]]:
    """(written, skipped, sessions) per batch: in this process, or spread over ``request.workers``
    processes (each with its own connections; batches are independent, so order does not matter)."""
    if request.workers == 1 or len(batches) <= 1:
        for first, count in batches:
            yield (*_write_batch(spec, sites, request, services, first, count), count)
        return
    ctx = multiprocessing.get_context("spawn")  # no inherited connections, threads or locks
    with ProcessPoolExecutor(
        max_workers=min(request.workers, len(batches)),
        mp_context=ctx,
        initializer=_worker_open,
        initargs=(settings, spec, sites, request),
    ) as pool:
        futures = {pool.submit(_worker_batch, first, count): count for first, count in batches}
        try:
            for future in as_completed(futures):
                yield (*future.result(), futures[future])
        except BaseException:
            for f in futures:
                f.cancel()
            raise


_WORKER: dict[str, object] = {}


def _worker_open(settings: Settings, spec: Scenario, sites: Sites | None, request: SimulateRequest) -> None:
    """A worker process's own services, opened once (closed when the process ends)."""
    _WORKER.update(services=open_services(settings), spec=spec, sites=sites, request=request)


def _worker_batch(first: int, count: int) -> tuple[int, int]:
    w = _WORKER
    return _write_batch(w["spec"], w["sites"], w["request"], w["services"], first, count)  # type: ignore[arg-type]
