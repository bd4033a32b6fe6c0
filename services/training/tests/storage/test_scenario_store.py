"""Migration 0002 and the scenario/simulation-truth tables, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import func, insert, inspect, select, text, update

from heimdall.errors import DataError, UserError
from heimdall.ingest.simulated import session_record
from heimdall.simulate import load_scenario, simulate_sessions
from heimdall.storage import recordings
from heimdall.storage.database import _alembic_config, make_engine, open_database
from heimdall.storage.objectstore import FileObjectStore
from heimdall.storage.recordings import RecordingWriteError, write_sessions
from heimdall.storage.scenarios import (
    ScenarioConflictError,
    load_scenarios,
    read_simulation_truth,
    simulation_truth,
    store_scenario,
)
from heimdall.storage.schema import RecordingSession, SimulationTruth, StoredScenario

BUCKET = "raw"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/h.db"
    return request.getfixturevalue("postgres_url")


def _records(name: str = "nw-italy-v2", n: int = 3, seed: int = 1, scenario=None) -> list:
    sc = scenario or load_scenario(name)
    return [
        dataclasses.replace(session_record(s, sc.name, seed), truth=simulation_truth(s, sc))
        for s in simulate_sessions(sc, n, seed, 0.05)
    ]


def test_upgrade_from_0001_keeps_sessions_and_adds_the_tables(db_url: str) -> None:
    engine = make_engine(db_url)
    cfg = _alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            insert(RecordingSession).values(
                id=uuid.uuid4(),
                acquisition_task_id="old",
                dataset="old",
                session_start=datetime(2025, 1, 1, tzinfo=UTC),
                duration_seconds=1.0,
                approval_status="approved",
            )
        )
        conn.commit()
        assert not {"scenarios", "simulation_truth"} & set(inspect(conn).get_table_names())
    engine.dispose()
    db = open_database(db_url)  # migrates to head
    insp = inspect(db.engine)
    assert {"scenarios", "simulation_truth"} <= set(insp.get_table_names())
    assert insp.get_pk_constraint("scenarios")["constrained_columns"] == ["sha256"]
    assert insp.get_pk_constraint("simulation_truth")["constrained_columns"] == ["recording_session_id"]
    fks = {
        fk["referred_table"]: fk["constrained_columns"] for fk in insp.get_foreign_keys("simulation_truth")
    }
    assert fks == {"recording_sessions": ["recording_session_id"], "scenarios": ["scenario_sha256"]}
    cols = {c["name"]: c["nullable"] for c in insp.get_columns("simulation_truth")}
    assert cols == {
        "recording_session_id": False,
        "scenario_sha256": False,
        "speed_mps": True,
        "doppler_hz": False,
        "rician_k_db": False,
    }
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT acquisition_task_id FROM recording_sessions")).scalars().all() == [
            "old"
        ]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    db.dispose()


def test_store_scenario_is_idempotent_and_refuses_a_renamed_content(db_url: str) -> None:
    db = open_database(db_url)
    v2 = load_scenario("nw-italy-v2")
    other = v2.model_copy(update={"world_seed": v2.world_seed + 1})
    with db.engine.begin() as conn:
        assert store_scenario(conn, v2) == v2.content_sha256
        assert store_scenario(conn, v2) == v2.content_sha256
    with pytest.raises(ScenarioConflictError) as exc, db.engine.begin() as conn:
        store_scenario(conn, other)
    msg = str(exc.value)
    assert isinstance(exc.value, UserError) and "\n" not in msg
    assert msg.startswith("scenario 'nw-italy-v2' in this store has different content (sha ")
    assert msg.endswith("rename your scenario") and v2.content_sha256[:12] in msg
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(StoredScenario)) == 1
        loaded = load_scenarios(conn, [v2.content_sha256, "f" * 64, ""])
    assert loaded == {v2.content_sha256: v2}  # the parsed scenario comes back equal, unknown shas omitted
    db.dispose()


def test_altered_stored_content_is_a_data_error(tmp_path) -> None:
    db = open_database(f"sqlite:///{tmp_path}/h.db")
    v1 = load_scenario("nw-italy-v1")
    with db.engine.begin() as conn:
        store_scenario(conn, v1)
        altered = json.loads(v1.canonical_json()) | {"world_seed": 1}
        conn.execute(update(StoredScenario).values(content=json.dumps(altered)))
    with pytest.raises(DataError, match="does not match its hash"), db.engine.connect() as conn:
        load_scenarios(conn, [v1.content_sha256])
    db.dispose()


@pytest.mark.parametrize("name", ["nw-italy-v1", "nw-italy-v2"])
def test_sessions_are_written_with_their_truth(db_url: str, tmp_path, name: str) -> None:
    db = open_database(db_url)
    store = FileObjectStore(tmp_path / "objects")
    sc = load_scenario(name)
    sims = list(simulate_sessions(sc, 3, 1, 0.05))
    records = _records(name)
    assert write_sessions(db, store, BUCKET, records) == (3, 0)
    assert write_sessions(db, store, BUCKET, records) == (0, 3)  # idempotent
    with db.engine.connect() as conn:
        truth = read_simulation_truth(conn, [s.session_id for s in sims] + [uuid.uuid4()])
        assert conn.scalar(select(func.count()).select_from(SimulationTruth)) == 3
    assert set(truth) == {s.session_id for s in sims}
    for s in sims:
        t = truth[s.session_id]
        assert t.scenario_sha256 == sc.content_sha256 and t.doppler_hz == s.doppler_hz
        assert t.rician_k_db == {r.station_id: r.rician_k_db for r in s.receivers}
        if name == "nw-italy-v1":
            assert t.speed_mps is None
        else:
            assert t.speed_mps == s.speed_mps and t.doppler_hz == pytest.approx(
                s.speed_mps * s.frequency_hz / 299_792_458.0, rel=1e-12
            )
    db.dispose()


def test_truth_rows_share_the_sessions_transaction(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A truth row that cannot be inserted rolls back the sessions, the scenario and the objects."""
    db = open_database(f"sqlite:///{tmp_path}/h.db")
    store = FileObjectStore(tmp_path / "objects")
    real = recordings.truth_row
    monkeypatch.setattr(recordings, "truth_row", lambda sid, t: real(sid, t) | {"scenario_sha256": "0" * 64})
    with pytest.raises(RecordingWriteError, match="nothing kept"):
        write_sessions(db, store, BUCKET, _records())
    with db.engine.connect() as conn:
        for table in (RecordingSession, SimulationTruth, StoredScenario):
            assert conn.scalar(select(func.count()).select_from(table)) == 0
    assert store.list_keys(BUCKET, "sessions/") == []
    db.dispose()


def test_write_refuses_another_content_under_a_stored_name(tmp_path) -> None:
    db = open_database(f"sqlite:///{tmp_path}/h.db")
    store = FileObjectStore(tmp_path / "objects")
    v2 = load_scenario("nw-italy-v2")
    write_sessions(db, store, BUCKET, _records(n=1))
    edited = v2.model_copy(update={"description": "edited"})
    with pytest.raises(ScenarioConflictError, match="rename your scenario"):
        write_sessions(db, store, BUCKET, _records(n=2, seed=2, scenario=edited))
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RecordingSession)) == 1
    db.dispose()
