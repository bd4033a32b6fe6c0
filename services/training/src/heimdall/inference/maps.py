"""A located transmitter as map layers: receivers, the estimate, its error ellipses and the truth.

One plain, typed input (:class:`MapEstimate`) that ``heimdall predict`` and ``heimdall locate`` both
build, and the GeoJSON (RFC 7946: ``[longitude, latitude]``, counter-clockwise exterior rings) that the
HTML map (:mod:`heimdall.inference.maps_html`) draws. The ellipses are computed where the covariance
lives, in the model's local metric frame, and only then converted to latitude/longitude, so a 1σ ring
is exactly the set of points at Mahalanobis distance 1 from the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.atomic import atomic_write_text
from heimdall.errors import UserError
from heimdall.geo import LocalFrame, haversine_m

__all__ = [
    "ELLIPSE_LEVELS",
    "ELLIPSE_VERTICES",
    "SNR_COLOUR_RANGE_DB",
    "MapEstimate",
    "MapReceiver",
    "ReceiverStatus",
    "check_output_file",
    "confidence_of",
    "ellipse_ring",
    "estimate_features",
    "location_geojson",
    "write_output",
]

#: n for the n-sigma ellipses drawn on every map: 1σ and 2σ, and the one holding 95 % of a 2-D
#: Gaussian (the χ²₂ 0.95 quantile is -2·ln 0.05, so n = sqrt(-2·ln 0.05) ≈ 2.4477).
ELLIPSE_LEVELS: dict[str, float] = {"1sigma": 1.0, "2sigma": 2.0, "95pct": math.sqrt(-2.0 * math.log(0.05))}
#: receivers are coloured by SNR on this fixed scale (clipped), in the HTML maps and the PNG plots alike
SNR_COLOUR_RANGE_DB = (-10.0, 40.0)
#: distinct vertices of an ellipse ring (the closing vertex repeats the first)
ELLIPSE_VERTICES = 72

#: used: read by the model; set_aside: read, but its reading fits no position, so the model left it
#: out (an uncalibrated or faulty receiver); absent: a model receiver with no recording in this session;
#: refused: recording rejected by a check (its note says why); excluded: left out by the user; ignored:
#: a recording from a station the model does not know.
ReceiverStatus = Literal["used", "set_aside", "absent", "refused", "excluded", "ignored"]


def confidence_of(n_sigma: float) -> float:
    """Probability mass inside the n-sigma ellipse of a 2-D Gaussian: 1 - exp(-n²/2)."""
    return 1.0 - math.exp(-0.5 * n_sigma * n_sigma)


@dataclass(frozen=True)
class MapReceiver:
    """One receiver as a map shows it; position unknown (None) means it is listed but not drawn."""

    station_id: int
    name: str
    latitude: float | None
    longitude: float | None
    status: ReceiverStatus
    heard: bool | None = None
    snr_db: float | None = None
    power_dbm: float | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "station_id": self.station_id,
            "name": self.name,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "status": self.status,
            "heard": self.heard,
            "snr_db": _finite(self.snr_db),
            "power_dbm": _finite(self.power_dbm),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapReceiver:
        return cls(
            station_id=int(d["station_id"]),
            name=str(d.get("name") or d["station_id"]),
            latitude=_opt_float(d.get("latitude")),
            longitude=_opt_float(d.get("longitude")),
            status=d.get("status", "used"),
            heard=None if d.get("heard") is None else bool(d["heard"]),
            snr_db=_opt_float(d.get("snr_db")),
            power_dbm=_opt_float(d.get("power_dbm")),
            note=d.get("note"),
        )


@dataclass(frozen=True)
class MapEstimate:
    """One estimate: position and covariance in ``frame`` (metres east/north, m²), receivers, truth.

    ``label`` names the estimate on the map and in every feature (a session id, a capture group).
    ``properties`` are copied onto the estimate's Point feature (model, figures a consumer wants).
    """

    label: str
    frame: LocalFrame
    position_enu_m: tuple[float, float]
    covariance_enu_m2: tuple[tuple[float, float], tuple[float, float]]
    receivers: tuple[MapReceiver, ...] = ()
    truth_latlon: tuple[float, float] | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def latlon(self) -> tuple[float, float]:
        lat, lon = self.frame.to_latlon(np.asarray(self.position_enu_m, np.float64))
        return float(lat), float(lon)

    @property
    def error_m(self) -> float | None:
        if self.truth_latlon is None:
            return None
        lat, lon = self.latlon
        return float(haversine_m(lat, lon, *self.truth_latlon))


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _signed_area(ring: NDArray[np.float64]) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def ellipse_ring(
    frame: LocalFrame,
    center_enu_m: ArrayLike,
    cov_enu_m2: ArrayLike,
    n_sigma: float,
    vertices: int = ELLIPSE_VERTICES,
) -> list[list[float]]:
    """The n-sigma ellipse as a closed, counter-clockwise GeoJSON ring of ``[lon, lat]`` (float64).

    Points ``c + n·V·sqrt(Λ)·[cos t, sin t]`` with ``cov = V Λ Vᵀ`` lie at Mahalanobis distance n; they
    are placed in the metric frame and converted with the frame's exact inverse.
    """
    cov = np.asarray(cov_enu_m2, np.float64)
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    unit = np.stack([np.cos(t), np.sin(t)])  # (2, V)
    axes = vecs * np.sqrt(np.clip(vals, 0.0, None))  # columns: the semi-axes at 1σ
    pts = np.asarray(center_enu_m, np.float64)[:, None] + n_sigma * axes @ unit
    lat, lon = frame.to_latlon(pts.T)
    ring = np.stack([lon, lat], axis=1)
    ring = np.vstack([ring, ring[:1]])
    if _signed_area(ring) < 0:  # RFC 7946: exterior rings run counter-clockwise
        ring = ring[::-1]
    return [[float(a), float(b)] for a, b in ring]


def _ellipse_props(cov: NDArray[np.float64], n_sigma: float) -> dict[str, float]:
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    major = vecs[:, 1]
    azimuth = math.degrees(math.atan2(major[0], major[1])) % 180.0
    a, b = (n_sigma * math.sqrt(max(v, 0.0)) for v in (vals[1], vals[0]))
    return {
        "n_sigma": n_sigma,
        "confidence": round(confidence_of(n_sigma), 4),
        "semi_major_m": a,
        "semi_minor_m": b,
        "orientation_deg": 0.0 if math.isclose(azimuth, 180.0) else azimuth,
        "area_km2": math.pi * a * b / 1e6,
    }


def _point(lon: float, lat: float, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props}


def estimate_features(est: MapEstimate) -> list[dict[str, Any]]:
    """The features of one estimate: the position first, then the ellipses, receivers and truth."""
    lat, lon = est.latlon
    cov = np.asarray(est.covariance_enu_m2, np.float64)
    east, north = est.position_enu_m
    features = [
        _point(
            lon,
            lat,
            {
                **est.properties,
                "kind": "position",
                "label": est.label,
                "east_m": float(east),
                "north_m": float(north),
                "covariance_enu_m2": [[float(v) for v in row] for row in cov],
            },
        )
    ]
    for name, n in ELLIPSE_LEVELS.items():
        ring = ellipse_ring(est.frame, est.position_enu_m, cov, n)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"kind": f"ellipse_{name}", "label": est.label, **_ellipse_props(cov, n)},
            }
        )
    for r in est.receivers:
        if r.latitude is None or r.longitude is None:
            continue
        props = {"kind": "receiver", "label": est.label, **r.as_dict()}
        features.append(_point(r.longitude, r.latitude, props))
    if est.truth_latlon is not None:
        tlat, tlon = est.truth_latlon
        features.append(
            _point(float(tlon), float(tlat), {"kind": "truth", "label": est.label, "error_m": est.error_m})
        )
    return features


def location_geojson(estimates: Sequence[MapEstimate]) -> dict[str, Any]:
    """One FeatureCollection for one or more estimates (each feature names its estimate's ``label``)."""
    return {"type": "FeatureCollection", "features": [f for e in estimates for f in estimate_features(e)]}


def check_output_file(path: str | Path, flag: str = "--output") -> Path:
    """Refuse an output file path that cannot be written, before any work is done (one-line error)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{flag} {p} is a directory; name a file")
    parent = p.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UserError(f"{flag} {p}: folder {parent} {what}")
    return p


def write_output(path: str | Path, text: str, flag: str = "--output") -> Path:
    """Write ``text`` atomically (readers see the old file or the new one); OS errors are one line."""
    return atomic_write_text(check_output_file(path, flag), text)
