"""`heimdall serve` as a real uvicorn process on PostgreSQL and RabbitMQ (no worker: jobs stay queued).

Auth on every /api/v1 route, 422 naming the field, what lands in the broker queue, cancel of a queued
job, /ready naming a closed broker port within the timeout, and no secret in any response or log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from service_stack import HEIMDALL, Stack, make_stack, queue_depth

ROUTES = [
    ("GET", "/api/v1/jobs", None),
    ("POST", "/api/v1/jobs", {"epochs": 2}),
    ("GET", "/api/v1/jobs/0123", None),
    ("POST", "/api/v1/jobs/0123/cancel", None),
    ("GET", "/api/v1/models", None),
    ("POST", "/api/v1/models/1/promote", None),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, make_postgres_database) -> Stack:
    s = make_stack(tmp_path_factory.mktemp("api"), make_postgres_database(), sessions=3)
    s.start_server()
    yield s
    s.stop()


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_api_route_needs_the_bearer_token(stack: Stack, method: str, path: str, body) -> None:
    for token in (None, "wrong-token", stack.token + "x", stack.token[:-1]):
        r = stack.request(method, path, body, token=token)
        assert r.status == 401, (token, r.text)
        assert r.body == {"detail": "missing or wrong bearer token"}
    # right token: past auth (404 for the unknown ids, 2xx or 4xx of the route itself otherwise)
    assert stack.request(method, path, body).status != 401


def test_health_and_docs_need_no_token(stack: Stack) -> None:
    assert stack.request("GET", "/health", token=None).body == {"status": "ok"}
    docs = stack.request("GET", "/docs", token=None)
    assert docs.status == 200 and "swagger" in docs.text.lower()
    schema = stack.request("GET", "/openapi.json", token=None).body
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel", "/api/v1/models"} <= set(
        schema["paths"]
    )


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"epochs": 0}, ["body", "epochs"]),
        ({"batch_size": 10**9}, ["body", "batch_size"]),
        ({"learning_rate": "fast"}, ["body", "learning_rate"]),
        ({"no_such_option": 1}, ["body", "no_such_option"]),
        ({"output_dir": "/etc"}, ["body", "output_dir"]),  # the server chooses where a job writes
        ({"split": "random"}, ["body", "split"]),
    ],
)
def test_a_bad_configuration_is_422_naming_the_field_and_nothing_is_queued(stack: Stack, body, loc) -> None:
    before = len(stack.request("GET", "/api/v1/jobs").body)
    r = stack.request("POST", "/api/v1/jobs", body)
    assert r.status == 422, r.text
    assert loc in [d["loc"] for d in r.body["detail"]], r.body
    assert len(stack.request("GET", "/api/v1/jobs").body) == before


def test_a_submitted_job_is_queued_in_the_broker_and_can_be_cancelled(stack: Stack) -> None:
    job = stack.submit(epochs=2, batch_size=16, seed=3)
    assert job["state"] == "queued" and job["request"]["epochs"] == 2
    assert queue_depth(stack.queue) >= 1  # RabbitMQ holds the message: no worker consumes this queue
    listed = stack.request("GET", "/api/v1/jobs").body
    assert job["id"] in [j["id"] for j in listed]
    assert stack.request("GET", "/api/v1/jobs?state=queued").body[0]["state"] == "queued"
    cancelled = stack.request("POST", f"/api/v1/jobs/{job['id']}/cancel").body
    assert cancelled["state"] == "cancelled" and cancelled["started_at"] is None
    # a terminal job stays as it is
    assert stack.request("POST", f"/api/v1/jobs/{job['id']}/cancel").body["state"] == "cancelled"
    assert stack.request("GET", "/api/v1/jobs/no-such-job").status == 404


def test_models_lists_an_empty_registry(stack: Stack) -> None:
    r = stack.request("GET", "/api/v1/models")
    assert r.status == 200, r.text
    assert r.body["versions"] == [] and r.body["champion"] is None
    unknown = stack.request("POST", "/api/v1/models/7/promote")
    assert unknown.status == 404 and "train a model first" in unknown.body["detail"]


def test_ready_with_every_backend_up(stack: Stack) -> None:
    r = stack.request("GET", "/ready", token=None)
    assert r.status == 200, r.text
    assert r.body["checks"] == {k: "ok" for k in ("database", "object_store", "tracking", "broker")}


def test_a_closed_broker_port_is_503_naming_the_broker_within_the_timeout_and_no_secret(
    tmp_path: Path, make_postgres_database
) -> None:
    from service_stack import free_port

    password = "Pa55-w0rd-never-shown"
    s = make_stack(tmp_path, make_postgres_database(), sessions=3)
    s.env["HEIMDALL_BROKER_URL"] = f"amqp://guest:{password}@127.0.0.1:{free_port()}//"
    s.env["HEIMDALL_CONNECT_TIMEOUT_S"] = "1"
    s.start_server()
    try:
        t0 = time.monotonic()
        r = s.request("GET", "/ready", token=None)
        elapsed = time.monotonic() - t0
        assert r.status == 503, r.text
        assert r.body["down"] == ["broker"] and r.body["checks"]["database"] == "ok"
        assert "127.0.0.1" in r.body["checks"]["broker"]
        assert elapsed < 1 + 1 + 1.5, elapsed  # timeout + the readiness margin + slack
        sub = s.request("POST", "/api/v1/jobs", {"epochs": 2})
        assert sub.status == 503 and "broker" in sub.body["detail"], sub.text
        failed = s.request("GET", "/api/v1/jobs").body[0]  # recorded, not left queued for ever
        assert failed["state"] == "failed" and failed["error"].startswith("not queued")
        texts = [r.text, sub.text, s.request("GET", "/api/v1/jobs").text]
    finally:
        s.stop()
    for text in [*texts, s.log_text()]:
        assert password not in text
        assert s.token not in text


def test_serve_refuses_to_start_without_a_token(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "HEIMDALL_API_TOKEN"}
    done = subprocess.run(
        [HEIMDALL, "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "HEIMDALL_API_TOKEN is not set" in done.stderr, done.stderr
    wide = subprocess.run(
        [HEIMDALL, "serve", "--local-only", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wide.returncode == 2 and "--local-only binds 127.0.0.1 only" in wide.stderr, wide.stderr


def test_local_only_serves_loopback_without_a_token(tmp_path: Path, make_postgres_database) -> None:
    s = make_stack(tmp_path, make_postgres_database(), sessions=3)
    del s.env["HEIMDALL_API_TOKEN"]
    s.start_server(args=("--local-only",))
    try:
        assert s.request("GET", "/api/v1/jobs", token=None).status == 200
    finally:
        s.stop()


def test_the_token_is_in_no_log(stack: Stack) -> None:
    stack.request("GET", "/api/v1/jobs")
    stack.request("GET", "/api/v1/jobs", token="a-wrong-token-value")
    text = stack.log_text()
    assert "GET /api/v1/jobs" in text  # the access log is there, so the check below reads real lines
    assert stack.token not in text and "a-wrong-token-value" not in text


def test_several_server_processes_share_the_database_and_the_token(stack: Stack, tmp_path: Path) -> None:
    s = Stack(root=tmp_path, env=dict(stack.env), token=stack.token, queue=stack.queue)
    s.start_server(args=("--workers", "2"))
    try:
        job = s.submit(epochs=2)
        assert stack.job(job["id"])["state"] == "queued"  # the module's server reads the same row
        assert s.request("GET", f"/api/v1/jobs/{job['id']}", token=None).status == 401
    finally:
        os.killpg(s.server.pid, signal.SIGTERM)  # not s.stop(): the queue is the module stack's
        s.server.wait(timeout=30)
