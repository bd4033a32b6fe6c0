"""Looking at and curating recording sessions: ``heimdall sessions list`` and ``sessions approve``.

Training reads approved sessions only; ``approve`` (or ``approve --reject``) sets the approval status of
the named sessions in one transaction — any unknown id and nothing changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from heimdall.errors import UserError
from heimdall.settings import Settings
from heimdall.storage.database import DatabaseMissingError, open_database
from heimdall.storage.sessions import session_summaries, set_approval_status

Status = Literal["pending", "approved", "rejected"]


class ListSessionsRequest(BaseModel):
    datasets: list[str] = []  # all datasets when empty
    status: Status | None = None  # every status when None
    limit: int | None = None


class SessionInfo(BaseModel):
    id: uuid.UUID
    dataset: str
    start: datetime
    status: str
    receivers_heard: int
    has_truth: bool


class ListSessionsOutcome(BaseModel):
    database: str  # where it looked (URL, password masked)
    missing: str | None = None  # "no database at …" when the embedded file does not exist (nothing created)
    sessions: list[SessionInfo]


class ApproveRequest(BaseModel):
    ids: list[str]
    reject: bool = False


class ApproveOutcome(BaseModel):
    status: Status
    sessions: int  # named (distinct)
    changed: int  # of those, how many had another status
    database: str


def _parse_ids(ids: list[str]) -> list[uuid.UUID]:
    if not ids:
        raise UserError("name at least one session id")
    out, bad = [], []
    for i in ids:
        try:
            out.append(uuid.UUID(i.strip()))
        except ValueError:
            bad.append(i)
    if bad:
        raise UserError(f"not a session id (a UUID): {', '.join(repr(b) for b in bad)}")
    return out


def list_sessions(request: ListSessionsRequest, settings: Settings) -> ListSessionsOutcome:
    """Sessions by start time; an embedded database that does not exist yet is reported, not created."""
    if request.limit is not None and request.limit < 1:
        raise UserError(f"--limit must be ≥ 1, got {request.limit}")
    if any(not d.strip() for d in request.datasets):
        raise UserError("--dataset must be a non-empty label")
    try:
        db = open_database(settings.resolved_database_url, settings.connect_timeout_s, create=False)
    except DatabaseMissingError as exc:
        return ListSessionsOutcome(database=str(exc.path), missing=str(exc), sessions=[])
    try:
        rows = session_summaries(db, request.datasets, request.status, request.limit)
        return ListSessionsOutcome(
            database=db.safe_url,
            sessions=[
                SessionInfo(
                    id=r.id,
                    dataset=r.dataset,
                    start=r.session_start,
                    status=r.approval_status,
                    receivers_heard=r.receivers_heard,
                    has_truth=r.has_truth,
                )
                for r in rows
            ],
        )
    finally:
        db.dispose()


def approve(request: ApproveRequest, settings: Settings) -> ApproveOutcome:
    """Approve (or reject) the named sessions, all or none."""
    ids = _parse_ids(request.ids)
    status: Status = "rejected" if request.reject else "approved"
    try:
        db = open_database(settings.resolved_database_url, settings.connect_timeout_s, create=False)
    except DatabaseMissingError as exc:
        raise UserError(f"unknown session id(s) {', '.join(map(str, ids))}: {exc}") from None
    try:
        changed = set_approval_status(db, ids, status)
        return ApproveOutcome(status=status, sessions=len(set(ids)), changed=changed, database=db.safe_url)
    finally:
        db.dispose()
