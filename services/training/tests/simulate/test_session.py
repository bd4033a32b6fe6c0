"""Sessions: determinism, the keep/hear rules, measured values, noise floor and the draw distributions."""

from __future__ import annotations

import math
import uuid
from datetime import UTC

import numpy as np
import pytest
import scipy.stats

from heimdall.simulate import Scenario, SimulatedSession, World, draw_candidates, simulate_sessions

NOISE_FLOOR_DBM = -174.0 + 10.0 * math.log10(12_500.0) + 6.0
NOISE_MW = 10 ** (NOISE_FLOOR_DBM / 10)


def _power(iq: np.ndarray) -> float:
    return float(np.mean(iq.real.astype(np.float64) ** 2 + iq.imag.astype(np.float64) ** 2))


def test_structure_and_truth(sessions: list[SimulatedSession], world: World) -> None:
    assert [s.index for s in sessions] == list(range(len(sessions)))
    for s in sessions:
        assert [r.station_id for r in s.receivers] == list(range(1, 8))
        assert s.frequency_hz == {0: 145.5e6, 1: 433.5e6}[s.band_index]
        assert s.content in ("voice", "ctcss_tone", "afsk1200")
        assert (s.duration_s, s.sample_rate_hz) == (0.5, 12_500.0)
        assert 0.0 <= s.doppler_hz <= 5.0 and 30.0 <= s.tx_power_dbm <= 47.0
        assert world.area.contains(s.enu)
        np.testing.assert_allclose(world.frame.to_enu(s.latitude, s.longitude), s.enu, atol=1e-3)
        assert s.start.tzinfo is UTC
        for r in s.receivers:
            assert r.iq.dtype == np.complex64 and r.iq.shape == (6250,) and not r.iq.flags.writeable
            assert abs(r.frequency_offset_hz) <= 50.0 and 0.0 <= r.rician_k_db <= 10.0
    ids = [s.session_id for s in sessions]
    assert len(set(ids)) == len(ids)
    assert ids[3] == uuid.uuid5(uuid.UUID("5b0c7a3e-2f4d-5e61-9a8b-7c6d5e4f3a21"), "nw-italy-v1/11/3")
    assert len({s.start for s in sessions}) == len(sessions)


def test_heard_iff_snr_above_threshold_and_keep_rule(sessions: list[SimulatedSession]) -> None:
    for s in sessions:
        for r in s.receivers:
            assert r.heard == (r.snr_db >= 6.0)
        assert s.n_heard >= 3
    heard = np.array([[r.heard for r in s.receivers] for s in sessions])
    assert 0.05 < (~heard).mean() < 0.6  # both outcomes occur


def test_measured_values_recompute_from_iq(sessions: list[SimulatedSession]) -> None:
    for s in sessions[:60]:
        for r in s.receivers:
            p = _power(r.iq)
            assert r.signal_strength_db == pytest.approx(10 * math.log10(p), abs=1e-4)
            assert r.snr_db == pytest.approx(10 * math.log10(max(p / NOISE_MW - 1, 1e-3)), abs=1e-3)


def test_noise_floor_of_noise_only_recordings(sessions: list[SimulatedSession]) -> None:
    deaf = [r for s in sessions for r in s.receivers if not r.heard]
    assert len(deaf) > 50
    levels = np.array([10 * math.log10(_power(r.iq)) for r in deaf])
    assert abs(levels.mean() - NOISE_FLOOR_DBM) < 0.5
    assert np.all(np.abs(levels - NOISE_FLOOR_DBM) < 0.5)
    assert max(r.snr_db for r in deaf) < 0.0  # noise only: far below the 6 dB threshold


def test_heard_power_reveals_the_session_mean_power(sessions: list[SimulatedSession]) -> None:
    """Fading only redistributes power: P̂ − N = 10^(s_r/10) up to the noise-estimate fluctuation."""
    heard = [r for s in sessions for r in s.receivers if r.heard]
    diffs = np.array([10 * math.log10(_power(r.iq) - NOISE_MW) - r.mean_power_dbm for r in heard])
    assert abs(diffs.mean()) < 0.02
    assert np.max(np.abs(diffs)) < 0.3
    # and a receiver hears iff s_r clears the threshold, but for a sliver of width ~0.1 dB
    s_r = np.array([r.mean_power_dbm for s in sessions for r in s.receivers])
    heard = np.array([r.heard for s in sessions for r in s.receivers])
    margin = s_r - (NOISE_FLOOR_DBM + 6.0)
    assert np.all(heard[margin > 0.2]) and not np.any(heard[margin < -0.2])


def test_determinism_and_independence_from_run_length(
    scenario: Scenario, sessions: list[SimulatedSession]
) -> None:
    again = list(simulate_sessions(scenario, 8, seed=11))
    shifted = list(simulate_sessions(scenario, 3, seed=11, start=5))
    for a, b in zip(again, sessions[:8], strict=True):
        assert a.session_id == b.session_id and a.start == b.start
        for name in ("latitude", "longitude", "tx_power_dbm", "content", "doppler_hz", "frequency_hz"):
            assert getattr(a, name) == getattr(b, name)
        for ra, rb in zip(a.receivers, b.receivers, strict=True):
            assert ra.iq.tobytes() == rb.iq.tobytes()
            for name in ("signal_strength_db", "snr_db", "heard", "frequency_offset_hz"):
                assert getattr(ra, name) == getattr(rb, name)
    for a, b in zip(shifted, sessions[5:8], strict=True):
        assert a.index == b.index and a.receivers[0].iq.tobytes() == b.receivers[0].iq.tobytes()
    other = list(simulate_sessions(scenario, 8, seed=12))
    assert all(a.latitude != b.latitude for a, b in zip(other, sessions[:8], strict=True))
    assert not {s.session_id for s in other} & {s.session_id for s in sessions}


def test_duration_override(scenario: Scenario) -> None:
    s = next(iter(simulate_sessions(scenario, 1, seed=3, duration_s=0.1)))
    assert s.duration_s == 0.1 and all(r.iq.shape == (1250,) for r in s.receivers)
    assert list(simulate_sessions(scenario, 0, seed=3)) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_sessions": -1},
        {"seed": -5},
        {"start": -1},
        {"duration_s": 0.0},
        {"duration_s": -0.5},
        {"duration_s": 0.01},  # 125 samples < 256
        {"duration_s": float("nan")},
    ],
)
def test_bad_arguments_raise_immediately(scenario: Scenario, kwargs: dict) -> None:
    args = {"n_sessions": 2, "seed": 1} | kwargs
    with pytest.raises(ValueError):
        simulate_sessions(scenario, **args)  # eager: no iteration needed


def test_candidate_draw_distributions(scenario: Scenario, world: World) -> None:
    """Candidate draws (before the keep rule, which favours positions near the network) match the spec."""
    cands = draw_candidates(scenario, seed=99, slots=range(4000))
    a = world.area
    east = np.array([c.enu[0] for c in cands])
    north = np.array([c.enu[1] for c in cands])
    assert scipy.stats.kstest(east, scipy.stats.uniform(a.east_min, a.width_m).cdf).pvalue > 0.01
    assert scipy.stats.kstest(north, scipy.stats.uniform(a.north_min, a.height_m).cdf).pvalue > 0.01
    watts = np.array([10 ** (c.tx_power_dbm / 10) / 1000 for c in cands])
    assert watts.min() >= 1.0 and watts.max() <= 50.0
    loguniform = scipy.stats.loguniform(1.0, 50.0)
    assert scipy.stats.kstest(watts, loguniform.cdf).pvalue > 0.01
    p433 = np.mean([c.band_index == 1 for c in cands])
    assert abs(p433 - 0.2) < 3 * math.sqrt(0.2 * 0.8 / len(cands))
    for content, p in scenario.transmitter.content.items():
        frac = np.mean([c.content == content for c in cands])
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / len(cands))
    fd = np.array([c.doppler_hz for c in cands])
    k = np.concatenate([c.rician_k_db for c in cands])
    off = np.concatenate([c.frequency_offset_hz for c in cands])
    assert scipy.stats.kstest(fd, scipy.stats.uniform(0, 5).cdf).pvalue > 0.01
    assert scipy.stats.kstest(k, scipy.stats.uniform(0, 10).cdf).pvalue > 0.01
    assert scipy.stats.kstest(off, scipy.stats.uniform(-50, 100).cdf).pvalue > 0.01
    eps = np.concatenate([c.dynamic_shadowing_db for c in cands])
    assert scipy.stats.kstest(eps / 3.0, "norm").pvalue > 0.01
