"""A real `heimdall serve` + `heimdall worker` on RabbitMQ, Redis and PostgreSQL: a job trained to the
end and registered, cancels of a running and of a queued job, and a worker killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from service_stack import TERMINAL, Stack, make_stack

LONG = {"epochs": 400, "patience": 400, "batch_size": 4, "seed": 5}  # far longer than any test waits


def _done(job: dict) -> bool:
    return job["state"] in TERMINAL


def _trained_an_epoch(job: dict) -> bool:
    return job["state"] in TERMINAL or (job["progress"]["epoch"] or 0) >= 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, make_postgres_database) -> Stack:
    s = make_stack(tmp_path_factory.mktemp("service"), make_postgres_database(), sessions=40)
    s.start_server()
    s.start_worker()
    yield s
    s.stop()


def test_a_job_trains_to_the_end_and_its_model_is_registered(stack: Stack) -> None:
    job = stack.submit(epochs=2, batch_size=16, seed=5)
    done = stack.wait(job["id"], _done, timeout=240)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 1 and done["error"] is None
    # the progress the callback wrote against the report the run wrote on its own
    report = json.loads((stack.root / "heimdall-data" / "jobs" / job["id"] / "report.json").read_text())
    last = report["history"][-1]
    p = done["progress"]
    assert (p["epoch"], p["max_epochs"]) == (report["epochs_run"], 2) == (2, 2)
    assert p["train_loss"] == pytest.approx(last["train_loss"], rel=1e-5)
    assert p["val_loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert p["eta_s"] == 0.0
    assert done["model_id"] == report["model_id"] == done["mlflow_run_id"]
    models = stack.request("GET", "/api/v1/models").body
    version = next(v for v in models["versions"] if v["run_id"] == done["mlflow_run_id"])
    assert version["version"] == done["model_version"]
    assert models["champion"] == done["model_version"]  # the first model is the first champion
    assert version["n_test"] == report["n_test"]
    # promote through the API: the champion stays on that version, by request this time
    promoted = stack.request("POST", f"/api/v1/models/{done['model_version']}/promote")
    assert promoted.status == 200 and promoted.body["decision"]["version"] == done["model_version"]


def test_cancel_stops_a_running_job_at_once_and_a_queued_one_never_starts(stack: Stack) -> None:
    running = stack.submit(**LONG)
    queued = stack.submit(**LONG)  # one training per worker: this one waits in the broker
    started = stack.wait(running["id"], _trained_an_epoch, timeout=120)
    assert started["state"] == "running", started
    assert stack.job(queued["id"])["state"] == "queued"
    assert stack.request("POST", f"/api/v1/jobs/{queued['id']}/cancel").body["state"] == "cancelled"
    t0 = time.monotonic()
    assert stack.request("POST", f"/api/v1/jobs/{running['id']}/cancel").body["cancel_requested"] is True
    stopped = stack.wait(running["id"], _done, timeout=30)
    waited = time.monotonic() - t0
    assert stopped["state"] == "cancelled", stopped
    # the heartbeat (0.5 s) sees the flag, the next batch (~40 ms here) raises; the bound leaves room for a
    # busy machine and is still far below the minutes the remaining ~400 epochs would take
    assert waited < 10, waited
    assert stopped["progress"]["epoch"] < 50 and stopped["error"].startswith("cancelled at epoch")
    assert stopped["model_version"] is None
    job_dir = stack.root / "heimdall-data" / "jobs" / running["id"]
    assert not (job_dir / "model.onnx").exists()  # no export, no registration after a cancel
    # the worker then takes the cancelled job's message and leaves the job as it is
    time.sleep(3)
    never = stack.job(queued["id"])
    assert never["state"] == "cancelled" and never["started_at"] is None and never["attempts"] == 0


def test_a_worker_killed_with_sigkill_leaves_its_job_failed_not_running(stack: Stack) -> None:
    job = stack.submit(**LONG)
    stack.wait(job["id"], _trained_an_epoch, timeout=120)
    assert stack.job(job["id"])["state"] == "running"
    worker = stack.workers[-1]
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool process, no chance to clean up
    worker.wait(timeout=10)
    t0 = time.monotonic()
    lost = stack.wait(job["id"], _done, timeout=20)
    assert lost["state"] == "failed", lost
    assert "worker lost" in lost["error"]
    assert time.monotonic() - t0 < 4 + 6  # the lease (4 s) plus the sweep, polling and a busy machine
    # a new worker gets the message again (late ack) and does not resurrect the failed job
    stack.start_worker()
    log = Path(stack.logs[-1])
    deadline = time.monotonic() + 30
    while f"job {job['id']} not run: it is failed" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert f"job {job['id']} not run: it is failed" in log.read_text(), log.read_text()[-3000:]
    again = stack.job(job["id"])
    assert again["state"] == "failed" and again["attempts"] == 1


def test_no_secret_in_the_server_or_worker_logs(stack: Stack) -> None:
    text = stack.log_text()
    assert "heimdall.train_job" in text and "GET /api/v1/jobs/" in text  # real log lines are read
    assert stack.token not in text
    assert "guest:guest@" not in text  # Celery prints the broker as amqp://guest:**@…
