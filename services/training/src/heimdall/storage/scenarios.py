"""Scenarios and simulation truth in the store: the provenance of simulated sessions.

A simulated session's rows say what a receiver measured; the Bayes oracle also needs what the simulator
drew and no row shows (each receiver's Rician K, the session's Doppler, the scenario's physics). Both are
stored with the sessions, in the same transaction (:func:`heimdall.storage.recordings.write_sessions`):

* ``scenarios``: content-addressed by :attr:`Scenario.content_sha256`; the content is the canonical
  JSON, so evaluation works from any working directory and on a user's own scenario file. A name has one
  content per store: session ids derive from the scenario's *name*, seed and index, so a second content
  under the same name would mix two physics under the same ids (refused: :class:`ScenarioConflictError`).
* ``simulation_truth``: one row per simulated session.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import Connection, Insert, select
from sqlalchemy.dialects import postgresql, sqlite

from heimdall.errors import DataError, UserError
from heimdall.simulate.scenario import Scenario
from heimdall.simulate.session import SimulatedSession
from heimdall.storage.database import SQLITE_WRITE_WAIT_MS, Database
from heimdall.storage.schema import SimulationTruth, StoredScenario

_CHUNK = 5000  # ids per IN (…) query: under every backend's bound-parameter limit


class ScenarioConflictError(UserError):
    """A scenario of the same name but another content is already stored."""


@dataclass(frozen=True)
class SimulationTruthRecord:
    """What the simulator drew for one session, to be written with it (``SessionRecord.truth``)."""

    scenario: Scenario
    speed_mps: float | None  # None where the scenario draws the Doppler itself (v1)
    doppler_hz: float
    rician_k_db: Mapping[int, float]  # station id → K (dB)


@dataclass(frozen=True)
class StoredTruth:
    """A ``simulation_truth`` row read back."""

    scenario_sha256: str
    speed_mps: float | None
    doppler_hz: float
    rician_k_db: dict[int, float]


def simulation_truth(sim: SimulatedSession, scenario: Scenario) -> SimulationTruthRecord:
    """The truth record of a simulated session of `scenario`."""
    return SimulationTruthRecord(
        scenario=scenario,
        speed_mps=sim.speed_mps,
        doppler_hz=float(sim.doppler_hz),
        rician_k_db={r.station_id: float(r.rician_k_db) for r in sim.receivers},
    )


def _insert_ignoring_conflicts(conn: Connection, table: type) -> Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise DataError(f"conflict-tolerant inserts are not supported on the {dialect!r} database dialect")


def check_scenario_name(conn: Connection, scenario: Scenario) -> None:
    """Refuse (one line) when the store holds another content under `scenario.name`."""
    stored = conn.scalar(select(StoredScenario.sha256).where(StoredScenario.name == scenario.name))
    if stored is not None and stored != scenario.content_sha256:
        raise ScenarioConflictError(
            f"scenario '{scenario.name}' in this store has different content (sha {stored[:12]}…, "
            f"yours {scenario.content_sha256[:12]}…); rename your scenario"
        )


def store_scenario(conn: Connection, scenario: Scenario) -> str:
    """Store `scenario` unless present (idempotent, safe with concurrent writers); returns its sha256.

    The insert skips any unique clash (same sha: already there; same name: checked right after), so two
    writers of the same scenario both succeed and two of different contents under one name cannot both.
    Runs in the caller's transaction; the caller commits.
    """
    sha = scenario.content_sha256
    row = {
        "sha256": sha,
        "name": scenario.name,
        "content": scenario.canonical_json(),
        "created_at": datetime.now(UTC),
    }
    conn.execute(_insert_ignoring_conflicts(conn, StoredScenario), [row])
    check_scenario_name(conn, scenario)
    return sha


def register_scenario(db: Database, scenario: Scenario) -> str:
    """:func:`store_scenario` in its own transaction (waiting for a concurrent SQLite writer's lock)."""
    with db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_WRITE_WAIT_MS}")
            conn.commit()
        with conn.begin():
            return store_scenario(conn, scenario)


def _parse(sha: str, content: str) -> Scenario:
    try:
        scenario = Scenario.model_validate(json.loads(content))
    except (ValueError, ValidationError) as exc:
        raise DataError(f"stored scenario {sha[:12]}… cannot be read: {type(exc).__name__}") from None
    if scenario.content_sha256 != sha:
        raise DataError(f"stored scenario {sha[:12]}… does not match its hash (content altered)")
    return scenario


def load_scenarios(conn: Connection, shas: Iterable[str]) -> dict[str, Scenario]:
    """Stored scenarios of `shas` (sha → parsed Scenario, checked against its hash); absent ones omitted."""
    wanted = sorted({s for s in shas if s})
    out: dict[str, Scenario] = {}
    for k in range(0, len(wanted), _CHUNK):
        rows = conn.execute(
            select(StoredScenario.sha256, StoredScenario.content).where(
                StoredScenario.sha256.in_(wanted[k : k + _CHUNK])
            )
        )
        for sha, content in rows:
            out[sha] = _parse(sha, content)
    return out


def truth_row(session_id: uuid.UUID, truth: SimulationTruthRecord) -> dict[str, object]:
    """Column values of one ``simulation_truth`` row."""
    return {
        "recording_session_id": session_id,
        "scenario_sha256": truth.scenario.content_sha256,
        "speed_mps": truth.speed_mps,
        "doppler_hz": truth.doppler_hz,
        "rician_k_db": json.dumps({str(k): float(v) for k, v in sorted(truth.rician_k_db.items())}),
    }


def read_simulation_truth(conn: Connection, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredTruth]:
    """The truth rows of `session_ids` (sessions that were not simulated are omitted)."""
    ids = list(session_ids)
    out: dict[uuid.UUID, StoredTruth] = {}
    t = SimulationTruth
    for k in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            select(t.recording_session_id, t.scenario_sha256, t.speed_mps, t.doppler_hz, t.rician_k_db).where(
                t.recording_session_id.in_(ids[k : k + _CHUNK])
            )
        )
        for sid, sha, speed, doppler, k_json in rows:
            out[sid] = StoredTruth(
                scenario_sha256=sha,
                speed_mps=speed,
                doppler_hz=doppler,
                rician_k_db={int(st): float(v) for st, v in json.loads(k_json).items()},
            )
    return out
