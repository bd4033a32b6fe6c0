"""How long `heimdall --help` takes to answer: 10 fresh subprocesses, a table of median/min/max.

    python benchmarks/cli_startup.py [--runs N] [--command heimdall --help]

Each run is a new interpreter (``python -c "from heimdall.cli import app; app()" --help``), so import time
is all included; no timing belongs in the tests (tests/cli/test_console.py checks what gets imported).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time


def time_runs(args: list[str], runs: int) -> list[float]:
    cmd = [sys.executable, "-c", "from heimdall.cli import app; app()", *args]
    env = {**os.environ, "COLUMNS": "100"}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("args", nargs="*", default=["--help"], help="heimdall arguments (default --help)")
    ns = parser.parse_args()
    times = time_runs(ns.args, ns.runs)
    machine = (
        f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"
    )
    rows = [
        ("command", "heimdall " + " ".join(ns.args)),
        ("runs", str(ns.runs)),
        ("median", f"{statistics.median(times):.3f} s"),
        ("min", f"{min(times):.3f} s"),
        ("max", f"{max(times):.3f} s"),
        ("machine", machine),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
