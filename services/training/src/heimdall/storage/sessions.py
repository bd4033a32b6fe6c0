"""Session bookkeeping: a light listing (no measurements loaded) and setting the approval status."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from heimdall.storage.database import Database
from heimdall.storage.queries import SessionNotFoundError
from heimdall.storage.recordings import as_utc
from heimdall.storage.schema import APPROVAL_STATUSES, Measurement, RecordingSession

__all__ = ["SessionSummary", "session_summaries", "set_approval_status"]


@dataclass(frozen=True)
class SessionSummary:
    id: uuid.UUID
    dataset: str
    session_start: datetime
    approval_status: str
    receivers_heard: int  # distinct stations with a measurement
    has_truth: bool  # a known source (ground-truth transmitter) is attached


def session_summaries(
    db: Database,
    datasets: Sequence[str] = (),
    approval_status: str | None = None,
    limit: int | None = None,
) -> list[SessionSummary]:
    """Sessions (of these dataset labels, with this status; all when empty/None) by start time then id."""
    heard = (
        select(
            Measurement.recording_session_id.label("sid"),
            func.count(func.distinct(Measurement.websdr_station_id)).label("n"),
        )
        .group_by(Measurement.recording_session_id)
        .subquery()
    )
    stmt = (
        select(RecordingSession, func.coalesce(heard.c.n, 0))
        .outerjoin(heard, heard.c.sid == RecordingSession.id)
        .order_by(RecordingSession.session_start, RecordingSession.id)
    )
    if datasets:
        stmt = stmt.where(RecordingSession.dataset.in_(list(datasets)))
    if approval_status is not None:
        stmt = stmt.where(RecordingSession.approval_status == approval_status)
    if limit is not None:
        stmt = stmt.limit(limit)
    with db.sessions() as q:
        rows = list(q.execute(stmt))
    return [
        SessionSummary(
            id=s.id,
            dataset=s.dataset,
            session_start=as_utc(s.session_start),
            approval_status=s.approval_status,
            receivers_heard=int(n),
            has_truth=s.known_source_id is not None,
        )
        for s, n in rows
    ]


def set_approval_status(db: Database, ids: Sequence[uuid.UUID], status: str) -> int:
    """Set the approval status of these sessions in one transaction; how many changed.

    Any unknown id is a :class:`SessionNotFoundError` naming every unknown one, and nothing changes.
    """
    if status not in APPROVAL_STATUSES:
        raise ValueError(f"approval status must be one of {APPROVAL_STATUSES}, got {status!r}")
    wanted = list(dict.fromkeys(ids))
    with db.sessions.begin() as q:
        rows = dict(
            q.execute(
                select(RecordingSession.id, RecordingSession.approval_status).where(
                    RecordingSession.id.in_(wanted)
                )
            ).all()
        )
        unknown = [str(i) for i in wanted if i not in rows]
        if unknown:
            raise SessionNotFoundError(
                f"unknown session id(s) {', '.join(unknown)} in {db.safe_url}; nothing changed"
            )
        change = [i for i in wanted if rows[i] != status]
        if change:
            q.execute(
                update(RecordingSession).where(RecordingSession.id.in_(change)).values(approval_status=status)
            )
    return len(change)
