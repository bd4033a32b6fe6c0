"""What a prediction looks like to a user: JSON (lat/lon float64, metres, m²), GeoJSON and the HTML map.

:func:`predict_session` runs the model on one session and returns the JSON-ready dict ``heimdall
predict`` prints; :func:`map_estimate` turns that dict (or a saved copy of it) into the typed input of
the map renderers in :mod:`heimdall.inference.maps` and :mod:`heimdall.inference.maps_html`, so the
GeoJSON and the HTML map are drawn from exactly the figures the JSON reports.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import UserError
from heimdall.features import SCALAR_NAMES, receiver_scalars
from heimdall.geo import LocalFrame, haversine_m
from heimdall.inference.inputs import SessionInputs
from heimdall.inference.localizer import OnnxLocalizer, ellipse
from heimdall.inference.maps import (
    ELLIPSE_LEVELS,
    ELLIPSE_VERTICES,
    MapEstimate,
    MapReceiver,
    confidence_of,
    location_geojson,
)
from heimdall.inference.maps_html import render_html

__all__ = [
    "ELLIPSE_VERTICES",
    "FORMATS",
    "SIGMA_LEVELS",
    "as_geojson",
    "as_json",
    "carrier_report",
    "coverage",
    "ellipse_params",
    "map_estimate",
    "predict_session",
    "receiver_readings",
    "render",
    "set_aside_lines",
]

#: n of the n-sigma ellipses reported: 1σ (39.3 %), 2σ (86.5 %) and 95 % (n = 2.4477).
SIGMA_LEVELS = ELLIPSE_LEVELS
#: what ``--format`` accepts
FORMATS = ("json", "geojson", "html")
#: why a receiver is listed in ``set_aside`` (the model's ``receiver_trust`` is 0 for a present one)
SET_ASIDE_REASON = "reading implausible for every position"
#: what the user should do about it (the text line and the map's note)
SET_ASIDE_ADVICE = "its power fits no position; check its calibration"


def coverage(n_sigma: float) -> float:
    return confidence_of(n_sigma)


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


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def receiver_readings(
    loc: OnnxLocalizer, inputs: SessionInputs, set_aside: frozenset[int] = frozenset()
) -> list[dict[str, Any]]:
    """Every receiver of the model (name, position, used, set aside or absent) with the power, SNR and
    heard flag of what it delivered: an IQ recording's scalars are computed as the features compute
    them, a power-only row is reported as read. Stations the model does not know are listed as ignored;
    ``set_aside`` (station ids) are the present receivers whose reading the model set aside."""
    meta = {int(r["station_id"]): r for r in loc.receivers or ()}
    names = loc.station_names or tuple(str(s) for s in loc.station_ids)
    x, mask = inputs.inputs[0], inputs.receiver_mask[0]
    cfg = loc.feature_config() if loc.input_kind == "iq" else None
    out: list[dict[str, Any]] = []
    for k, sid in enumerate(loc.station_ids):
        m = meta.get(int(sid), {})
        row: dict[str, Any] = {
            "station_id": int(sid),
            "name": str(m.get("name", names[k])),
            "latitude": m.get("latitude"),
            "longitude": m.get("longitude"),
            "status": "used" if mask[k] > 0 else "absent",
            "heard": None,
            "snr_db": None,
            "power_dbm": None,
        }
        if int(sid) in set_aside:
            row.update(status="set_aside", note=f"set aside by the model: {SET_ASIDE_ADVICE}")
        if mask[k] > 0:
            if cfg is not None:
                s = receiver_scalars((x[k, 0] + 1j * x[k, 1]).astype(np.complex64), cfg)
                power, snr, is_heard = s.power_dbm, s.snr_db, s.heard
            else:
                # power-only data: a reading is "heard" by its presence (the heard column the model reads)
                col = {name: float(x[k, i]) for i, name in enumerate(SCALAR_NAMES)}
                power, snr, is_heard = col["power_dbm"], col["snr_db"], col["heard"] >= 0.5
            row.update(heard=bool(is_heard), snr_db=_num(snr), power_dbm=_num(power))
        out.append(row)
    for sid in inputs.ignored_stations:
        out.append(
            {
                "station_id": int(sid),
                "name": str(sid),
                "latitude": None,
                "longitude": None,
                "status": "ignored",
                "heard": None,
                "snr_db": None,
                "power_dbm": None,
                "note": "not a receiver of this model",
            }
        )
    return out


def carrier_report(loc: OnnxLocalizer, frequency_hz: float | None) -> dict[str, Any]:
    """The session's carrier and the one the model used for it (its training median when unknown)."""
    if not loc.reads_frequency:
        used, note = None, "this model (ONNX contract 1) does not read the carrier"
    elif loc.frequency_fill_hz is None:
        used, note = None, "this model was trained without the carrier (use_frequency: false)"
    elif frequency_hz is not None:
        used, note = frequency_hz, "the session's carrier"
    else:
        used = loc.frequency_fill_hz
        note = "unknown: the model used the median carrier of its training sessions"
    return {"frequency_hz": frequency_hz, "model_frequency_hz": used, "note": note}


def _set_aside(loc: OnnxLocalizer, flagged: NDArray[np.bool_]) -> list[dict[str, Any]]:
    names = loc.station_names or tuple(str(s) for s in loc.station_ids)
    return [
        {"station_id": int(loc.station_ids[k]), "name": str(names[k]), "reason": SET_ASIDE_REASON}
        for k in np.flatnonzero(flagged)
    ]


def set_aside_lines(result: dict[str, Any]) -> list[str]:
    """One line per receiver a :func:`predict_session` result lists as set aside (none: no lines)."""
    return [
        f"set aside: station {r['station_id']} ({r['name']}): {SET_ASIDE_ADVICE}"
        for r in result.get("set_aside") or ()
    ]


def predict_session(
    loc: OnnxLocalizer, inputs: SessionInputs, model_ref: str | None = None
) -> dict[str, Any]:
    """Run the model on one session; a JSON-ready dict (lat/lon float64 degrees, metres, m²).

    ``carrier`` says which carrier the model read: the session's, the model's training median when the
    session's is unknown, or none (a contract-1 model, which predates the carrier input).
    ``set_aside`` names the present receivers whose reading the model set aside as implausible for every
    position (``receiver_trust`` 0): the estimate is made without them, so ``receivers.used`` leaves
    them out. None for a model file of contract 1 or 2, which predates ``receiver_trust`` and cannot
    say; absent receivers are never listed.
    """
    prediction = loc.localize(inputs.inputs, inputs.receiver_mask, inputs.frequencies)
    flagged = prediction.set_aside(inputs.receiver_mask)[0]
    set_aside = _set_aside(loc, flagged) if prediction.receiver_trust is not None else None
    aside_ids = frozenset(r["station_id"] for r in set_aside or ())
    # calibrated: the covariance the model was evaluated with
    p, c = prediction.position_enu_m[0], prediction.covariance_enu_m2[0]
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
        "carrier": carrier_report(loc, inputs.frequency_hz),
        "receivers": {
            "used": [sid for sid in inputs.used_stations if sid not in aside_ids],
            "absent": inputs.absent_stations,
            "ignored": inputs.ignored_stations,
        },
        "set_aside": set_aside,
    }
    if inputs.truth_latlon is not None:
        tlat, tlon = inputs.truth_latlon
        out["truth"] = {
            "latitude": float(tlat),
            "longitude": float(tlon),
            "error_m": float(haversine_m(lat, lon, tlat, tlon)),
        }
    out["stations"] = receiver_readings(loc, inputs, aside_ids)
    return out


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def map_estimate(result: dict[str, Any]) -> MapEstimate:
    """The map input for one ``heimdall predict`` JSON result (as printed, or read back from a file)."""
    try:
        origin = result["frame"]
        frame = LocalFrame(float(origin["origin_latitude"]), float(origin["origin_longitude"]))
        pos = result["position"]
        cov = result["covariance_enu_m2"]
        truth = result.get("truth")
        return MapEstimate(
            label=str(result.get("session_id") or "estimate"),
            frame=frame,
            position_enu_m=(float(pos["east_m"]), float(pos["north_m"])),
            covariance_enu_m2=((float(cov[0][0]), float(cov[0][1])), (float(cov[1][0]), float(cov[1][1]))),
            receivers=tuple(MapReceiver.from_dict(r) for r in result.get("stations", ())),
            truth_latlon=None if truth is None else (float(truth["latitude"]), float(truth["longitude"])),
            properties={k: v for k, v in as_json(result).items() if k not in ("position", "stations")},
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UserError(f"not a heimdall prediction result (missing or malformed {exc})") from None


def as_geojson(result: dict[str, Any]) -> dict[str, Any]:
    """A FeatureCollection: the position (Point, with every figure as properties) first, the 1σ, 2σ and
    95 % ellipses (Polygons), the receivers (Points: heard or not, SNR, power) and, when the session
    has a known source, the truth (Point, with the error in metres)."""
    return location_geojson([map_estimate(result)])


def render(results: list[dict[str, Any]], fmt: str, title: str = "Heimdall location") -> str:
    """One or more prediction results as the text of ``--format json|geojson|html``."""
    import json

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "json":
        body: Any = as_json(results[0]) if len(results) == 1 else [as_json(r) for r in results]
        return json.dumps(body, indent=2) + "\n"
    estimates = [map_estimate(r) for r in results]
    if fmt == "geojson":
        return json.dumps(location_geojson(estimates), indent=2) + "\n"
    return render_html(estimates, title)
