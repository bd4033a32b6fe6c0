"""Station rows written by importers: inserted safely beside concurrent writers, removed only if unused.

An importer that meets a receiver the table does not know chooses an id and a name for it and calls
:func:`ensure_stations`. Concurrent importers may choose the same id or name: the very same station
(same id, name and position) is shared, a different one is a :class:`StationConflictError` (after this
call's own rows are removed again) and the importer resolves its receivers again against the table.
:func:`remove_unused_stations` is the clean-up after a failed import: it deletes only the rows that import
inserted and that no measurement (anyone's) references.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import SQLAlchemyError

from heimdall.errors import DataError, UserError
from heimdall.geo import haversine_m
from heimdall.storage.database import Database, insert_ignoring_conflicts
from heimdall.storage.schema import Measurement, WebSDRStation

__all__ = [
    "CHOOSE_ID",
    "NewStation",
    "Registered",
    "StationConflictError",
    "StationMismatchError",
    "StoredStation",
    "ensure_stations",
    "insert_ignoring_conflicts",
    "list_stations",
    "register_stations",
    "remove_unused_stations",
]

#: A :class:`NewStation` id meaning "the next free id" (:func:`register_stations`); real ids are ≥ 1.
CHOOSE_ID = 0
#: Stations closer than this (horizontally, and in altitude) are at the same position.
SAME_POSITION_M = 1.0

log = logging.getLogger("heimdall.storage.stations")


class StationConflictError(DataError):
    """A concurrent writer took a chosen station id or name for another station; none of ours is left."""


class StationMismatchError(UserError):
    """A station to register has the id or name of a stored station that is another one (name/position)."""


@dataclass(frozen=True)
class NewStation:
    """A `websdr_stations` row an importer wants to exist (its id and name chosen by the importer)."""

    id: int
    name: str
    latitude: float
    longitude: float
    altitude_asl: float | None = None
    url: str | None = None
    frequency_min_hz: float | None = None
    frequency_max_hz: float | None = None


def ensure_stations(
    db: Database, stations: Sequence[NewStation], same_position_m: float | None = None
) -> list[int]:
    """Insert `stations` (active), tolerating a concurrent insert of the very same ones; the ids inserted.

    Afterwards every station's id must hold its name (and, when `same_position_m` is given, a position
    within that many metres). Otherwise a concurrent writer took the id or name for another station:
    the rows this call inserted are removed again (unless referenced) and StationConflictError is raised.
    """
    inserted: list[int] = []
    if not stations:
        return inserted
    with db.sessions.begin() as q:
        for st in stations:
            stmt = insert_ignoring_conflicts(db, WebSDRStation).values(**asdict(st), is_active=True)
            # RETURNING, not rowcount: psycopg reports rowcount -1 for INSERT … ON CONFLICT DO NOTHING
            if q.execute(stmt.returning(WebSDRStation.id)).first() is not None:
                inserted.append(st.id)
        ids = [st.id for st in stations]
        rows = {
            r.id: (r.name, r.latitude, r.longitude)
            for r in q.scalars(select(WebSDRStation).where(WebSDRStation.id.in_(ids)))
        }
    for st in stations:
        row = rows.get(st.id)
        if (
            row is None
            or row[0] != st.name
            or (
                same_position_m is not None
                and haversine_m(row[1], row[2], st.latitude, st.longitude) > same_position_m
            )
        ):
            remove_unused_stations(db, inserted)
            raise StationConflictError(
                f"station {st.id} ({st.name}) was taken by a concurrent writer for another station"
            )
    return inserted


def remove_unused_stations(db: Database, ids: Sequence[int]) -> None:
    """Clean-up after a failed import: delete these stations unless some measurement references one.

    A concurrent import may have matched and used a station this import created; its committed
    rows are never taken away. A failure here is logged, not raised (the original error matters).
    """
    if not ids:
        return
    referenced = exists().where(Measurement.websdr_station_id == WebSDRStation.id)
    try:
        with db.sessions.begin() as q:
            q.execute(delete(WebSDRStation).where(WebSDRStation.id.in_(list(ids)), ~referenced))
    except SQLAlchemyError as exc:
        log.warning(
            "could not remove stations %s after a failed import: %s",
            list(ids),
            " ".join(str(exc).split())[:300],
        )


@dataclass(frozen=True)
class StoredStation:
    """A `websdr_stations` row as stored."""

    id: int
    name: str
    latitude: float
    longitude: float
    altitude_asl: float | None
    url: str | None
    frequency_min_hz: float | None
    frequency_max_hz: float | None
    is_active: bool


@dataclass(frozen=True)
class Registered:
    """What :func:`register_stations` did: the ids inserted and the ids already stored as given."""

    added: list[int]
    present: list[int]


def list_stations(db: Database) -> list[StoredStation]:
    """Every station, by id."""
    with db.sessions() as q:
        rows = list(q.scalars(select(WebSDRStation).order_by(WebSDRStation.id)))
    return [
        StoredStation(
            r.id,
            r.name,
            r.latitude,
            r.longitude,
            r.altitude_asl,
            r.url,
            r.frequency_min_hz,
            r.frequency_max_hz,
            bool(r.is_active),
        )
        for r in rows
    ]


def _differences(stored: StoredStation, st: NewStation, same_position_m: float) -> list[str]:
    out = []
    if stored.name != st.name:
        out.append(f"name {st.name!r} ≠ {stored.name!r}")
    d = haversine_m(stored.latitude, stored.longitude, st.latitude, st.longitude)
    if d > same_position_m:
        out.append(
            f"position {st.latitude:.6f}, {st.longitude:.6f} is {d:.0f} m from the stored "
            f"{stored.latitude:.6f}, {stored.longitude:.6f}"
        )
    if (
        stored.altitude_asl is not None
        and st.altitude_asl is not None
        and abs(stored.altitude_asl - st.altitude_asl) > same_position_m
    ):
        out.append(f"altitude {st.altitude_asl:g} m ≠ {stored.altitude_asl:g} m")
    return out


def register_stations(
    db: Database,
    stations: Sequence[NewStation],
    labels: Sequence[str] | None = None,
    same_position_m: float = SAME_POSITION_M,
) -> Registered:
    """Make every station exist: identical ones (id, name, position) are left alone, new ones inserted.

    A station whose id is :data:`CHOOSE_ID` matches a stored one by name, or gets the next free id.
    A station whose id or name is a stored station's with another name or position is a
    :class:`StationMismatchError` naming it (``labels[i]``, e.g. the file and row) and what differs;
    nothing is inserted then. A stored station's url and bands are left as they are.
    """
    labels = list(labels) if labels is not None else [f"station {st.id} ({st.name})" for st in stations]
    stored = list_stations(db)
    by_id = {s.id: s for s in stored}
    by_name = {s.name: s for s in stored}
    present: list[int] = []
    todo: list[NewStation] = []
    for st, label in zip(stations, labels, strict=True):
        same = by_id.get(st.id) if st.id != CHOOSE_ID else by_name.get(st.name)
        if same is not None:
            diffs = _differences(same, st, same_position_m)
            if diffs:
                raise StationMismatchError(
                    f"{label}: station {same.id} is already stored as another station ({'; '.join(diffs)}); "
                    "give it another id and name"
                )
            present.append(same.id)
            continue
        other = by_name.get(st.name)
        if other is not None:
            raise StationMismatchError(
                f"{label}: the name {st.name!r} already belongs to station {other.id}; "
                f"use id {other.id} or another name"
            )
        todo.append(st)
    taken = set(by_id) | {st.id for st in stations}
    next_id = max(taken, default=0) + 1
    rows = []
    for st in todo:
        if st.id == CHOOSE_ID:
            st = NewStation(**{**asdict(st), "id": next_id})
            next_id += 1
        rows.append(st)
    added = ensure_stations(db, rows, same_position_m=same_position_m)
    return Registered(added=added, present=present)
