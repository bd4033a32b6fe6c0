"""`nw-italy-v1` stays loadable unchanged for reproducibility: its output is pinned value by value.

The reference (`v1_reference.json`, 40 sessions of seed 7) holds every value a session row, measurement
row or note is made of, and per recording its energy, its projection on a fixed random vector and its
first samples. Any change to v1's draws, rendering, heard rule or rows moves them.

Values are compared to 1e-6 relative (1e-6 dB), not bit for bit: numpy's vectorised exp/log/sin differ
in the last bits between CPUs (AVX-512 or AVX2 kernels), and the pin is of the simulator, not of the
machine. History: a bitwise digest of the output from before `nw-italy-v2` existed held on AVX-512
machines up to commit 0bbf8ac; this reference is that commit's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heimdall.ingest.simulated import session_record
from heimdall.simulate import load_scenario, simulate_sessions

REFERENCE = Path(__file__).with_name("v1_reference.json")
PROBE = np.random.default_rng(20260101).standard_normal(6250)  # the projection vector (0.5 s at 12.5 kHz)


def v1_values(n: int = 40, seed: int = 7) -> list[dict]:
    """What the reference pins, for the first ``n`` sessions of ``seed``."""
    scenario = load_scenario("nw-italy-v1")
    out = []
    for s in simulate_sessions(scenario, n, seed):
        exact = [s.index, str(s.session_id), s.start.isoformat(), s.band_index, s.content]
        exact.append(session_record(s, scenario.name, seed).notes)
        floats = [s.latitude, s.longitude, s.tx_power_dbm, s.frequency_hz, s.doppler_hz, s.duration_s]
        receivers = []
        for r in s.receivers:
            iq = np.asarray(r.iq, np.complex128)
            proj = iq @ PROBE[: iq.size]
            receivers.append(
                {
                    "exact": [r.station_id, bool(r.heard), int(iq.size)],
                    "db": [r.signal_strength_db, r.snr_db, r.mean_power_dbm, r.rician_k_db],
                    "values": [r.frequency_offset_hz, float(np.sum(np.abs(iq) ** 2)), proj.real, proj.imag]
                    + [float(v) for z in iq[:4] for v in (z.real, z.imag)],
                }
            )
        out.append({"exact": exact, "floats": [*floats, float(s.sample_rate_hz)], "receivers": receivers})
    return out


def test_v1_output_matches_the_pinned_values() -> None:
    reference = json.loads(REFERENCE.read_text())
    got = v1_values()
    assert len(got) == len(reference)
    for g, want in zip(got, reference, strict=True):
        assert g["exact"] == want["exact"]
        np.testing.assert_allclose(g["floats"], want["floats"], rtol=1e-9)
        assert len(g["receivers"]) == len(want["receivers"])
        for a, b in zip(g["receivers"], want["receivers"], strict=True):
            assert a["exact"] == b["exact"]
            np.testing.assert_allclose(a["db"], b["db"], rtol=0, atol=1e-6)
            np.testing.assert_allclose(a["values"], b["values"], rtol=1e-6, atol=1e-12)


if __name__ == "__main__":  # regenerate the reference (only for an intended change of v1)
    REFERENCE.write_text(json.dumps(v1_values(), indent=0))
