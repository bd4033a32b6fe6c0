"""Importers' station rows: inserted beside concurrent writers, removed only when this import added them
and no measurement references them (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses

import pytest
from factories import make_session_record
from sqlalchemy import insert, select

from heimdall.storage.database import Database, open_database
from heimdall.storage.objectstore import FileObjectStore
from heimdall.storage.recordings import write_sessions
from heimdall.storage.schema import WebSDRStation
from heimdall.storage.stations import (
    NewStation,
    StationConflictError,
    ensure_stations,
    remove_unused_stations,
)

A = NewStation(100, "rx a", 46.5, 11.35, altitude_asl=300.0, frequency_min_hz=1e8, frequency_max_hz=2e8)
B = NewStation(101, "rx b", 46.6, 11.40)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path):
    url = (
        f"sqlite:///{tmp_path}/h.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    database = open_database(url)
    yield database
    database.dispose()


def _rows(db: Database) -> dict[int, WebSDRStation]:
    with db.sessions() as q:
        return {r.id: r for r in q.scalars(select(WebSDRStation))}


def test_inserts_once_and_shares_the_very_same_station(db: Database) -> None:
    assert ensure_stations(db, []) == []
    assert ensure_stations(db, [A, B]) == [100, 101]
    row = _rows(db)[100]
    assert (row.name, row.altitude_asl, row.frequency_max_hz, row.is_active) == ("rx a", 300.0, 2e8, True)
    assert ensure_stations(db, [A, B], same_position_m=1.0) == []  # a concurrent import's same rows


@pytest.mark.parametrize(
    "theirs",
    [
        {"id": 100, "name": "someone else", "latitude": 1.0, "longitude": 2.0},  # our id, another name
        {"id": 555, "name": "rx a", "latitude": 46.5, "longitude": 11.35},  # our name, another id
    ],
    ids=["id-taken", "name-taken"],
)
def test_a_clash_removes_what_this_call_inserted(db: Database, theirs: dict) -> None:
    with db.sessions.begin() as q:
        q.execute(insert(WebSDRStation), [theirs])
    with pytest.raises(StationConflictError, match="rx a"):
        ensure_stations(db, [B, A])
    rows = _rows(db)
    assert 101 not in rows and rows[theirs["id"]].name == theirs["name"]  # ours gone, theirs kept


def test_position_tolerance_is_optional(db: Database) -> None:
    ensure_stations(db, [A])
    moved = dataclasses.replace(A, latitude=A.latitude + 0.01)  # ~1.1 km away, same id and name
    assert ensure_stations(db, [moved]) == []
    with pytest.raises(StationConflictError):
        ensure_stations(db, [moved], same_position_m=1.0)
    assert 100 in _rows(db)  # not ours to remove: this call inserted nothing


def test_remove_unused_spares_referenced_stations(db: Database, tmp_path) -> None:
    inserted = ensure_stations(db, [A, B])
    write_sessions(
        db, FileObjectStore(tmp_path / "objects"), "heimdall-raw-iq", [make_session_record(0, (100,))]
    )
    remove_unused_stations(db, inserted)
    remove_unused_stations(db, [])
    rows = _rows(db)
    assert 100 in rows and 101 not in rows and len(rows) == 8  # the seeded seven + the used one
