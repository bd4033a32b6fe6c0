"""The world: frame, area, noise floors, gain offsets and the static shadowing field's statistics."""

from __future__ import annotations

import math

import numpy as np

from heimdall.geo import LocalFrame
from heimdall.simulate import Scenario, World, build_world, simulate_sessions
from heimdall.simulate import world as world_module
from heimdall.simulate.world import clear_world_cache
from heimdall.stations import NW_ITALY_STATIONS

SIGMA_DB, CORR_LEN_M, BAND_RHO = 7.0, 4000.0, 0.7


def test_frame_receivers_and_area(world: World) -> None:
    lats = [s.latitude for s in NW_ITALY_STATIONS]
    lons = [s.longitude for s in NW_ITALY_STATIONS]
    assert math.isclose(world.frame.origin_lat, float(np.mean(lats)))
    assert math.isclose(world.frame.origin_lon, float(np.mean(lons)))
    enu = LocalFrame(float(np.mean(lats)), float(np.mean(lons))).to_enu(lats, lons)
    np.testing.assert_allclose(world.receiver_enu, enu, atol=1e-6)
    a = world.area
    assert math.isclose(a.east_min, enu[:, 0].min() - 20_000)
    assert math.isclose(a.east_max, enu[:, 0].max() + 20_000)
    assert math.isclose(a.north_min, enu[:, 1].min() - 20_000)
    assert math.isclose(a.north_max, enu[:, 1].max() + 20_000)
    assert world.receiver_ids == tuple(range(1, 8))


def test_noise_floor_and_gain_offsets(world: World) -> None:
    expected = -174.0 + 10.0 * math.log10(12_500.0) + 6.0  # ≈ -127.03 dBm
    np.testing.assert_allclose(world.noise_floor_dbm, expected, atol=1e-9)
    assert np.all(np.abs(world.gain_offset_db) <= 2.0)
    assert np.ptp(world.gain_offset_db) > 0.5  # actually drawn, not all zero
    np.testing.assert_allclose(world.rx_gain_dbi, 2.0)


def test_grid_covers_area_and_embedding_is_exact(world: World) -> None:
    r, b, ny, nx = world.shadowing_grid_db.shape
    assert (r, b) == (7, 2)
    x0, y0 = world.grid_origin_enu
    dx = world.grid_spacing_m
    assert dx == 250.0
    assert x0 <= world.area.east_min - dx + 1e-6 and x0 + (nx - 1) * dx >= world.area.east_max + dx - 1e-6
    assert y0 <= world.area.north_min - dx + 1e-6 and y0 + (ny - 1) * dx >= world.area.north_max + dx - 1e-6
    assert world.embedding_clipped_fraction < 1e-6


def test_interpolation_hits_grid_nodes(world: World) -> None:
    rng = np.random.default_rng(0)
    _, _, ny, nx = world.shadowing_grid_db.shape
    iy, ix = rng.integers(1, ny - 1, 50), rng.integers(1, nx - 1, 50)
    enu = world.grid_origin_enu + world.grid_spacing_m * np.column_stack([ix, iy])
    got = world.static_shadowing_db(enu)  # (N, R, B)
    want = np.moveaxis(world.shadowing_grid_db[:, :, iy, ix], -1, 0)
    np.testing.assert_allclose(got, want, atol=1e-4)
    mid = world.static_shadowing_db(enu + world.grid_spacing_m / 2, band_index=1)
    g = world.shadowing_grid_db[:, 1].astype(float)
    want_mid = (g[:, iy, ix] + g[:, iy, ix + 1] + g[:, iy + 1, ix] + g[:, iy + 1, ix + 1]).T / 4
    np.testing.assert_allclose(mid, want_mid, atol=1e-4)


def _random_pairs(
    world: World, rng: np.random.Generator, n: int, sep: float
) -> tuple[np.ndarray, np.ndarray]:
    """Field values at n random point pairs `sep` metres apart in random directions, both inside the area."""
    a = world.area
    east = rng.uniform(a.east_min + sep, a.east_max - sep, n)
    north = rng.uniform(a.north_min + sep, a.north_max - sep, n)
    ang = rng.uniform(0, 2 * np.pi, n)
    p = np.column_stack([east, north])
    q = p + sep * np.column_stack([np.cos(ang), np.sin(ang)])
    return world.static_shadowing_db(p), world.static_shadowing_db(q)


def test_static_field_sigma_correlation_length_and_band_correlation(world: World) -> None:
    g = world.shadowing_grid_db.astype(np.float64)
    sigma = float(np.sqrt(np.mean(g**2)))  # zero-mean field
    assert abs(sigma - SIGMA_DB) < 0.7, sigma
    assert abs(float(g.mean())) < 1.0

    rng = np.random.default_rng(1)
    seps = np.array([500.0, 1000.0, 2000.0, 4000.0, 6000.0, 8000.0])
    rho = []
    for sep in seps:
        fa, fb = _random_pairs(world, rng, 20_000, sep)  # (N, R, B), random directions (isotropy)
        rho.append(np.mean(fa * fb) / np.sqrt(np.mean(fa**2) * np.mean(fb**2)))
    rho = np.array(rho)
    np.testing.assert_allclose(rho, np.exp(-seps / CORR_LEN_M), atol=0.1)
    fitted = -np.sum(seps * seps) / np.sum(seps * np.log(rho))  # least squares of ln rho = -d / L
    assert abs(fitted - CORR_LEN_M) < 0.3 * CORR_LEN_M, fitted

    band_rho = [np.corrcoef(g[r, 0].ravel(), g[r, 1].ravel())[0, 1] for r in range(g.shape[0])]
    assert abs(float(np.mean(band_rho)) - BAND_RHO) < 0.1, band_rho
    # different receivers' terrains are independent
    cross = [np.corrcoef(g[0, 0].ravel(), g[r, 0].ravel())[0, 1] for r in range(1, g.shape[0])]
    assert np.max(np.abs(cross)) < 0.15


def test_world_is_fixed_by_the_scenario_not_the_seed(scenario: Scenario, world: World) -> None:
    grid_before = world.shadowing_grid_db.copy()
    next(iter(simulate_sessions(scenario, 1, seed=1)))
    next(iter(simulate_sessions(scenario, 1, seed=2)))
    assert build_world(scenario) is world
    np.testing.assert_array_equal(world.shadowing_grid_db, grid_before)
    assert not world.shadowing_grid_db.flags.writeable

    clear_world_cache()
    try:
        rebuilt = build_world(scenario)
        assert rebuilt is not world
        assert rebuilt.shadowing_grid_db.tobytes() == world.shadowing_grid_db.tobytes()
        np.testing.assert_array_equal(rebuilt.gain_offset_db, world.gain_offset_db)
        other = build_world(scenario.model_copy(update={"world_seed": scenario.world_seed + 1}))
        assert not np.allclose(other.shadowing_grid_db[0, 0], world.shadowing_grid_db[0, 0])
    finally:
        clear_world_cache()
        world_module._CACHE[scenario.content_hash()] = world  # keep later tests on the shared world
