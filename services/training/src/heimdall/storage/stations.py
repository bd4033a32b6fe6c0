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

from heimdall.errors import DataError
from heimdall.geo import haversine_m
from heimdall.storage.database import Database, insert_ignoring_conflicts
from heimdall.storage.schema import Measurement, WebSDRStation

__all__ = [
    "NewStation",
    "StationConflictError",
    "ensure_stations",
    "insert_ignoring_conflicts",
    "remove_unused_stations",
]

log = logging.getLogger("heimdall.storage.stations")


class StationConflictError(DataError):
    """A concurrent writer took a chosen station id or name for another station; none of ours is left."""


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
