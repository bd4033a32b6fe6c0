"""The job service's HTTP API: jobs (submit, list, read, cancel), models (list, promote), health.

Every ``/api/v1`` route needs ``Authorization: Bearer <HEIMDALL_API_TOKEN>`` (compared in constant
time); ``/health`` and ``/ready`` do not, and say nothing secret. A ``HeimdallError`` is mapped once:
an unknown job or version → 404, an invalid configuration → 422 naming the field, another user or data
error → 400, an unreachable backend → 503. Messages are one line with URL passwords masked.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from heimdall.errors import DataError, HeimdallError, ServiceUnavailableError, UserError
from heimdall.jobs import service
from heimdall.jobs.models import ModelList, PromoteOutcome, PromoteRequest, list_models, promote
from heimdall.settings import Settings, redact_text
from heimdall.storage.database import Database, open_database
from heimdall.tracking.registry import CHAMPION, RegistryError

API = "/api/v1"
THREADS = 4  # at most SQLAlchemy's default pool of 5 connections: no connection churn


_bearer = HTTPBearer(auto_error=False)


class ModelsView(ModelList):
    champion: str | None = None


class _Sweeper:
    """Marks expired leases failed at most once per heartbeat period, not on every one of many reads."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self._lock = threading.Lock()
        self._last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self.settings.job_heartbeat_s:
            return
        with self._lock:
            if now - self._last < self.settings.job_heartbeat_s:
                return
            service.recover(self.db, self.settings)
            self._last = time.monotonic()


def celery_enqueue(settings: Settings) -> Callable[[str], None]:
    """Send the job's id to the worker queue (one quick retry), or ServiceUnavailableError."""
    from celery import Celery

    client = Celery("heimdall-api", broker=settings.broker_url, backend=settings.result_backend)
    client.conf.update(broker_connection_timeout=settings.connect_timeout_s, broker_connection_retry=False)

    def enqueue(job_id: str) -> None:
        try:
            client.send_task(
                service.TASK_NAME,
                args=[job_id],
                task_id=job_id,
                queue=settings.job_queue,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
            )
        except Exception as exc:  # kombu OperationalError, socket errors
            first = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ServiceUnavailableError(f"the broker cannot take the job: {redact_text(first)}") from None

    return enqueue


def _status(exc: HeimdallError) -> int:
    if isinstance(exc, service.JobConfigError):
        return 422
    if isinstance(exc, service.JobNotFoundError | RegistryError):
        return 404
    if isinstance(exc, UserError | DataError):
        return 400
    if isinstance(exc, ServiceUnavailableError):
        return 503
    return 500


def create_app(
    settings: Settings, db: Database | None = None, enqueue: Callable[[str], None] | None = None
) -> FastAPI:
    """The app for ``settings``; the database is opened (and migrated) here, before the first request."""
    db = db or open_database(settings.resolved_database_url, settings.connect_timeout_s)
    send = enqueue or celery_enqueue(settings)
    sweep = _Sweeper(db, settings)
    token = settings.api_token.get_secret_value().encode() if settings.api_token is not None else None

    def authorised(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if token is None:  # only reachable with --local-only (serve refuses to start otherwise)
            return
        given = creds.credentials.encode() if creds is not None else b""
        if not secrets.compare_digest(given, token):
            raise _Unauthorised()

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        # a few threads for the blocking routes: forty threads fighting for one GIL answer a burst slower
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield
        db.dispose()

    app = FastAPI(
        title="Heimdall training service",
        version="1",
        description="Submit, follow and cancel trainings; list and promote registered models.",
        lifespan=lifespan,
    )
    guarded = [Depends(authorised)]

    @app.exception_handler(_Unauthorised)
    async def _unauthorised(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "missing or wrong bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(HeimdallError)
    async def _heimdall_error(_: Request, exc: HeimdallError) -> JSONResponse:
        if isinstance(exc, service.JobConfigError):
            detail: Any = [{**p, "loc": ["body", *p["loc"]]} for p in exc.problems]
        else:
            detail = f"{type(exc).__name__}: {redact_text(' '.join(str(exc).split()))}"
        return JSONResponse({"detail": detail}, _status(exc))

    @app.get("/health")
    def health() -> dict[str, str]:
        """The process is up (nothing else is checked)."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        """Database, object store, tracking and broker, each within the connect timeout; 503 if any fails."""
        from heimdall.api.readiness import check_ready

        checks = check_ready(settings, db)
        down = sorted(k for k, v in checks.items() if v != "ok")
        body = {"status": "ready" if not down else "not ready", "down": down, "checks": checks}
        return JSONResponse(body, 200 if not down else 503)

    @app.post(f"{API}/jobs", dependencies=guarded, status_code=202)
    def submit_job(submission: service.JobSubmission) -> service.JobView:
        """Queue a training (the fields of ``heimdall train``); 422 names an invalid field."""
        return service.submit(db, submission, send)

    @app.get(f"{API}/jobs", dependencies=guarded)
    def list_jobs(
        limit: int = Query(100, ge=1, le=service.MAX_LIST), state: service.JobState | None = None
    ) -> list[service.JobView]:
        sweep()
        return service.list_all(db, settings, limit, state, sweep=False)

    @app.get(f"{API}/jobs/{{job_id}}", dependencies=guarded)
    def get_job(job_id: str) -> service.JobView:
        sweep()
        return service.get(db, job_id, settings, sweep=False)

    @app.post(f"{API}/jobs/{{job_id}}/cancel", dependencies=guarded)
    def cancel_job(job_id: str) -> service.JobView:
        """A queued job is cancelled at once; a running one stops at its next batch."""
        return service.cancel(db, job_id, settings)

    @app.get(f"{API}/models", dependencies=guarded)
    def models() -> ModelsView:
        """Registered versions, newest first, with their aliases, and the champion's version."""
        listed = list_models(settings)
        champion = next((v.version for v in listed.versions if CHAMPION in v.aliases), None)
        return ModelsView(**listed.model_dump(), champion=champion)

    @app.post(f"{API}/models/{{version}}/promote", dependencies=guarded)
    def promote_model(version: str) -> PromoteOutcome:
        return promote(PromoteRequest(version=version), settings)

    return app


def app_from_environment() -> FastAPI:
    """The app from the environment's Settings: the factory each ``heimdall serve --workers N`` process
    calls (``heimdall serve`` has checked the token or local-only flag before starting them)."""
    settings = Settings()
    if settings.api_token is not None and not settings.api_token.get_secret_value():
        settings = settings.model_copy(update={"api_token": None})
    if settings.api_token is None and not settings.local_only:
        raise UserError("HEIMDALL_API_TOKEN is not set and HEIMDALL_LOCAL_ONLY is not 1")
    return create_app(settings)


class _Unauthorised(UserError):
    """A /api/v1 request without the right bearer token (a client mistake: HTTP 401)."""
