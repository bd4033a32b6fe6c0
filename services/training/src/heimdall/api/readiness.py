"""``/ready``: every backend the service needs, each checked with a deadline, failures named without secrets.

Each check runs in its own thread and is abandoned at ``Settings.connect_timeout_s`` (+ a small margin),
so one silent server cannot hold the answer longer than the timeout; the checks run concurrently.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable

from sqlalchemy import text

from heimdall.settings import Settings, redact_text, redact_url
from heimdall.storage.database import Database

MARGIN_S = 1.0


def _database(db: Database) -> Callable[[], None]:
    def check() -> None:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return check


def _object_store(settings: Settings) -> Callable[[], None]:
    def check() -> None:
        from heimdall.storage.objectstore import open_object_store

        store = open_object_store(
            settings.resolved_object_store,
            settings.s3_endpoint_url,
            settings.connect_timeout_s,
            region_name=settings.aws_region,
        )
        store.exists(settings.models_bucket, "heimdall-readiness-probe")

    return check


def _tracking(settings: Settings) -> Callable[[], None]:
    def check() -> None:
        from heimdall.tracking.connection import TrackingTarget, preflight

        preflight(TrackingTarget.from_settings(settings))

    return check


def _broker(settings: Settings) -> Callable[[], None]:
    def check() -> None:
        from kombu import Connection

        with Connection(settings.broker_url, connect_timeout=settings.connect_timeout_s) as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.connect_timeout_s)

    return check


def check_ready(settings: Settings, db: Database) -> dict[str, str]:
    """{backend: "ok" | one line naming what failed (URLs without passwords)}."""
    checks = {
        "database": _database(db),
        "object_store": _object_store(settings),
        "tracking": _tracking(settings),
        "broker": _broker(settings),
    }
    where = {
        "database": db.safe_url,
        "object_store": redact_url(settings.resolved_object_store),
        "tracking": redact_url(settings.resolved_mlflow_uri),
        "broker": redact_url(settings.broker_url),
    }
    deadline = settings.connect_timeout_s + MARGIN_S
    pool = cf.ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="ready")
    futures = {name: pool.submit(fn) for name, fn in checks.items()}
    end = time.monotonic() + deadline
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, end - time.monotonic()))
            results[name] = "ok"
        except cf.TimeoutError:
            results[name] = f"{where[name]}: no answer within {deadline:g} s"
        except Exception as exc:
            first = (" ".join(str(exc).split()) or type(exc).__name__)[:300]
            results[name] = f"{where[name]}: {type(exc).__name__}: {redact_text(first)}"
    pool.shutdown(wait=False, cancel_futures=True)
    return results
