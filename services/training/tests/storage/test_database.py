"""Schema, migrations and station seeding on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, inspect, select, text

from heimdall.stations import NW_ITALY_STATIONS
from heimdall.storage.database import DatabaseError, open_database, upgrade_schema
from heimdall.storage.schema import WebSDRStation


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/h.db"
    return request.getfixturevalue("postgres_url")


def test_schema_and_seeded_network(db_url: str) -> None:
    db = open_database(db_url)
    insp = inspect(db.engine)
    assert {"websdr_stations", "known_sources", "recording_sessions", "measurements"} <= set(
        insp.get_table_names()
    )
    assert insp.get_pk_constraint("measurements")["constrained_columns"] == ["timestamp", "id"]
    cols = {c["name"]: c for c in insp.get_columns("measurements")}
    for nullable in ("iq_data_location", "receiver_latitude", "receiver_longitude", "receiver_altitude"):
        assert cols[nullable]["nullable"]
    assert "dataset" in {c["name"] for c in insp.get_columns("recording_sessions")}
    assert any(ix["column_names"] == ["timestamp"] for ix in insp.get_indexes("measurements"))
    with db.sessions() as s:
        rows = {r.id: r for r in s.scalars(select(WebSDRStation))}
    assert len(rows) == 7
    for st in NW_ITALY_STATIONS:
        assert (rows[st.id].name, rows[st.id].latitude, rows[st.id].longitude) == (
            st.name,
            st.latitude,
            st.longitude,
        )
        assert rows[st.id].altitude_asl == st.altitude_asl
    db.dispose()


def test_migrations_and_seeding_are_idempotent(db_url: str) -> None:
    db = open_database(db_url)
    db.dispose()
    db = open_database(db_url)
    assert upgrade_schema(db.engine) == "0003"
    with db.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM websdr_stations")).scalar() == 7
    db.dispose()


def test_approval_status_is_constrained(db_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    from heimdall.storage.schema import RecordingSession

    db = open_database(db_url)
    with pytest.raises(IntegrityError), db.sessions.begin() as s:
        s.add(
            RecordingSession(
                id=__import__("uuid").uuid4(),
                acquisition_task_id="t",
                dataset="x",
                session_start=datetime.now(UTC),
                duration_seconds=1.0,
                approval_status="maybe",
            )
        )
    db.dispose()


def test_timescale_absence_is_logged_once(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Said once; on SQLite (where it is expected) at DEBUG, not as a warning (PostgreSQL keeps WARNING)."""
    url = f"sqlite:///{tmp_path}/log.db"
    with caplog.at_level("DEBUG", logger="heimdall.storage"):
        open_database(url).dispose()
        open_database(url).dispose()
    said = [r for r in caplog.records if "TimescaleDB" in r.getMessage()]
    assert len(said) == 1 and "plain table with a time index" in said[0].getMessage()
    assert said[0].levelname == "DEBUG"


def test_unreachable_database_fails_fast_without_password() -> None:
    start = time.monotonic()
    with pytest.raises(DatabaseError) as err:
        open_database("postgresql://heimdall:s3cr3t-pw@127.0.0.1:1/heimdall", connect_timeout_s=2)
    assert time.monotonic() - start < 10
    assert "127.0.0.1:1" in str(err.value) and "s3cr3t-pw" not in str(err.value)
    assert "***" in str(err.value)


def test_silent_database_server_times_out(silent_tcp_server: int) -> None:
    start = time.monotonic()
    with pytest.raises(DatabaseError) as err:
        open_database(f"postgresql://u:hunter2@127.0.0.1:{silent_tcp_server}/db", connect_timeout_s=2)
    assert time.monotonic() - start < 10
    assert "hunter2" not in str(err.value)


def test_unsupported_database_url() -> None:
    with pytest.raises(DatabaseError, match="unsupported database URL"):
        open_database("mysql://root:pw@localhost/x")


def test_concurrent_first_opens_migrate_once(db_url: str) -> None:
    """Several writers opening a fresh database at once: one migrates and seeds, the others wait."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    url = db_url
    barrier = threading.Barrier(4)

    def first_open() -> int:
        barrier.wait()
        db = open_database(url)
        try:
            with db.sessions() as s:
                return s.scalar(select(func.count()).select_from(WebSDRStation))
        finally:
            db.dispose()

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: first_open(), range(4)))
    assert counts == [len(NW_ITALY_STATIONS)] * 4


def _hold_exclusive_lock(path, seconds: float):
    """A plain sqlite3 connection that holds the file's exclusive lock (rollback journal) for a while."""
    import sqlite3
    import threading

    holder = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(seconds, lambda: (holder.execute("COMMIT"), holder.close()))
    timer.start()
    return timer


def test_first_open_waits_out_a_busy_file(tmp_path) -> None:
    """SQLITE_BUSY past the busy timeout (another opener converting or cleaning up the file) is retried."""
    path = tmp_path / "h.db"
    timer = _hold_exclusive_lock(path, 0.6)
    started = time.monotonic()
    db = open_database(f"sqlite:///{path}", connect_timeout_s=0.05)
    waited = time.monotonic() - started
    timer.join()
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(WebSDRStation)) == len(NW_ITALY_STATIONS)
    db.dispose()
    assert waited >= 0.5


def test_a_file_locked_for_good_fails_with_its_name(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import heimdall.storage.database as database

    monkeypatch.setattr(database, "SQLITE_MIGRATION_WAIT_MS", 300)
    path = tmp_path / "h.db"
    timer = _hold_exclusive_lock(path, 3.0)
    with pytest.raises(DatabaseError, match=r"cannot use database sqlite:///.*h\.db: database is locked"):
        open_database(f"sqlite:///{path}", connect_timeout_s=0.05)
    timer.join()
