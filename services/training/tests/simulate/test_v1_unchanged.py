"""`nw-italy-v1` stays loadable unchanged for reproducibility: its output is pinned byte for byte.

The digest was computed from the simulator *before* `nw-italy-v2` was added (40 sessions, seed 7): every
IQ array's bytes and every value a measurement row, session row or note is made of. Any change to v1's
draws, rendering, heard rule or rows changes it.
"""

from __future__ import annotations

import hashlib

from heimdall.ingest.simulated import session_record
from heimdall.simulate import load_scenario, simulate_sessions

V1_DIGEST = "ad8b53ddb46cb30ccb1ff32f5cbd21386e5c97e870fa1c4caf52148262bf4831"


def _digest(name: str, n: int, seed: int) -> str:
    scenario = load_scenario(name)
    h = hashlib.sha256()
    for s in simulate_sessions(scenario, n, seed):
        session_values = [
            s.index,
            str(s.session_id),
            s.start.isoformat(),
            s.latitude,
            s.longitude,
            s.tx_power_dbm,
            s.frequency_hz,
            s.band_index,
            s.content,
            s.doppler_hz,
            s.duration_s,
            s.sample_rate_hz,
        ]
        h.update(repr(session_values).encode())
        for r in s.receivers:
            h.update(r.iq.tobytes())
            row = [r.station_id, r.signal_strength_db, r.snr_db, r.frequency_offset_hz, r.heard]
            h.update(repr([*row, r.mean_power_dbm, r.rician_k_db]).encode())
        h.update(session_record(s, scenario.name, seed).notes.encode())
    return h.hexdigest()


def test_v1_output_is_byte_identical_to_the_pinned_digest() -> None:
    assert _digest("nw-italy-v1", 40, 7) == V1_DIGEST
