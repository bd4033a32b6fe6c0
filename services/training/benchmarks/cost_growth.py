"""Cost growth: time and peak memory of each pipeline stage against the number of sessions.

Run: .venv/bin/python services/training/benchmarks/cost_growth.py [--kind power|iq]
     [--sizes 1000 10000 100000] [--work DIR] [--workers 2] [--scenario nw-italy-v2]

Every stage is the real command in its own process, on a fresh embedded store (SQLite + folder) per size:

* ``simulate``: ``heimdall simulate --scenario S --sessions N --workers W`` (``--power-only`` for
  kind power: rows with power and SNR, no IQ, as an RSS network stores them);
* ``feature build (cold)`` / ``(warm)``: ``load_seconds`` of two ``heimdall train --epochs 1`` runs, the
  first with an empty feature store, the second reading the one the first built;
* ``one epoch``: that run's ``fit_seconds`` (one training epoch and its validation pass);
* ``train (whole command)``: the first run's wall time: load, epoch, radio map fit and tuning, champion,
  calibration, ONNX export and parity check, report;
* ``evaluate``: ``heimdall evaluate --no-outage`` on the test split: every baseline and the Bayes oracle.

Peak memory is the largest resident set of the command's processes (``wait4``'s ``ru_maxrss``). The growth
exponent is the least-squares slope of log(value) against log(N) over the sizes run. Prints a Markdown
table; ``--json FILE`` also writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine
from _sections import write_section

SCENARIO = "nw-italy-v2"  # --scenario
HEIMDALL = [str(Path(sys.executable).with_name("heimdall"))]  # the console script of this venv


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command; a failure stops the benchmark with its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0


def measure_size(
    n: int,
    kind: str,
    work: Path,
    workers: int,
    scenario: str = SCENARIO,
    localizer: str | None = None,
    oracle: bool = True,
) -> dict[str, tuple[float, float]]:
    """Every stage's (seconds, peak MiB) for ``n`` sessions of ``kind`` in a fresh store under ``work``."""
    variant = (f"-{localizer}" if localizer else "") + ("" if oracle else "-no-oracle")
    data = work / f"{kind}-{n}{variant}"
    shutil.rmtree(data, ignore_errors=True)
    env = {**os.environ, "HEIMDALL_DATA_DIR": str(data)}
    power = kind == "power"
    label = f"sim:{scenario}:power" if power else f"sim:{scenario}"
    sim = [*HEIMDALL, "simulate", "--scenario", scenario, "--sessions", str(n), "--workers", str(workers)]
    out: dict[str, tuple[float, float]] = {}
    out["simulate"] = run_measured([*sim, "--no-progress", *(["--power-only"] if power else [])], env)
    reports = []
    for run in ("cold", "warm"):
        train = [*HEIMDALL, "train", "--dataset", label, "--epochs", "1", "--no-tracking", "--no-progress"]
        train += ["--localizer", localizer] if localizer is not None else []
        wall, peak = run_measured([*train, "--output-dir", str(data / f"run-{run}")], env)
        reports.append((wall, peak, json.loads((data / f"run-{run}" / "report.json").read_text())))
    (wall, peak, cold), (_, peak_w, warm) = reports
    out["feature build (cold)"] = (cold["timing"]["load_seconds"], peak)
    out["feature build (warm)"] = (warm["timing"]["load_seconds"], peak_w)
    out["one epoch"] = (cold["timing"]["fit_seconds"], peak)
    out["train (whole command)"] = (wall, peak)
    evaluate = [*HEIMDALL, "evaluate", "--model", str(data / "run-cold"), "--split", "test", "--no-outage"]
    evaluate += [] if oracle else ["--no-oracle"]
    out["evaluate (baselines + oracle)" if oracle else "evaluate (baselines)"] = run_measured(
        [*evaluate, "--output-dir", str(data / "eval")], env
    )
    return out


def exponent(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(size): 1 = linear growth."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-3)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def _seconds(t: float) -> str:
    return f"{t:.2f}" if t < 1 else f"{t:.1f}"


def table(kind: str, figures: dict[int, dict[str, tuple[float, float]]]) -> str:
    sizes = sorted(figures)
    stages = list(figures[sizes[0]])
    head = " | ".join(f"{n:,} s | {n:,} MiB" for n in sizes)
    lines = [f"| {kind} sessions: stage | {head} | exponent (time) | exponent (memory) |"]
    lines.append("|---" * (1 + 2 * len(sizes) + 2) + "|")
    for stage in stages:
        cells = " | ".join(f"{_seconds(figures[n][stage][0])} | {figures[n][stage][1]:.0f}" for n in sizes)
        t_exp = exponent(sizes, [figures[n][stage][0] for n in sizes]) if len(sizes) > 1 else float("nan")
        m_exp = exponent(sizes, [figures[n][stage][1] for n in sizes]) if len(sizes) > 1 else float("nan")
        lines.append(f"| {stage} | {cells} | {t_exp:.2f} | {m_exp:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("power", "iq"), default="power")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "out" / "cost-growth")
    ap.add_argument("--scenario", default=SCENARIO, help="shipped scenario name")
    ap.add_argument("--workers", type=int, default=2, help="heimdall simulate --workers")
    ap.add_argument(
        "--localizer", choices=("auto", "network", "radiomap"), default=None, help="heimdall train"
    )
    ap.add_argument("--no-oracle", action="store_true", help="evaluate without the Bayes oracle")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    ap.add_argument("--results", action="store_true", help="also write the table into RESULTS.md")
    args = ap.parse_args()
    figures: dict[int, dict[str, tuple[float, float]]] = {}
    for n in args.sizes:
        figures[n] = measure_size(
            n, args.kind, args.work, args.workers, args.scenario, args.localizer, not args.no_oracle
        )
        print(f"{n} {args.kind} sessions: {json.dumps(figures[n])}", file=sys.stderr, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({str(n): f for n, f in figures.items()}, indent=2))
    text = f"{table(f'{args.scenario} {args.kind}', figures)}\n\nmachine: {machine()}"
    print(text)
    if args.results:
        command = " ".join(["services/training/benchmarks/cost_growth.py", *sys.argv[1:]])
        what = "power-only sessions (no IQ)" if args.kind == "power" else "sessions with IQ"
        shipped = f", `--localizer {args.localizer}`" if args.localizer else ""
        title = f"## Cost growth: {what}, {args.scenario}{shipped}{', no oracle' if args.no_oracle else ''}"
        variant = (f"-{args.localizer}" if args.localizer else "") + ("-no-oracle" if args.no_oracle else "")
        write_section(
            f"cost-growth-{args.kind}{variant}", f"{title}\n\n`.venv/bin/python {command}`\n\n{text}"
        )


if __name__ == "__main__":
    main()
