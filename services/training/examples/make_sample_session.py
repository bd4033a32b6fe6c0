"""Regenerate ``sample_session.npz``: one simulated session of scenario nw-italy-v2 (7 receivers, 0.5 s).

    python services/training/examples/make_sample_session.py [--seed 2024] [--out sample_session.npz]

The file holds what the inference service receives for one session — calibrated complex baseband IQ
per receiver (sqrt(mW) units, 12.5 kHz) with each receiver's station id — plus the simulator's truth
(transmitter latitude/longitude) so the example can report its error. No pickled objects: it loads
with ``numpy.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import simulate_sessions
from heimdall.stations import NW_ITALY_STATIONS

HERE = Path(__file__).resolve().parent


def make_sample(seed: int = 2024, index: int = 0, duration_s: float = 0.5) -> dict[str, np.ndarray]:
    scenario = load_scenario("nw-italy-v2")
    sim = next(iter(simulate_sessions(scenario, 1, seed, duration_s, start=index)))
    names = {s.id: s.name for s in NW_ITALY_STATIONS}
    receivers = sorted(sim.receivers, key=lambda r: r.station_id)
    return {
        "session_id": np.array(str(sim.session_id)),
        "scenario": np.array(scenario.name),
        "sample_rate_hz": np.array(float(sim.sample_rate_hz)),
        "frequency_hz": np.array(float(sim.frequency_hz)),
        "station_ids": np.array([r.station_id for r in receivers], dtype=np.int64),
        "station_names": np.array([names.get(r.station_id, str(r.station_id)) for r in receivers]),
        "iq": np.stack([np.asarray(r.iq, dtype=np.complex64) for r in receivers]),
        "heard": np.array([r.heard for r in receivers], dtype=bool),
        "truth_latitude": np.array(float(sim.latitude)),
        "truth_longitude": np.array(float(sim.longitude)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=HERE / "sample_session.npz")
    args = parser.parse_args()
    sample = make_sample(args.seed, args.index, args.duration)
    np.savez(args.out, **sample)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB): session {sample['session_id']}")


if __name__ == "__main__":
    main()
