"""What a prediction looks like to a user: JSON (lat/lon float64, metres, m²), GeoJSON and error ellipses."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.geo import haversine_m
from heimdall.inference.inputs import SessionInputs
from heimdall.inference.localizer import OnnxLocalizer, ellipse

__all__ = [
    "ELLIPSE_VERTICES",
    "SIGMA_LEVELS",
    "as_geojson",
    "as_json",
    "coverage",
    "ellipse_params",
    "ellipse_ring",
    "predict_session",
]

#: Probability mass inside the n-sigma ellipse of a 2-D Gaussian: 1 - exp(-n²/2).
SIGMA_LEVELS = {"1sigma": 1.0, "2sigma": 2.0}
ELLIPSE_VERTICES = 72


def coverage(n_sigma: float) -> float:
    return 1.0 - math.exp(-0.5 * n_sigma * n_sigma)


def ellipse_params(cov: NDArray[np.float64], n_sigma: float) -> dict[str, float]:
    major, minor, azimuth = ellipse(cov, n_sigma)
    return {
        "n_sigma": n_sigma,
        "confidence": round(coverage(n_sigma), 4),
        "semi_major_m": float(major),
        "semi_minor_m": float(minor),
        "orientation_deg": float(azimuth),
        "area_km2": float(math.pi * major * minor / 1e6),
    }


def ellipse_ring(
    loc: OnnxLocalizer, center_enu: NDArray[np.float64], cov: NDArray[np.float64], n_sigma: float
) -> list[list[float]]:
    """The n-sigma ellipse as a closed, counter-clockwise GeoJSON ring of [lon, lat]."""
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    if np.linalg.det(vecs) < 0:  # keep a right-handed basis so the ring runs counter-clockwise
        vecs[:, 1] = -vecs[:, 1]
    t = np.linspace(0.0, 2.0 * np.pi, ELLIPSE_VERTICES, endpoint=False)
    unit = np.stack([np.cos(t), np.sin(t)])  # (2, V)
    pts = center_enu[:, None] + n_sigma * (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ unit
    lat, lon = loc.to_latlon(pts.T)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    return [*ring, ring[0]]


def predict_session(
    loc: OnnxLocalizer, inputs: SessionInputs, model_ref: str | None = None
) -> dict[str, Any]:
    """Run the model on one session; a JSON-ready dict (lat/lon float64 degrees, metres, m²)."""
    pos, cov = loc.predict(inputs.inputs, inputs.receiver_mask)
    p, c = pos[0], cov[0]  # calibrated: the covariance the model was evaluated with
    lat, lon = loc.to_latlon(p)
    out: dict[str, Any] = {
        "session_id": inputs.session_id,
        "model": {
            "ref": model_ref,
            "model_id": loc.model_id,
            "onnx_contract": loc.metadata.get("heimdall_onnx_contract"),
            "input_kind": loc.input_kind,
            "covariance_scale": loc.covariance_scale,
            "calibrated": loc.calibrated,
        },
        "position": {
            "latitude": float(lat),
            "longitude": float(lon),
            "east_m": float(p[0]),
            "north_m": float(p[1]),
        },
        "covariance_enu_m2": [[float(c[0, 0]), float(c[0, 1])], [float(c[1, 0]), float(c[1, 1])]],
        "ellipses": {name: ellipse_params(c, n) for name, n in SIGMA_LEVELS.items()},
        "frame": {
            "origin_latitude": loc.frame.origin_lat,
            "origin_longitude": loc.frame.origin_lon,
            "axes": "east_m, north_m in the local tangent plane at the origin (WGS-84)",
            "orientation": "degrees clockwise from north of the major axis, in [0, 180)",
        },
        "receivers": {
            "used": inputs.used_stations,
            "absent": inputs.absent_stations,
            "ignored": inputs.ignored_stations,
        },
    }
    if inputs.truth_latlon is not None:
        tlat, tlon = inputs.truth_latlon
        out["truth"] = {
            "latitude": float(tlat),
            "longitude": float(tlon),
            "error_m": float(haversine_m(lat, lon, tlat, tlon)),
        }
    out["_rings"] = {name: ellipse_ring(loc, p, c, n) for name, n in SIGMA_LEVELS.items()}
    return out


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def as_geojson(result: dict[str, Any]) -> dict[str, Any]:
    """A FeatureCollection: the position (Point, with every figure as properties), the 1σ and 2σ
    ellipses (Polygons) and, when the session has a known source, the truth (Point)."""
    base = as_json(result)
    pos = base["position"]
    props = {k: v for k, v in base.items() if k not in ("position",)}
    features: list[dict[str, Any]] = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [pos["longitude"], pos["latitude"]]},
            "properties": {"kind": "position", **props, "east_m": pos["east_m"], "north_m": pos["north_m"]},
        }
    ]
    for name, ring in result["_rings"].items():
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "kind": f"ellipse_{name}",
                    "session_id": base["session_id"],
                    **base["ellipses"][name],
                },
            }
        )
    if "truth" in base:
        t = base["truth"]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [t["longitude"], t["latitude"]]},
                "properties": {"kind": "truth", "session_id": base["session_id"], "error_m": t["error_m"]},
            }
        )
    return {"type": "FeatureCollection", "features": features}
