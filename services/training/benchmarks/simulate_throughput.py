"""Simulated sessions per second (7 receivers × 0.5 s at 12.5 kHz) written into the local store.

Run: .venv/bin/python services/training/benchmarks/simulate_throughput.py [--sessions 1000] [--repeats 3]
     [--scenario nw-italy-v1|nw-italy-v2|FILE] [--workers 2]
With --workers, a last row times the whole ``heimdall simulate`` job (heimdall.jobs.simulate) with that
many processes, process start-up and each worker's world build included.
Each repeat simulates into a fresh SQLite database + folder (the embedded default), rows and IQ
objects included; the world is built once beforehand (it is cached per scenario in a process).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine

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


def run_job(scenario_name: str, n: int, seed: int, workers: int) -> float:
    from heimdall.jobs.simulate import SimulateRequest, simulate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate(
            SimulateRequest(scenario=scenario_name, sessions=n, seed=seed, workers=workers),
            Settings(data_dir=Path(tmp)),
        )
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenario", default="nw-italy-v1", help="shipped scenario name or a scenario YAML path")
    ap.add_argument("--workers", type=int, default=0, help="also time the simulate job with N processes")
    args = ap.parse_args()
    build_world(load_scenario(args.scenario))
    list(simulate_sessions(load_scenario(args.scenario), 2, 10_000))  # warm: lazy imports (features for v2)
    rows = []
    for label, write in (("simulate only", False), ("simulate + write (SQLite + folder)", True)):
        rates = [run_once(args.scenario, args.sessions, seed, write) for seed in range(args.repeats)]
        rows.append((label, statistics.median(rates), min(rates), max(rates)))
    if args.workers:
        rates = [run_job(args.scenario, args.sessions, seed, args.workers) for seed in range(args.repeats)]
        label = f"heimdall simulate --workers {args.workers} (SQLite + folder)"
        rows.append((label, statistics.median(rates), min(rates), max(rates)))
    stage = f"{args.scenario}: stage ({args.sessions} sessions × {args.repeats} runs)"
    print(f"| {stage} | median sessions/s | min | max |")
    print("|---|---|---|---|")
    for label, med, lo, hi in rows:
        print(f"| {label} | {med:.0f} | {lo:.0f} | {hi:.0f} |")
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
