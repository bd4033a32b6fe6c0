"""Geodesy: WGS-84 local east/north frames and great-circle distances.

The network predicts positions in metres east/north of an origin (the receiver centroid)
because a metric frame makes the Gaussian loss and its ellipse meaningful; conversions to and
from latitude/longitude are done here in float64 so no precision is lost at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
EARTH_RADIUS_M = 6_371_008.8  # mean radius, for haversine distances


def haversine_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> NDArray[np.float64]:
    """Great-circle distance in metres (broadcasting), the yardstick for every error figure."""
    p1, p2 = np.radians(np.asarray(lat1, float)), np.radians(np.asarray(lat2, float))
    dphi = p2 - p1
    dlam = np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    a = np.sin(dphi / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlam / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _geodetic_to_ecef(lat: NDArray, lon: NDArray, h: NDArray) -> NDArray[np.float64]:
    phi, lam = np.radians(lat), np.radians(lon)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
    x = (n + h) * np.cos(phi) * np.cos(lam)
    y = (n + h) * np.cos(phi) * np.sin(lam)
    z = (n * (1.0 - WGS84_E2) + h) * np.sin(phi)
    return np.stack([x, y, z], axis=-1)


def _ecef_to_geodetic(xyz: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lam = np.arctan2(y, x)
    p = np.hypot(x, y)
    phi = np.arctan2(z, p * (1.0 - WGS84_E2))
    for _ in range(6):  # converges to < 1e-12 rad in 3-4 iterations near the surface
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
        h = p / np.cos(phi) - n
        phi = np.arctan2(z, p * (1.0 - WGS84_E2 * n / (n + h)))
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
    h = p / np.cos(phi) - n
    return np.degrees(phi), np.degrees(lam), h


@dataclass(frozen=True)
class LocalFrame:
    """A local tangent-plane (ENU) frame at a fixed origin; ground points have height 0."""

    origin_lat: float
    origin_lon: float

    def _rotation(self) -> NDArray[np.float64]:
        phi, lam = np.radians(self.origin_lat), np.radians(self.origin_lon)
        return np.array(
            [
                [-np.sin(lam), np.cos(lam), 0.0],
                [-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)],
                [np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)],
            ]
        )

    def to_enu(self, lat: ArrayLike, lon: ArrayLike) -> NDArray[np.float64]:
        """Latitude/longitude (degrees) → (..., 2) metres east/north of the origin."""
        lat_a, lon_a = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float))
        xyz = _geodetic_to_ecef(lat_a, lon_a, np.zeros_like(lat_a))
        o = _geodetic_to_ecef(np.array(self.origin_lat), np.array(self.origin_lon), np.array(0.0))
        enu = (xyz - o) @ self._rotation().T
        return enu[..., :2]

    def to_latlon(self, enu: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(..., 2) metres east/north → (lat, lon) degrees of the ground point below."""
        e = np.asarray(enu, float)
        lat_g = self.origin_lat + np.degrees(e[..., 1] / EARTH_RADIUS_M)
        lon_g = self.origin_lon + np.degrees(e[..., 0] / (EARTH_RADIUS_M * np.cos(np.radians(lat_g))))
        # Newton-style refinement against the exact forward map (converges to mm in 3 steps).
        for _ in range(4):
            err = self.to_enu(lat_g, lon_g) - e
            lat_g = lat_g - np.degrees(err[..., 1] / EARTH_RADIUS_M)
            lon_g = lon_g - np.degrees(err[..., 0] / (EARTH_RADIUS_M * np.cos(np.radians(lat_g))))
        return lat_g, lon_g

    @classmethod
    def centred_on(cls, lats: ArrayLike, lons: ArrayLike) -> LocalFrame:
        """Frame whose origin is the plain centroid of the given points (the receiver network)."""
        return cls(float(np.mean(lats)), float(np.mean(lons)))


def ecef_to_geodetic(xyz: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """Public wrapper kept for tests of the frame's round trip."""
    return _ecef_to_geodetic(np.asarray(xyz, float))
