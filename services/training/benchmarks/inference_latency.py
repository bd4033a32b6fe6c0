"""ONNX inference latency: one session of 7 receivers from IQ in memory → position + ellipse.

Run: .venv/bin/python services/training/benchmarks/inference_latency.py --model models/model.onnx
Times OnnxLocalizer.predict (ONNX Runtime, one intra-op thread = one core) on batches of one,
including the feature graph; quotes p50/p90 over `--runs`. Target (docs/EVALUATION.md, Targets): p50 ≤ 5 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine

from heimdall.inference.localizer import OnnxLocalizer, ellipse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=500)
    args = ap.parse_args()
    loc = OnnxLocalizer(args.model, threads=1)
    if loc.input_kind != "iq":
        raise SystemExit(f"{args.model} takes {loc.input_kind}, not IQ")
    rng = np.random.default_rng(0)
    r, t = loc.n_receivers, int(loc.n_samples or 6250)
    iq = (3e-7 * (rng.standard_normal((1, r, 2, t)))).astype(np.float32)
    mask = np.ones((1, r), np.float32)
    for _ in range(30):
        loc.predict(iq, mask)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        pos, cov = loc.predict(iq, mask)
        loc.to_latlon(pos)  # the float64 lat/lon conversion is part of the answer
        ellipse(cov[0])
        times.append((time.perf_counter() - t0) * 1000)
    p50, p90 = np.percentile(times, [50, 90])
    size = args.model.stat().st_size
    print("| model | receivers × samples | p50 ms | p90 ms | size MB |\n|---|---|---|---|---|")
    print(f"| {args.model} | {r} × {t} | {p50:.2f} | {p90:.2f} | {size / 1e6:.2f} |")
    print(f"\nmachine: {machine()}, ONNX Runtime 1 intra-op thread, {args.runs} runs")


if __name__ == "__main__":
    main()
