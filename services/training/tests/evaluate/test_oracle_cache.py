"""The oracle's disk cache: a hit is the posterior the oracle computes, any changed input is a miss."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from heimdall.data.network import ReceiverNetwork
from heimdall.evaluate.oracle_cache import OracleCache
from heimdall.evaluate.oracle_localizer import BayesOracleLocalizer
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import simulate_sessions


@pytest.fixture(scope="module")
def arrays() -> SimpleNamespace:
    """Four simulated nw-italy-v1 sessions as the rows the oracle reads (network = the scenario's)."""
    scenario = load_scenario("nw-italy-v1")
    rx = sorted(scenario.receivers, key=lambda r: r.id)
    network = ReceiverNetwork(
        tuple(r.id for r in rx), tuple(r.name for r in rx), tuple(r.latitude for r in rx),
        tuple(r.longitude for r in rx),
    )  # fmt: skip
    sims = list(simulate_sessions(scenario, seed=3, n_sessions=4))
    order = {sid: k for k, sid in enumerate(network.station_ids)}
    power = np.full((4, len(rx)), np.nan)
    snr = np.full((4, len(rx)), np.nan)
    for i, s in enumerate(sims):
        for r in s.receivers:
            power[i, order[r.station_id]] = r.signal_strength_db
            snr[i, order[r.station_id]] = r.snr_db
    return SimpleNamespace(
        network=network,
        datasets=("sim:nw-italy-v1",),
        scenario_sha256=np.array([scenario.content_sha256] * 4, dtype=object),
        scenarios={scenario.content_sha256: scenario},
        session_ids=[s.session_id for s in sims],
        row_power_db=power,
        row_snr_db=snr,
        frequency_hz=np.array([s.frequency_hz for s in sims]),
        sim_rician_k_db=None,
        sim_doppler_hz=None,
        has_spectrogram=False,
    )


def test_hits_are_the_computed_posteriors_and_skip_the_oracle(arrays, tmp_path: Path, monkeypatch) -> None:
    plain = BayesOracleLocalizer.for_arrays(arrays)
    cached = BayesOracleLocalizer.for_arrays(arrays)
    assert plain is not None and cached is not None
    cached.cache = OracleCache(tmp_path)
    idx = np.arange(4)
    want_pos, want_cov = plain.predict(arrays, idx)
    first = cached.predict(arrays, idx)
    calls: list[int] = []
    real = BayesOracleLocalizer._posteriors
    monkeypatch.setattr(
        BayesOracleLocalizer, "_posteriors", lambda self, a, i, d: calls.append(len(i)) or real(self, a, i, d)
    )
    second = cached.predict(arrays, idx)
    assert calls == []  # every session came from the cache
    for got in (first, second):
        np.testing.assert_allclose(got[0], want_pos, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[1], want_cov, rtol=1e-12)
    cached.predict(arrays, idx, drop=0)  # an outage row is another posterior
    assert calls == [4]


def test_changed_rows_and_damaged_entries_are_misses(arrays, tmp_path: Path) -> None:
    cache = OracleCache(tmp_path)
    oracle = BayesOracleLocalizer.for_arrays(arrays)
    assert oracle is not None
    oracle.cache = cache
    idx = np.arange(2)
    key = oracle._keys(arrays, idx, None)[0]
    oracle.predict(arrays, idx)
    assert cache.get(key) is not None
    louder = SimpleNamespace(**{**vars(arrays), "row_power_db": arrays.row_power_db + 1.0})
    assert oracle._keys(louder, idx, None)[0] != key
    assert oracle._keys(arrays, idx, 3)[0] != key
    path = next(tmp_path.rglob(f"{key}.bin"))
    path.write_bytes(b"garbage")
    assert cache.get(key) is None  # damaged: recomputed and rewritten by the next predict
    oracle.predict(arrays, idx)
    assert cache.get(key) is not None and np.allclose(
        cache.get(key)[0], oracle._posteriors(arrays, idx[:1], None)[0][0]
    )
