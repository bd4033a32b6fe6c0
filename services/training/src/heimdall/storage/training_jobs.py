"""The ``training_jobs`` table: every state change is one conditional UPDATE, so the state machine holds
with any number of API processes and workers writing at once.

queued → running (a worker claims it) → succeeded | failed | cancelled; queued → cancelled (cancelled
before a worker took it); running → failed (its worker's lease expired: no heartbeat for the lease).
A worker writes to a running row only while it is the row's ``worker``; a terminal row never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from heimdall.storage.database import Database
from heimdall.storage.schema import TrainingJob

TERMINAL = ("succeeded", "failed", "cancelled")
PROGRESS_FIELDS = ("epoch", "max_epochs", "step", "train_loss", "val_loss", "eta_s")


def utc(dt: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns them naive, PostgreSQL aware)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _naive_utc(dt: datetime) -> datetime:
    # SQLite keeps DateTime as text: compare in one representation (naive UTC) on both dialects
    return dt.astimezone(UTC).replace(tzinfo=None)


def _when(db: Database, dt: datetime) -> datetime:
    return _naive_utc(dt) if db.engine.dialect.name == "sqlite" else dt.astimezone(UTC)


def insert_job(db: Database, job_id: str, request_json: str, now: datetime) -> None:
    with db.sessions.begin() as s:
        s.add(
            TrainingJob(
                id=job_id,
                state="queued",
                request=request_json,
                created_at=_when(db, now),
                attempts=0,
                cancel_requested=False,
            )
        )


def get_job(db: Database, job_id: str) -> TrainingJob | None:
    with db.sessions() as s:
        return s.get(TrainingJob, job_id)


def list_jobs(db: Database, limit: int, state: str | None = None) -> list[TrainingJob]:
    """Newest first."""
    query = select(TrainingJob).order_by(TrainingJob.created_at.desc(), TrainingJob.id).limit(limit)
    if state is not None:
        query = query.where(TrainingJob.state == state)
    with db.sessions() as s:
        return list(s.scalars(query))


def _update(db: Database, job_id: str, where: list[Any], values: Mapping[str, Any]) -> bool:
    with db.sessions.begin() as s:
        result = s.execute(
            update(TrainingJob).where(TrainingJob.id == job_id, *where).values(**values),
            execution_options={"synchronize_session": False},
        )
        return bool(result.rowcount)


def claim(db: Database, job_id: str, worker: str, now: datetime) -> bool:
    """queued → running for ``worker``; False if the job is not queued (taken, cancelled, finished)."""
    return _update(
        db,
        job_id,
        [TrainingJob.state == "queued", TrainingJob.cancel_requested.is_(False)],
        {
            "state": "running",
            "worker": worker,
            "started_at": _when(db, now),
            "heartbeat_at": _when(db, now),
            "attempts": TrainingJob.attempts + 1,
        },
    )


def heartbeat(
    db: Database, job_id: str, worker: str, now: datetime, progress: Mapping[str, Any] | None = None
) -> tuple[bool, bool]:
    """Renew ``worker``'s lease (and write progress): (still this worker's running job, cancel requested)."""
    values: dict[str, Any] = {"heartbeat_at": _when(db, now)}
    values.update({k: v for k, v in (progress or {}).items() if k in PROGRESS_FIELDS})
    owned = _update(db, job_id, [TrainingJob.state == "running", TrainingJob.worker == worker], values)
    with db.sessions() as s:
        cancel = s.scalar(select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id))
    return owned, bool(cancel)


def finish(db: Database, job_id: str, worker: str, state: str, now: datetime, **values: Any) -> bool:
    """running → ``state`` (terminal), only by the worker that holds it."""
    if state not in TERMINAL:
        raise ValueError(f"{state!r} is not a terminal state")
    return _update(
        db,
        job_id,
        [TrainingJob.state == "running", TrainingJob.worker == worker],
        {"state": state, "finished_at": _when(db, now), **values},
    )


def request_cancel(db: Database, job_id: str, now: datetime) -> None:
    """A queued job is cancelled at once; a running one is flagged (its worker stops at the next batch)."""
    _update(
        db,
        job_id,
        [TrainingJob.state == "queued"],
        {"state": "cancelled", "cancel_requested": True, "finished_at": _when(db, now)},
    )
    _update(db, job_id, [TrainingJob.state == "running"], {"cancel_requested": True})


def expire_leases(db: Database, now: datetime, lease_s: float) -> int:
    """Mark failed every running job whose worker has not renewed its lease for ``lease_s``; the count."""
    cutoff = _when(db, now - timedelta(seconds=lease_s))
    with db.sessions.begin() as s:
        result = s.execute(
            update(TrainingJob)
            .where(TrainingJob.state == "running", TrainingJob.heartbeat_at < cutoff)
            .values(
                state="failed",
                finished_at=_when(db, now),
                error=f"worker lost: no heartbeat for more than {lease_s:g} s (killed or disconnected)",
            ),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount or 0)


def fail_queued(db: Database, job_id: str, now: datetime, error: str) -> bool:
    """queued → failed without a worker (its message could not be sent to the broker)."""
    return _update(
        db,
        job_id,
        [TrainingJob.state == "queued"],
        {"state": "failed", "finished_at": _when(db, now), "error": error},
    )
