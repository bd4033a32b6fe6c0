"""`nw-italy-v2`: v1's world, Doppler from a drawn speed, unnormalised fading and blind SNR rows.

Every figure is checked against an independent computation: Doppler against v·f/c with the literal
speed of light, the fading residual against the exact Rice law of |h|², the rows against the features'
estimator run again on the stored IQ.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from heimdall.detection import HEARD_SNR_DB
from heimdall.features import FeatureConfig, receiver_scalars_batch
from heimdall.simulate import (
    Scenario,
    SimulatedSession,
    build_world,
    draw_candidates,
    load_scenario,
    rician_fading,
    simulate_sessions,
)

C = 299_792_458.0
N_SESSIONS = 60
SEED = 5


@pytest.fixture(scope="module")
def v2() -> Scenario:
    return load_scenario("nw-italy-v2")


@pytest.fixture(scope="module")
def v2_sessions(v2: Scenario) -> list[SimulatedSession]:
    return list(simulate_sessions(v2, N_SESSIONS, SEED))


def test_v2_is_v1_world_with_new_fading(v2: Scenario, scenario: Scenario) -> None:
    assert v2.receivers == scenario.receivers and v2.world_seed == scenario.world_seed
    assert v2.bands == scenario.bands and v2.propagation == scenario.propagation
    f = v2.fading
    assert (f.k_db_min, f.k_db_max, f.speed_kmh_min, f.speed_kmh_max) == (0.0, 10.0, 0.0, 15.0)
    assert f.normalise is False and f.doppler_hz_min is None and v2.snr_estimator == "blind"
    assert scenario.fading.normalise is True and scenario.snr_estimator == "known_noise"
    w1, w2 = build_world(scenario), build_world(v2)
    np.testing.assert_array_equal(w1.shadowing_grid_db, w2.shadowing_grid_db)
    np.testing.assert_array_equal(w1.gain_offset_db, w2.gain_offset_db)
    assert v2.content_sha256 != scenario.content_sha256


def test_doppler_is_speed_times_carrier_over_c(v2_sessions: list[SimulatedSession]) -> None:
    bands = set()
    for s in v2_sessions:
        assert s.speed_mps is not None and 0.0 <= s.speed_mps <= 15.0 / 3.6
        assert s.doppler_hz == pytest.approx(s.speed_mps * s.frequency_hz / C, rel=1e-12)
        bands.add(s.frequency_hz)
    assert bands == {145.5e6, 433.5e6}


def test_speed_is_uniform_0_to_15_kmh(v2: Scenario, scenario: Scenario) -> None:
    cands = draw_candidates(v2, 3, range(600))
    speed_kmh = np.array([c.speed_mps for c in cands]) * 3.6
    assert stats.kstest(speed_kmh, stats.uniform(0.0, 15.0).cdf).pvalue > 1e-3
    v1 = draw_candidates(scenario, 3, range(600))  # v1 keeps drawing the Doppler itself, 0-5 Hz
    assert all(c.speed_mps is None for c in v1)
    assert stats.kstest([c.doppler_hz for c in v1], stats.uniform(0.0, 5.0).cdf).pvalue > 1e-3


def test_unnormalised_fading_keeps_the_exact_rice_residual() -> None:
    """fd = 0: h is one Rice draw per recording, so 2(K+1)·mean|h|² ~ χ'²(2, 2K); its mean is 1."""
    rng = np.random.default_rng(0)
    n = 3000
    h = rician_fading(rng, 256, 12_500.0, np.zeros(n), 0.0, normalise=False)
    p = (np.abs(h.astype(np.complex128)) ** 2).mean(axis=1)
    k = 1.0  # K = 0 dB
    assert stats.kstest(2 * (k + 1) * p, stats.ncx2(df=2, nc=2 * k).cdf).pvalue > 1e-3
    assert abs(p.mean() - 1.0) < 4 * p.std() / np.sqrt(n)
    assert np.std(10 * np.log10(p)) > 4.0  # a frozen fade sits several dB off the local mean
    normalised = rician_fading(rng, 256, 12_500.0, np.zeros(50), 0.0)
    np.testing.assert_allclose((np.abs(normalised.astype(np.complex128)) ** 2).mean(axis=1), 1.0, rtol=1e-5)


def test_moving_transmitter_averages_the_fade_partly() -> None:
    """At 6 Hz over 0.5 s the residual still spreads (> 0.5 dB) but less than a frozen fade."""
    rng = np.random.default_rng(1)
    p = (np.abs(rician_fading(rng, 6250, 12_500.0, np.zeros(1500), 6.0, normalise=False)) ** 2).mean(1)
    assert abs(p.mean() - 1.0) < 4 * p.std() / np.sqrt(p.size)
    assert 0.5 < np.std(10 * np.log10(p)) < 4.0


def test_rows_are_the_blind_estimate_and_heard_is_the_one_rule(
    v2: Scenario, v2_sessions: list[SimulatedSession]
) -> None:
    world = build_world(v2)
    iq = np.stack([r.iq for s in v2_sessions for r in s.receivers])
    snr = receiver_scalars_batch(iq, FeatureConfig())[:, 2].astype(np.float64)
    rows = [r for s in v2_sessions for r in s.receivers]
    np.testing.assert_array_equal(snr, [r.snr_db for r in rows])
    heard = np.array([r.heard for r in rows])
    np.testing.assert_array_equal(heard, snr >= HEARD_SNR_DB)
    assert 0 < heard.mean() < 1 and all(s.n_heard >= v2.min_receivers_heard for s in v2_sessions)
    # unheard receivers store noise only: their power is the noise floor within 5 standard deviations
    noise_dbm = np.tile(world.noise_floor_dbm, len(v2_sessions))
    power = np.array([r.signal_strength_db for r in rows])
    tol_db = 10 * np.log10(1 + 5 / np.sqrt(iq.shape[1]))
    assert np.all(np.abs(power[~heard] - noise_dbm[~heard]) < tol_db)


def _digest(sessions: list[SimulatedSession]) -> str:
    h = hashlib.sha256()
    for s in sessions:
        h.update(repr([str(s.session_id), s.latitude, s.tx_power_dbm, s.doppler_hz, s.speed_mps]).encode())
        for r in s.receivers:
            h.update(r.iq.tobytes() + repr([r.snr_db, r.signal_strength_db, r.heard]).encode())
    return h.hexdigest()


def test_v2_is_deterministic_and_shardable(v2: Scenario, v2_sessions: list[SimulatedSession]) -> None:
    again = list(simulate_sessions(v2, 12, SEED))
    assert _digest(again) == _digest(v2_sessions[:12])
    shard = list(simulate_sessions(v2, 4, SEED, start=8))
    assert _digest(shard) == _digest(v2_sessions[8:12])
    assert _digest(list(simulate_sessions(v2, 12, SEED + 1))) != _digest(again)
