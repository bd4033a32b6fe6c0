"""Training as a service: submit, list, read and cancel job records, and run one job in a worker.

The HTTP API (``heimdall.api``) and the Celery worker (``heimdall.worker``) both call these functions;
the job row in the database (``storage.training_jobs``) is the one truth about a job, so state and
history survive any process. A running job's worker renews a lease on its row every
``Settings.job_heartbeat_s``; a row whose lease is older than ``Settings.job_lease_s`` is marked failed
when anyone reads jobs or a worker starts, so a worker killed with ``kill -9`` never leaves its job
"running" forever. Cancellation is a flag on the row that the heartbeat reads and the training callback
(:class:`heimdall.training.cancel.JobControl`) acts on at the next batch.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from heimdall.errors import HeimdallError, UserError
from heimdall.jobs.train_options import TrainOptions, mlflow_reference
from heimdall.settings import Settings, redact_text
from heimdall.storage import training_jobs as rows
from heimdall.storage.database import Database
from heimdall.storage.schema import TrainingJob
from heimdall.training.config import TrainConfig

log = logging.getLogger("heimdall.jobs.service")

#: the Celery task both front doors agree on (the API sends it, the worker runs it)
TASK_NAME = "heimdall.train_job"
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
MAX_LIST = 1000


class JobNotFoundError(UserError):
    """No job has this id."""


class JobConfigError(UserError):
    """The submitted configuration is invalid; ``problems`` name each field (FastAPI's 422 shape)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems))


class JobSubmission(TrainOptions):
    """The options of ``heimdall train`` a client may set (:class:`TrainOptions`, the same list). The server
    chooses the output folder (one per job) and never reads a file a client names, so ``--output-dir``,
    ``--config`` and ``--resume`` are not offered and ``init_from`` must be an MLflow run or registered
    model, never a path on the server; every value is checked by :class:`TrainConfig`, as on the command
    line."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("init_from")
    @classmethod
    def _mlflow_only(cls, value: str | None) -> str | None:
        if value is not None and mlflow_reference(value) is None:
            raise ValueError(
                "a job starts from an MLflow run (runs:/ID or its 32-hex id) or a registered model "
                "(models:/NAME/VERSION, NAME@ALIAS), not from a path on the server"
            )
        return value

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.config_overrides().items() if v is not None}

    def validated(self) -> TrainConfig:
        """The configuration this job will train with; JobConfigError naming each bad field."""
        if self.promote and not self.tracking:
            raise JobConfigError(
                [{"loc": ["promote"], "msg": "promote needs tracking", "type": "value_error"}]
            )
        try:
            config = TrainConfig.model_validate(self.overrides())
        except ValidationError as err:
            raise JobConfigError(
                [
                    {"loc": list(e["loc"]), "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
                    for e in err.errors()
                ]
            ) from None
        if config.strategy.startswith("ddp") or config.num_nodes > 1:
            # Lightning's DDP launcher re-runs the command line for its extra ranks: inside a worker that
            # would re-run the worker, so distributed training runs from `heimdall train` only
            raise JobConfigError(
                [
                    {
                        "loc": ["strategy"],
                        "msg": "distributed training (ddp, several nodes) runs with `heimdall train "
                        "--strategy ddp`, not as a service job",
                        "type": "value_error",
                    }
                ]
            )
        return config


class JobProgress(BaseModel):
    epoch: int | None = None  # epochs completed
    max_epochs: int | None = None
    step: int | None = None  # optimizer steps so far
    train_loss: float | None = None
    val_loss: float | None = None
    eta_s: float | None = None  # fitting time left at the mean epoch time so far


class JobView(BaseModel):
    """A job as the API returns it."""

    id: str
    state: JobState
    request: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: JobProgress
    model_id: str | None = None
    model_version: str | None = None
    mlflow_run_id: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, row: TrainingJob) -> JobView:
        return cls(
            id=row.id,
            state=row.state,  # type: ignore[arg-type]
            request=json.loads(row.request),
            created_at=rows.utc(row.created_at),  # type: ignore[arg-type]
            started_at=rows.utc(row.started_at),
            finished_at=rows.utc(row.finished_at),
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            progress=JobProgress(**{k: getattr(row, k) for k in rows.PROGRESS_FIELDS}),
            model_id=row.model_id,
            model_version=row.model_version,
            mlflow_run_id=row.mlflow_run_id,
            error=row.error,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def submit(db: Database, submission: JobSubmission, enqueue: Callable[[str], None]) -> JobView:
    """Validate, record the job as queued, then hand its id to the broker (``enqueue``).

    If the broker refuses, the row is marked failed (so no job waits for a message never sent) and the
    broker's error propagates.
    """
    submission.validated()
    job_id, created = uuid.uuid4().hex, _now()
    request_json = submission.model_dump_json()
    rows.insert_job(db, job_id, request_json, created)
    try:
        enqueue(job_id)
    except HeimdallError as exc:
        rows.fail_queued(db, job_id, _now(), f"not queued: {redact_text(str(exc))}")
        raise
    # the row as inserted (a worker may already have claimed it: GET shows that)
    return JobView(
        id=job_id,
        state="queued",
        request=json.loads(request_json),
        created_at=created,
        progress=JobProgress(),
    )


def get(db: Database, job_id: str, settings: Settings, sweep: bool = True) -> JobView:
    """The job; ``sweep`` first marks failed the running jobs whose lease expired (see :func:`recover`)."""
    if sweep:
        recover(db, settings)
    row = rows.get_job(db, job_id)
    if row is None:
        raise JobNotFoundError(f"no training job {job_id!r}")
    return JobView.of(row)


def list_all(
    db: Database, settings: Settings, limit: int = 100, state: str | None = None, sweep: bool = True
) -> list[JobView]:
    """Newest first, at most ``limit`` (≤ MAX_LIST)."""
    if sweep:
        recover(db, settings)
    return [JobView.of(r) for r in rows.list_jobs(db, max(1, min(limit, MAX_LIST)), state)]


def cancel(db: Database, job_id: str, settings: Settings) -> JobView:
    """Cancel a queued job at once, flag a running one (it stops at its next batch); terminal: unchanged."""
    get(db, job_id, settings)
    rows.request_cancel(db, job_id, _now())
    return get(db, job_id, settings)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Heartbeat(threading.Thread):
    """Renews the lease every ``period_s`` with the latest progress; sets ``cancel`` when asked to stop."""

    def __init__(self, db: Database, job_id: str, worker: str, period_s: float, snapshot: dict) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.db, self.job_id, self.worker, self.period_s, self.snapshot = (
            db,
            job_id,
            worker,
            period_s,
            snapshot,
        )
        self.cancel = threading.Event()
        self.stopped = threading.Event()

    def beat(self) -> None:
        try:
            owned, cancel = rows.heartbeat(self.db, self.job_id, self.worker, _now(), dict(self.snapshot))
        except Exception as exc:  # a database hiccup: the next beat retries, the lease absorbs it
            log.warning("heartbeat of job %s failed: %s", self.job_id, redact_text(str(exc)))
            return
        if cancel or not owned:  # not owned: the lease expired and the job was marked failed
            self.cancel.set()

    def run(self) -> None:
        while not self.stopped.wait(self.period_s):
            self.beat()


def run_job(db: Database, job_id: str, settings: Settings, worker: str | None = None) -> str:
    """Run one queued job to its end in this process; returns the job's final state.

    A job that is not queued (cancelled before it started, already finished, or held by a live worker
    after a duplicate delivery) is left as it is.
    """
    from heimdall.jobs.train import TrainRequest, train
    from heimdall.training.cancel import JobControl, TrainingCancelled, job_callbacks

    worker = worker or worker_name()
    rows.expire_leases(db, _now(), settings.job_lease_s)
    if not rows.claim(db, job_id, worker, _now()):
        row = rows.get_job(db, job_id)
        state = row.state if row is not None else "missing"
        log.info("job %s not run: it is %s", job_id, state)
        return state
    submission = JobSubmission.model_validate_json(rows.get_job(db, job_id).request)  # type: ignore[union-attr]
    beat = _Heartbeat(db, job_id, worker, settings.job_heartbeat_s, {})
    control = JobControl(should_stop=beat.cancel.is_set)
    beat.snapshot = control.snapshot
    control.on_progress = lambda p: rows.heartbeat(db, job_id, worker, _now(), p)
    beat.beat()  # a cancel that arrived between claim and now is seen before any data is read
    beat.start()
    request = TrainRequest(
        **submission.model_dump(),
        output_dir=settings.data_dir / "jobs" / job_id,
        progress=False,
    )
    try:
        with job_callbacks(control):
            outcome = train(request, settings, echo=lambda line: log.info("job %s: %s", job_id, line))
    except TrainingCancelled as exc:
        rows.finish(db, job_id, worker, "cancelled", _now(), error=str(exc), **_progress(control))
        return "cancelled"
    except HeimdallError as exc:
        message = f"{type(exc).__name__}: {redact_text(' '.join(str(exc).split()))}"
        rows.finish(db, job_id, worker, "failed", _now(), error=message, **_progress(control))
        return "failed"
    except BaseException as exc:  # a bug: recorded, then re-raised so the worker logs its traceback
        message = f"internal error {type(exc).__name__}: {redact_text(' '.join(str(exc).split()))}"
        rows.finish(db, job_id, worker, "failed", _now(), error=message, **_progress(control))
        raise
    finally:
        beat.stopped.set()
        beat.join(timeout=5)
    rows.finish(
        db,
        job_id,
        worker,
        "succeeded",
        _now(),
        model_id=outcome.model_id,
        model_version=outcome.registered.version if outcome.registered else None,
        mlflow_run_id=outcome.mlflow_run_id,
        **_progress(control),
    )
    return "succeeded"


def _progress(control: Any) -> dict[str, Any]:
    return {k: v for k, v in control.snapshot.items() if k in rows.PROGRESS_FIELDS}


def recover(db: Database, settings: Settings) -> int:
    """At worker start and on reads: mark failed every running job whose lease expired; the count."""
    return rows.expire_leases(db, _now(), settings.job_lease_s)
