"""Feature extraction throughput: recordings/s (0.5 s at 12.5 kHz) for the numpy and torch paths.

Run: .venv/bin/python services/training/benchmarks/features_throughput.py [--recordings 4000] [--repeats 5]
Target (docs/EVALUATION.md, Targets): ≥ 2,000 recordings/s on 2 cores. Quotes the median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine

from heimdall.features import FeatureConfig, TorchFeatureExtractor, extract_features_batch, iq_complex_to_real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recordings", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, t = args.recordings, 6250
    iq = (3e-7 * (rng.standard_normal((n, t)) + 1j * rng.standard_normal((n, t)))).astype(np.complex64)
    config = FeatureConfig()
    extractor = TorchFeatureExtractor(config).eval()
    real = torch.from_numpy(iq_complex_to_real(iq))
    rows = []
    for label, run in (
        ("numpy: log-mel + MFCC + scalars", lambda: extract_features_batch(iq, config)),
        (
            "torch (ONNX graph ops), batch 256",
            lambda: [extractor(real[i : i + 256]) for i in range(0, n, 256)],
        ),
    ):
        rates = []
        with torch.inference_mode():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run()
                rates.append(n / (time.perf_counter() - t0))
        rows.append((label, statistics.median(rates), min(rates), max(rates)))
    print(
        f"| path ({n} recordings × {args.repeats} runs, torch threads {torch.get_num_threads()}) "
        "| median rec/s | min | max |"
    )
    print("|---|---|---|---|")
    for label, med, lo, hi in rows:
        print(f"| {label} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} |")
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
