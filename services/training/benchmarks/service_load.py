"""The job service under load: 50 concurrent submissions, then status reads at 200 requests/s for 10 s
while a training runs; prints a table of latencies (p50/p99) and what was lost (nothing, or the bar fails).

    python benchmarks/service_load.py [--submissions 50] [--rate 200] [--seconds 10]
                                      [--server-workers N] [--job-nice N]
                                      [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

It starts what production runs: `heimdall serve` (uvicorn) and one `heimdall worker` (Celery) on the
machine's RabbitMQ and Redis, with a fresh PostgreSQL database (dropped at the end) and a private queue.
The load generator runs on the same machine (its threads compete with the server and the training for
the same cores: the figures are an upper bound on what a remote client would see). Reads are open-loop:
request i is sent at t0 + i/rate whatever the previous ones took, over keep-alive connections.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from _sections import write_section

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
HEIMDALL = str(Path(sys.executable).with_name("heimdall"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.headers = (
            port,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        self.local = threading.local()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        """(status, parsed body, seconds) — one retry on a connection the server closed."""
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            t0 = time.perf_counter()
            try:
                conn.request(method, path, json.dumps(body) if body is not None else None, self.headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, json.loads(data or b"null"), time.perf_counter() - t0
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [HEIMDALL, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} within {timeout:g} s")


def _queue_depth(queue: str) -> int:
    from kombu import Connection

    with Connection(BROKER, connect_timeout=3) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True)[1])


def _reads(client: Client, job_id: str, rate: float, seconds: float) -> dict[str, Any]:
    """GET the job ``rate`` times a second for ``seconds``, open-loop (request i due at t0 + i/rate)."""
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.2

    def read(i: int) -> tuple[int, float, float]:
        due = t0 + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        late = time.perf_counter() - due
        status, _, took = client.call("GET", f"/api/v1/jobs/{job_id}")
        return status, took, late

    with cf.ThreadPoolExecutor(16) as pool:
        out = list(pool.map(read, range(n)))
    wall = time.perf_counter() - t0
    return {
        "n": n,
        "rate": rate,
        "achieved": n / wall,
        "errors": sum(s != 200 for s, _, _ in out),
        "lat": [t for _, t, _ in out],
        "late": sum(d > 0.010 for _, _, d in out),
    }


def _rows(name: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    lat, ms = r["lat"], 1000.0
    return [
        (name, f"{r['n']} at {r['rate']:g}/s target, {r['achieved']:.0f}/s achieved, {r['errors']} errors"),
        (
            "  p50 / p99 / max",
            f"{statistics.median(lat) * ms:.1f} / {_percentile(lat, 0.99) * ms:.1f} / {max(lat) * ms:.1f} ms",
        ),
        ("  sent > 10 ms late", f"{r['late']} (the load generator behind its schedule)"),
    ]


def run(ns: argparse.Namespace, root: Path, database_url: str) -> list[tuple[str, str]]:
    from heimdall.ingest.simulated import session_record
    from heimdall.services import open_services
    from heimdall.settings import Settings
    from heimdall.simulate.scenario import load_scenario
    from heimdall.simulate.session import simulate_sessions
    from heimdall.storage.recordings import write_sessions

    data_dir = root / "heimdall-data"
    services = open_services(Settings(data_dir=data_dir, database_url=database_url))
    scenario = load_scenario("nw-italy-v1")
    records = [session_record(s, scenario.name, 11) for s in simulate_sessions(scenario, 40, 11, 0.1)]
    write_sessions(services.db, services.store, services.settings.raw_iq_bucket, records)
    services.close()
    token, queue, port = secrets.token_urlsafe(24), f"heimdall-bench-{uuid.uuid4().hex[:10]}", _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEIMDALL_", "MLFLOW_", "AWS_"))}
    env.update(
        HEIMDALL_DATA_DIR=str(data_dir),
        HEIMDALL_DATABASE_URL=database_url,
        HEIMDALL_API_TOKEN=token,
        HEIMDALL_JOB_QUEUE=queue,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    if ns.job_nice is not None:
        env["HEIMDALL_JOB_NICE"] = str(ns.job_nice)
    serve = ["serve", "--port", str(port), "--workers", str(ns.server_workers)]
    procs = [_spawn(serve, env, root / "serve.log")]
    client = Client(port, token)
    try:
        _wait_for(lambda: client.call("GET", "/health")[0] == 200, 60, "the server did not answer")
        _, probe, _ = client.call("POST", "/api/v1/jobs", {"epochs": 1})
        client.call("POST", f"/api/v1/jobs/{probe['id']}/cancel")
        idle = _reads(client, probe["id"], ns.rate, min(ns.seconds, 5.0))  # the same reads, no worker yet
        procs.append(_spawn(["worker"], env, root / "worker.log"))
        _wait_for(lambda: " ready." in (root / "worker.log").read_text(), 90, "the worker was not ready")
        long = {"epochs": 100_000, "patience": 100_000, "batch_size": 4, "seed": 1}
        _, training, _ = client.call("POST", "/api/v1/jobs", long)

        def epoch_done() -> bool:
            job = client.call("GET", f"/api/v1/jobs/{training['id']}")[1]
            return job["state"] == "running" and (job["progress"]["epoch"] or 0) >= 1

        _wait_for(epoch_done, 180, "the training did not start")

        # 1. concurrent submissions: every one answered 202, recorded as queued, and in RabbitMQ
        config = {"epochs": 2, "batch_size": 16, "seed": 2}
        with cf.ThreadPoolExecutor(ns.submissions) as pool:
            barrier = threading.Barrier(ns.submissions)

            def submit(_: int) -> tuple[int, Any, float]:
                barrier.wait()
                return client.call("POST", "/api/v1/jobs", config)

            results = list(pool.map(submit, range(ns.submissions)))
        ok_ids = {body["id"] for status, body, _ in results if status == 202}
        listed = client.call("GET", f"/api/v1/jobs?state=queued&limit={ns.submissions + 10}")[1]
        queued = {j["id"] for j in listed} & ok_ids
        depth = _queue_depth(queue)
        sub_lat = [t for _, _, t in results]

        # 2. open-loop status reads while the training runs
        busy = _reads(client, training["id"], ns.rate, ns.seconds)
        still = client.call("GET", f"/api/v1/jobs/{training['id']}")[1]
        for job_id in [training["id"], *ok_ids]:
            client.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        from kombu import Connection

        with Connection(BROKER, connect_timeout=3) as conn:
            conn.default_channel.queue_delete(queue)
    ms = 1000.0
    sub_q = (_percentile(sub_lat, 0.5), _percentile(sub_lat, 0.99), max(sub_lat))
    return [
        ("concurrent submissions", str(ns.submissions)),
        ("answered 202", str(sum(s == 202 for s, _, _ in results))),
        ("recorded queued (GET /jobs)", str(len(queued))),
        ("messages in RabbitMQ", f"{depth} (the running job's message is unacked, not counted)"),
        ("lost", str(ns.submissions - len(queued))),
        ("submission p50 / p99 / max", "{:.1f} / {:.1f} / {:.1f} ms".format(*(x * ms for x in sub_q))),
        *_rows("reads, no training", idle),
        *_rows("reads, training running", busy),
        ("training during the reads", f"{still['state']}, epoch {still['progress']['epoch']}"),
        ("server processes", str(ns.server_workers)),
        ("training niceness", str(ns.job_nice) if ns.job_nice is not None else "default (10)"),
        ("machine", machine()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--server-workers", type=int, default=1, help="heimdall serve --workers")
    parser.add_argument("--job-nice", type=int, default=None, help="HEIMDALL_JOB_NICE of the worker")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--results", action="store_true", help="also write the table into RESULTS.md")
    ns = parser.parse_args()
    import psycopg

    name = f"heimdall_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ns.admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="heimdall-load-") as tmp:
            rows = run(ns, Path(tmp), ns.admin_url.rpartition("/")[0] + "/" + name)
    finally:
        with psycopg.connect(ns.admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {key:<{width}} | {value} |" for key, value in rows]
    text = "\n".join(lines)
    print(text)
    if ns.results:
        command = " ".join(["services/training/benchmarks/service_load.py", *sys.argv[1:]])
        title = "## Job service under load (the platform's bar: API answers < 100 ms)"
        write_section("service-load", f"{title}\n\n`.venv/bin/python {command}`\n\n{text}")


if __name__ == "__main__":
    main()
