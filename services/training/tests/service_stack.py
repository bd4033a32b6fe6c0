"""Real processes for the job-service tests: a `heimdall serve` (uvicorn) and `heimdall worker` (Celery)
against the machine's RabbitMQ and Redis and a fresh PostgreSQL database.

Each stack has its own queue name, so parallel runs never take each other's jobs; the queue and the
stack's result keys are deleted at the end. Without RabbitMQ or Redis the tests skip, except in CI
(``HEIMDALL_REQUIRE_BROKER=1``), where they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
RESULT_BACKEND = "redis://127.0.0.1:6379/0"
REQUIRE_BROKER = os.environ.get("HEIMDALL_REQUIRE_BROKER") == "1"
HEIMDALL = str(Path(sys.executable).with_name("heimdall"))
TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_broker_and_redis() -> None:
    """Skip (fail in CI) unless RabbitMQ and Redis answer on their default loopback ports."""
    for name, port in (("RabbitMQ", 5672), ("Redis", 6379)):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except OSError as exc:
            message = f"{name} not reachable on 127.0.0.1:{port}: {exc}"
            if REQUIRE_BROKER:
                pytest.fail(message + " and HEIMDALL_REQUIRE_BROKER=1")
            pytest.skip(message)


@dataclass
class Response:
    status: int
    body: Any
    text: str


@dataclass
class Stack:
    """The environment of one stack, its server and workers, and a small HTTP client."""

    root: Path
    env: dict[str, str]
    token: str
    queue: str
    port: int = 0
    server: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = "", timeout: float = 30
    ) -> Response:
        """``token=""``: the stack's token; None: no Authorization header; else that token."""
        headers = {"Content-Type": "application/json"}
        bearer = self.token if token == "" else token
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as err:
            text, status = err.read().decode(), err.code
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return Response(status, parsed, text)

    def start_server(self, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.server = self._spawn(
            "serve", ["serve", "--port", str(self.port), *args], {**self.env, **(extra_env or {})}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                pytest.fail(f"heimdall serve exited {self.server.returncode}: {self.log_text()[-3000:]}")
            try:
                if self.request("GET", "/health", token=None, timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"heimdall serve did not answer /health within 60 s: {self.log_text()[-3000:]}")

    def start_worker(self) -> subprocess.Popen:
        proc = self._spawn(f"worker{len(self.workers)}", ["worker"], self.env)
        self.workers.append(proc)
        log = self.logs[-1]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"heimdall worker exited {proc.returncode}: {log.read_text()[-3000:]}")
            if " ready." in log.read_text(errors="replace"):
                return proc
            time.sleep(0.3)
        pytest.fail(f"heimdall worker not ready within 90 s: {log.read_text()[-3000:]}")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            return subprocess.Popen(
                [HEIMDALL, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def submit(self, **config: Any) -> dict[str, Any]:
        r = self.request("POST", "/api/v1/jobs", config)
        assert r.status == 202, r.text
        return r.body

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.request("GET", f"/api/v1/jobs/{job_id}")
        assert r.status == 200, r.text
        return r.body

    def wait(self, job_id: str, until: Any, timeout: float) -> dict[str, Any]:
        """Poll the job until ``until(job)`` holds; fails with the logs after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while not until(job):
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job['state']} {job['progress']}: {self.log_text()[-4000:]}")
            time.sleep(0.2)
            job = self.job(job_id)
        return job

    def stop(self) -> None:
        for proc in [*self.workers, self.server]:
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.server]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        _delete_queue(self.queue)


def _delete_queue(queue: str) -> None:
    from kombu import Connection

    try:
        with Connection(BROKER_URL, connect_timeout=3) as conn:
            conn.default_channel.queue_delete(queue)
    except Exception:  # the queue was never declared
        pass


def queue_depth(queue: str) -> int:
    """Messages ready in ``queue`` (RabbitMQ's own count, independent of the job table)."""
    from kombu import Connection

    with Connection(BROKER_URL, connect_timeout=3) as conn:
        _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
        return int(count)


def make_stack(root: Path, database_url: str, sessions: int = 40, **env: str) -> Stack:
    """Simulate ``sessions`` sessions into PostgreSQL + a folder store; the stack's environment."""
    from simdata import simulate_into

    from heimdall.services import open_services
    from heimdall.settings import Settings

    require_broker_and_redis()
    data_dir = root / "heimdall-data"
    services = open_services(Settings(data_dir=data_dir, database_url=database_url))
    try:
        simulate_into(services, sessions, seed=11)
    finally:
        services.close()
    token = secrets.token_urlsafe(24)
    queue = f"heimdall-test-{uuid.uuid4().hex[:12]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HEIMDALL_", "MLFLOW_", "AWS_"))}
    base.update(
        {
            "HEIMDALL_DATA_DIR": str(data_dir),
            "HEIMDALL_DATABASE_URL": database_url,
            "HEIMDALL_API_TOKEN": token,
            "HEIMDALL_BROKER_URL": BROKER_URL,
            "HEIMDALL_RESULT_BACKEND": RESULT_BACKEND,
            "HEIMDALL_JOB_QUEUE": queue,
            "HEIMDALL_JOB_HEARTBEAT_S": "0.5",
            "HEIMDALL_JOB_LEASE_S": "4",
            "HEIMDALL_CONNECT_TIMEOUT_S": "2",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            **env,
        }
    )
    return Stack(root=root, env=base, token=token, queue=queue)
