"""The Celery worker of the training service: one training at a time per worker process.

Late acknowledgement (``acks_late``) with ``task_reject_on_worker_lost`` and a prefetch of one: the
broker keeps a job's message until its training has ended, so a lost worker's message is delivered
again; the job row (see :mod:`heimdall.jobs.service`) decides whether it still runs. Each training runs
in a fresh pool process (``max_tasks_per_child=1``), so one job's memory never leaks into the next.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from heimdall.jobs import service
from heimdall.settings import Settings
from heimdall.storage.database import Database, open_database

log = logging.getLogger("heimdall.worker")
#: libraries whose INFO lines (one per ONNX rewrite rule…) would bury the job's own lines in the log
QUIET = ("onnx_ir", "onnxscript", "pytorch_lightning", "lightning", "lightning_fabric", "torch", "mlflow")


def make_celery(settings: Settings) -> Celery:
    """The Celery app for ``settings`` with the training task registered."""
    app = Celery("heimdall", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        task_default_queue=settings.job_queue,
        task_track_started=True,
        broker_connection_timeout=settings.connect_timeout_s,
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
    )
    databases: dict[int, Database] = {}

    @worker_process_init.connect(weak=False)
    def _lower_priority(**_: Any) -> None:
        # each pool process (one per training) yields the CPU to the API and the worker's own loop
        if settings.job_nice:
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), settings.job_nice))

    def database() -> Database:
        # one engine per pool process, opened after the fork (an engine must not cross a fork)
        pid = os.getpid()
        if pid not in databases:
            databases[pid] = open_database(settings.resolved_database_url, settings.connect_timeout_s)
        return databases[pid]

    @app.task(name=service.TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def train_job(job_id: str) -> dict[str, Any]:
        state = service.run_job(database(), job_id, settings)
        return {"id": job_id, "state": state}

    return app


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Mark failed the jobs of workers that died, then consume the job queue until stopped."""
    db = open_database(settings.resolved_database_url, settings.connect_timeout_s)
    try:
        lost = service.recover(db, settings)
    finally:
        db.dispose()
    if lost:
        log.warning("marked %d job(s) of lost workers failed", lost)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    app = make_celery(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            "--concurrency=1",
            "--pool=prefork",
            f"--queues={settings.job_queue}",
            f"--hostname=heimdall-{uuid.uuid4().hex[:8]}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
