"""Path loss and the noiseless mean received-power field against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heimdall.geo import haversine_m
from heimdall.simulate import (
    MeasurementModel,
    Scenario,
    World,
    draw_candidates,
    mean_received_power_dbm,
    measurement_model,
    path_loss_db,
    received_power_field_db,
)

C = 299_792_458.0


def pinned_path_loss(d_m: np.ndarray, f_hz: float) -> np.ndarray:
    """docs/SIMULATOR.md: free space to 1 km, then FSPL(1 km) + 35 dB/decade; d clamped to >= 1 m."""
    d = np.maximum(np.asarray(d_m, float), 1.0)
    fspl = 20 * np.log10(4 * math.pi * d * f_hz / C)
    beyond = 20 * math.log10(4 * math.pi * 1000.0 * f_hz / C) + 35 * np.log10(d / 1000.0)
    return np.where(d <= 1000.0, fspl, beyond)


def bilinear(world: World, enu: np.ndarray, band: int) -> np.ndarray:
    """Independent bilinear interpolation of the world's shadowing grid: (N, R)."""
    g = world.shadowing_grid_db[:, band].astype(float)
    fx = (enu[:, 0] - world.grid_origin_enu[0]) / world.grid_spacing_m
    fy = (enu[:, 1] - world.grid_origin_enu[1]) / world.grid_spacing_m
    ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
    wx, wy = fx - ix, fy - iy
    v = (
        g[:, iy, ix] * (1 - wx) * (1 - wy) + g[:, iy, ix + 1] * wx * (1 - wy)
        + g[:, iy + 1, ix] * (1 - wx) * wy + g[:, iy + 1, ix + 1] * wx * wy
    )  # fmt: skip
    return v.T


def deterministic_part(world: World, lat: np.ndarray, lon: np.ndarray, band: int) -> np.ndarray:
    """0 dBm transmitter, no shadowing: G_tx + G_rx + offset − PL(haversine d) − clutter, (N, R)."""
    d = haversine_m(lat[:, None], lon[:, None], world.receiver_latitude[None], world.receiver_longitude[None])
    pl = pinned_path_loss(d, world.band_frequencies_hz[band])
    return 0.0 + 2.0 + world.gain_offset_db[None, :] - pl - 10.0


def uniform_positions(world: World, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = world.area
    enu = np.column_stack([rng.uniform(a.east_min, a.east_max, n), rng.uniform(a.north_min, a.north_max, n)])
    lat, lon = world.frame.to_latlon(enu)
    return enu, lat, lon


def test_path_loss_formula() -> None:
    d = np.array([0.0, 0.5, 1.0, 10.0, 999.0, 1000.0, 1001.0, 5000.0, 1e5])
    for f in (145.5e6, 433.5e6):
        np.testing.assert_allclose(path_loss_db(d, f), pinned_path_loss(d, f), atol=1e-9)
    # hand values: FSPL(1 km, 145.5 MHz) = 75.70 dB; 10 km adds 35 dB
    assert path_loss_db(1000.0, 145.5e6) == pytest.approx(75.70, abs=0.01)
    assert path_loss_db(10_000.0, 145.5e6) == pytest.approx(110.70, abs=0.01)
    assert path_loss_db(1000.0, 433.5e6) - path_loss_db(1000.0, 145.5e6) == pytest.approx(
        20 * math.log10(433.5 / 145.5)
    )


def test_field_decomposes_exactly(world: World) -> None:
    _, lat, lon = uniform_positions(world, 5000, seed=2)
    for band in (0, 1):
        want = deterministic_part(world, lat, lon, band) + bilinear(world, world.frame.to_enu(lat, lon), band)
        np.testing.assert_allclose(received_power_field_db(world, lat, lon, band), want, atol=1e-4)
        p = np.linspace(30.0, 47.0, lat.size)
        got = mean_received_power_dbm(world, lat, lon, band, p)
        assert got.shape == (lat.size, 7)
        np.testing.assert_allclose(got, want + p[:, None], atol=1e-4)
    per_point = received_power_field_db(world, lat[:4], lon[:4], np.array([0, 1, 1, 0]))
    np.testing.assert_allclose(per_point[1], received_power_field_db(world, lat[1], lon[1], 1)[0])


def test_mean_power_vs_distance_follows_pinned_law(world: World) -> None:
    """Averaged over uniform positions the static shadowing vanishes: residuals ≈ 0 in each distance bin."""
    _, lat, lon = uniform_positions(world, 30_000, seed=3)
    d = haversine_m(lat[:, None], lon[:, None], world.receiver_latitude[None], world.receiver_longitude[None])
    for band in (0, 1):
        resid = received_power_field_db(world, lat, lon, band) - deterministic_part(world, lat, lon, band)
        assert abs(resid.mean()) < 1.0
        for lo, hi in [(5e3, 20e3), (20e3, 50e3), (50e3, 100e3), (100e3, 300e3)]:
            sel = (d >= lo) & (d < hi)
            assert sel.sum() > 1000
            assert abs(resid[sel].mean()) < 1.0, (band, lo, hi, resid[sel].mean())


def test_session_mean_power_adds_dynamic_shadowing(scenario: Scenario, world: World) -> None:
    """s_r of every candidate link (no censoring) = noiseless field + P_tx + N(0, 3²) independent."""
    cands = draw_candidates(scenario, seed=5, slots=range(3000))
    lat = np.array([c.latitude for c in cands])
    lon = np.array([c.longitude for c in cands])
    band = np.array([c.band_index for c in cands])
    p = np.array([c.tx_power_dbm for c in cands])
    s = np.stack([c.mean_power_dbm for c in cands])
    enu = world.frame.to_enu(lat, lon)
    det, shadow = np.empty_like(s), np.empty_like(s)
    for b in (0, 1):
        sel = band == b
        det[sel], shadow[sel] = deterministic_part(world, lat[sel], lon[sel], b), bilinear(world, enu[sel], b)
    eps = s - p[:, None] - det - shadow
    assert abs(eps.mean()) < 0.1
    assert abs(eps.std() - 3.0) < 0.1
    assert np.max(np.abs(np.corrcoef(eps.T) - np.eye(7))) < 0.1
    # mean received power vs distance: P_tx-corrected s_r follows the pinned law on average (all links)
    d = haversine_m(lat[:, None], lon[:, None], world.receiver_latitude[None], world.receiver_longitude[None])
    resid = s - p[:, None] - det
    for lo, hi in [(20e3, 50e3), (50e3, 100e3), (100e3, 300e3)]:
        sel = (d >= lo) & (d < hi)
        assert abs(resid[sel].mean()) < 1.0


def test_measurement_model_exposes_the_oracle_inputs(world: World) -> None:
    mm = measurement_model(world)
    assert isinstance(mm, MeasurementModel)
    assert mm.dynamic_shadowing_sigma_db == 3.0 and mm.detection_snr_db == 6.0 and mm.min_receivers_heard == 3
    np.testing.assert_allclose(mm.noise_floor_dbm, -174 + 10 * math.log10(12_500) + 6)
    np.testing.assert_allclose(mm.detection_threshold_dbm, mm.noise_floor_dbm + 6.0)
    assert mm.tx_power_dbm_min == pytest.approx(30.0)
    assert mm.tx_power_dbm_max == pytest.approx(10 * math.log10(50_000.0))
    assert mm.area == world.area and mm.receiver_ids == tuple(range(1, 8))
    assert mm.band_index(433.5e6) == 1 and mm.band_index(145.5e6) == 0
    enu, lat, lon = uniform_positions(world, 100, seed=4)
    np.testing.assert_allclose(mm.field_db(lat, lon, 0), received_power_field_db(world, lat, lon, 0))
    want = received_power_field_db(world, lat, lon, 1)
    np.testing.assert_allclose(mm.field_db_enu(enu, 1), want, atol=1e-6)


@given(
    d1=st.floats(0.0, 5e5, allow_nan=False),
    d2=st.floats(0.0, 5e5, allow_nan=False),
    f=st.sampled_from([145.5e6, 433.5e6]),
)
def test_path_loss_is_monotone_and_continuous(d1: float, d2: float, f: float) -> None:
    lo, hi = sorted((d1, d2))
    assert path_loss_db(lo, f) <= path_loss_db(hi, f) + 1e-9
    below, above = float(path_loss_db(1000.0 - 1e-6, f)), float(path_loss_db(1000.0 + 1e-6, f))
    assert below == pytest.approx(above, abs=1e-6)
