"""Two real `heimdall simulate` processes into one store at once lose nothing (SQLite and PostgreSQL).

The seed's writer deleted the objects of a batch whose transaction lost the race, although the
winner had committed rows pointing at the same keys (same seed, same session ids, same keys).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from heimdall.storage.database import open_database
from heimdall.storage.objectstore import open_object_store
from heimdall.storage.schema import Measurement, RecordingSession, SimulationTruth, StoredScenario

SESSIONS = 192  # three 64-session batches per writer: enough for the writers to interleave
BUCKET = f"raw-iq-{uuid.uuid4().hex[:12]}"  # the moto server is shared by the whole test run


def _simulate(env: dict[str, str], start: int, sessions: int = SESSIONS) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("heimdall")), "simulate", "--seed", "5", "--no-progress"]
    cmd += ["--sessions", str(sessions), "--start", str(start)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_pair(env: dict[str, str], starts: tuple[int, int]) -> None:
    procs = [_simulate(env, s) for s in starts]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out


def _assert_consistent(db_url: str, store_url: str, endpoint: str | None, expected_sessions: int) -> None:
    db = open_database(db_url)
    store = open_object_store(store_url, endpoint)
    try:
        with db.sessions() as q:
            n_sessions = q.scalar(select(func.count()).select_from(RecordingSession))
            locations = set(q.scalars(select(Measurement.iq_data_location)))
            truth_ids = set(q.scalars(select(SimulationTruth.recording_session_id)))
            session_ids = set(q.scalars(select(RecordingSession.id)))
            n_scenarios = q.scalar(select(func.count()).select_from(StoredScenario))
    finally:
        db.dispose()
    assert n_sessions == expected_sessions
    assert truth_ids == session_ids and n_scenarios == 1  # every session's truth, the scenario once
    row_keys = {loc.partition("/")[2] for loc in locations if loc}
    object_keys = set(store.list_keys(BUCKET, "sessions/"))
    assert row_keys - object_keys == set(), "rows whose IQ object is missing"
    assert object_keys - row_keys == set(), "objects with no row"


def _env(extra: dict[str, str], data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEIMDALL_", "MLFLOW_"))}
    env.update({"HEIMDALL_DATA_DIR": str(data_dir), "HEIMDALL_RAW_IQ_BUCKET": BUCKET, "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("starts", [(0, 0), (0, 96)], ids=["same-sessions", "overlapping"])
def test_two_writers_sqlite_folder(tmp_path: Path, starts: tuple[int, int]) -> None:
    env = _env({}, tmp_path / "data")
    _run_pair(env, starts)
    db_url = f"sqlite:///{(tmp_path / 'data' / 'heimdall.db').as_posix()}"
    store_url = (tmp_path / "data" / "objects").resolve().as_uri()
    _assert_consistent(db_url, store_url, None, SESSIONS + abs(starts[1] - starts[0]))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.s3
def test_two_writers_postgres_s3(tmp_path: Path, postgres_url: str, s3_env: str) -> None:
    env = _env({"HEIMDALL_DATABASE_URL": postgres_url, "HEIMDALL_OBJECT_STORE": "s3://"}, tmp_path / "data")
    _run_pair(env, (0, 0))
    _assert_consistent(postgres_url, "s3://", s3_env, SESSIONS)


def test_rerun_repairs_missing_objects(tmp_path: Path) -> None:
    """Objects lost after a commit are rewritten by a re-run of the same command."""
    env = _env({}, tmp_path / "data")
    proc = _simulate(env, 0, sessions=8)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    objects = tmp_path / "data" / "objects" / BUCKET / "sessions"
    lost = sorted(objects.rglob("*.npy"))[:5]
    for path in lost:
        path.unlink()
    proc = _simulate(env, 0, sessions=8)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert all(p.is_file() for p in lost)
    assert "repaired 5 missing object" in out
    db_url = f"sqlite:///{(tmp_path / 'data' / 'heimdall.db').as_posix()}"
    _assert_consistent(db_url, (tmp_path / "data" / "objects").resolve().as_uri(), None, 8)
