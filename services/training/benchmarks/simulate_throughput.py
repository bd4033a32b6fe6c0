"""Simulated sessions per second (7 receivers × 0.5 s at 12.5 kHz) written into the local store.

Run: .venv/bin/python services/training/benchmarks/simulate_throughput.py [--sessions 1000] [--repeats 3]
     [--scenario nw-italy-v1|nw-italy-v2|FILE] [--workers 2]
With --workers, a last row times the whole ``heimdall simulate`` job (heimdall.jobs.simulate) with that
many processes, process start-up and each worker's world build included. With --postgres (a server URL,
e.g. postgresql://postgres@127.0.0.1:5432) that job also runs into PostgreSQL (a fresh database per
repeat) + S3 (moto's standalone server over HTTP on loopback, started here), ``--power-only`` too.
Each repeat simulates into a fresh SQLite database + folder (the embedded default), rows and IQ
objects included; the world is built once beforehand (it is cached per scenario in a process).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine
from _sections import write_section

from heimdall.ingest.simulated import session_record
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import simulate_sessions
from heimdall.simulate.world import build_world
from heimdall.storage.recordings import write_sessions
from heimdall.storage.scenarios import simulation_truth


def run_once(scenario_name: str, n: int, seed: int, write: bool) -> float:
    scenario = load_scenario(scenario_name)
    with tempfile.TemporaryDirectory() as tmp:
        services = open_services(Settings(data_dir=Path(tmp)))
        stream = simulate_sessions(scenario, n, seed)
        t0 = time.perf_counter()
        while batch := list(islice(stream, 64)):
            if write:
                records = [
                    dataclasses.replace(
                        session_record(s, scenario.name, seed), truth=simulation_truth(s, scenario)
                    )
                    for s in batch
                ]
                write_sessions(services.db, services.store, services.settings.raw_iq_bucket, records)
        elapsed = time.perf_counter() - t0
        services.close()
    return n / elapsed


def run_job(scenario_name: str, n: int, seed: int, workers: int, power_only: bool = False) -> float:
    from heimdall.jobs.simulate import SimulateRequest, simulate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate(
            SimulateRequest(
                scenario=scenario_name, sessions=n, seed=seed, workers=workers, power_only=power_only
            ),
            Settings(data_dir=Path(tmp)),
        )
        return n / (time.perf_counter() - t0)


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port; its URL. Ended with its process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def run_job_postgres(
    scenario_name: str, n: int, seed: int, workers: int, server: str, power_only: bool
) -> float:
    """The simulate job into a fresh PostgreSQL database on ``server`` + moto S3; sessions/s."""
    import psycopg

    from heimdall.jobs.simulate import SimulateRequest, simulate

    name = f"heimdall_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp, moto_s3() as endpoint:
            os.environ.update(
                AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench-secret",
                AWS_DEFAULT_REGION="us-east-1",
            )
            settings = Settings(data_dir=Path(tmp), database_url=f"{server}/{name}", object_store="s3://")
            request = SimulateRequest(
                scenario=scenario_name, sessions=n, seed=seed, workers=workers, power_only=power_only
            )
            t0 = time.perf_counter()
            simulate(request, settings)
            return n / (time.perf_counter() - t0)
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenario", default="nw-italy-v1", help="shipped scenario name or a scenario YAML path")
    ap.add_argument("--workers", type=int, default=0, help="also time the simulate job with N processes")
    ap.add_argument("--postgres", default=None, help="also into PostgreSQL at this server URL + moto S3")
    ap.add_argument("--results", action="store_true", help="also write the table into RESULTS.md (ingest)")
    args = ap.parse_args()
    build_world(load_scenario(args.scenario))
    list(simulate_sessions(load_scenario(args.scenario), 2, 10_000))  # warm: lazy imports (features for v2)
    rows = []
    for label, write in (("simulate only", False), ("simulate + write (SQLite + folder)", True)):
        rates = [run_once(args.scenario, args.sessions, seed, write) for seed in range(args.repeats)]
        rows.append((label, statistics.median(rates), min(rates), max(rates)))
    if args.workers:
        for power_only in (False, True):
            rates = [
                run_job(args.scenario, args.sessions, seed, args.workers, power_only)
                for seed in range(args.repeats)
            ]
            label = f"heimdall simulate --workers {args.workers}{' --power-only' if power_only else ''}"
            rows.append((f"{label} (SQLite + folder)", statistics.median(rates), min(rates), max(rates)))
    if args.workers and args.postgres:
        for power_only in (False, True):
            rates = [
                run_job_postgres(args.scenario, args.sessions, seed, args.workers, args.postgres, power_only)
                for seed in range(args.repeats)
            ]
            label = f"heimdall simulate --workers {args.workers}{' --power-only' if power_only else ''}"
            rows.append((f"{label} (PostgreSQL + S3)", statistics.median(rates), min(rates), max(rates)))
    stage = f"{args.scenario}: stage ({args.sessions} sessions × {args.repeats} runs)"
    lines = [f"| {stage} | median sessions/s | min | max |", "|---|---|---|---|"]
    lines += [f"| {label} | {med:.0f} | {lo:.0f} | {hi:.0f} |" for label, med, lo, hi in rows]
    text = "\n".join([*lines, "", f"machine: {machine()}"])
    print(text)
    if args.results:
        command = " ".join(["services/training/benchmarks/simulate_throughput.py", *sys.argv[1:]])
        title = f"## Ingest at scale, {args.scenario} (target ≥ 500 sessions/s into SQLite + folder)"
        write_section(f"ingest-{args.scenario}", f"{title}\n\n`.venv/bin/python {command}`\n\n{text}")


if __name__ == "__main__":
    main()
