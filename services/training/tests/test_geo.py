"""The local ENU frame against independent geodesy (round trips, distances, ECEF)."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.geo import LocalFrame, ecef_to_geodetic, haversine_m
from heimdall.stations import NW_ITALY_STATIONS


def test_round_trip_and_origin() -> None:
    frame = LocalFrame.centred_on(
        [s.latitude for s in NW_ITALY_STATIONS], [s.longitude for s in NW_ITALY_STATIONS]
    )
    assert np.allclose(frame.to_enu(frame.origin_lat, frame.origin_lon), 0.0, atol=1e-6)
    rng = np.random.default_rng(0)
    lat = frame.origin_lat + rng.uniform(-1, 1, 200)
    lon = frame.origin_lon + rng.uniform(-1.3, 1.3, 200)
    back = frame.to_latlon(frame.to_enu(lat, lon))
    assert np.allclose(back[0], lat, atol=1e-9) and np.allclose(back[1], lon, atol=1e-9)


def test_enu_distances_match_great_circle_near_the_origin() -> None:
    frame = LocalFrame(45.0, 8.0)
    e = frame.to_enu([45.1, 45.0], [8.0, 8.1])
    assert np.hypot(*e[0]) == pytest.approx(haversine_m(45.0, 8.0, 45.1, 8.0), rel=3e-3)
    assert e[0, 0] == pytest.approx(0.0, abs=1e-6) and e[0, 1] > 0  # north is +y
    assert e[1, 0] > 0 and abs(e[1, 1]) < 50  # east is +x (tiny curvature drop)


def test_haversine_known_value() -> None:
    # one degree of latitude on the mean sphere
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(2 * np.pi * 6_371_008.8 / 360)


def test_ecef_inverse() -> None:
    lat, lon, h = ecef_to_geodetic([4_510_731.0, 4_510_731.0, 0.0])
    assert (
        lat == pytest.approx(0.0, abs=1e-9)
        and lon == pytest.approx(45.0)
        and h == pytest.approx(np.hypot(4_510_731.0, 4_510_731.0) - 6_378_137.0, abs=1e-3)
    )
