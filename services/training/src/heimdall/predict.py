"""One stored session → model inputs → ONNX Runtime → position, covariance and error ellipses.

``heimdall predict`` is what the inference service does, run from the training side: the same
``model.onnx`` (from the registry, e.g. ``models:/heimdall-localizer@champion``, or a file), inputs
built exactly like :func:`heimdall.data.onnx_inputs.onnx_inputs_for` (calibrated IQ per receiver in the
model's station order, plus a presence mask), and latitude/longitude computed in float64 from the frame
origin stored in the model. Output as JSON or as a GeoJSON FeatureCollection (RFC 7946).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import PathNotFoundError, UserError
from heimdall.export import OnnxLocalizer, ellipse
from heimdall.geo import haversine_m

if TYPE_CHECKING:
    from heimdall.services import Services
    from heimdall.settings import Settings

#: Probability mass inside the n-sigma ellipse of a 2-D Gaussian: 1 - exp(-n²/2).
SIGMA_LEVELS = {"1sigma": 1.0, "2sigma": 2.0}
ELLIPSE_VERTICES = 72


class ModelLoadError(UserError):
    """The model reference cannot be resolved to a Heimdall ``model.onnx``."""


def coverage(n_sigma: float) -> float:
    return 1.0 - math.exp(-0.5 * n_sigma * n_sigma)


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------


def is_mlflow_uri(model: str) -> bool:
    """``models:/…``, ``runs:/…`` and remote artifact URIs go through MLflow; anything else is a path."""
    return model.startswith(("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "http://", "https://"))


def _find_onnx(path: Path, where: str) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        direct = path / "model.onnx"
        if direct.is_file():
            return direct
        found = sorted(path.rglob("*.onnx"))
        if len(found) == 1:
            return found[0]
        raise ModelLoadError(f"{where} holds {len(found)} .onnx files, expected one model.onnx")
    raise PathNotFoundError(f"model {where} does not exist (give a model.onnx, its folder or models:/…)")


def resolve_model(model: str, settings: Settings | None = None, dst: Path | None = None) -> Path:
    """A local ``model.onnx`` for ``model``: a path, or an MLflow URI downloaded into ``dst``."""
    if not is_mlflow_uri(model):
        return _find_onnx(Path(model).expanduser(), model)
    from heimdall.settings import Settings
    from heimdall.tracking.models import ModelFetchError, download_model

    dst = Path(tempfile.mkdtemp(prefix="heimdall-model-")) if dst is None else dst
    try:
        local = download_model(model, settings or Settings(), dst)
    except ModelFetchError as exc:
        raise ModelLoadError(str(exc)) from None
    return _find_onnx(local, model)


def load_localizer(model: str, settings: Settings | None = None, dst: Path | None = None) -> OnnxLocalizer:
    return OnnxLocalizer(resolve_model(model, settings, dst))


# --------------------------------------------------------------------------------------------------------
# The inputs of one stored session
# --------------------------------------------------------------------------------------------------------


@dataclass
class SessionInputs:
    """One session as the model reads it: a batch of one."""

    session_id: str
    inputs: NDArray[np.float32]  # (1, R, 2, T) IQ or (1, R, 4) scalars
    receiver_mask: NDArray[np.float32]  # (1, R)
    used_stations: list[int] = field(default_factory=list)
    absent_stations: list[int] = field(default_factory=list)
    ignored_stations: list[int] = field(default_factory=list)  # measured, but not a receiver of this model
    truth_latlon: tuple[float, float] | None = None


def _feature_config(loc: OnnxLocalizer) -> Any:
    from heimdall.features import FeatureConfig

    meta = loc.metadata
    if "feature_config" in meta:
        try:
            return FeatureConfig(**json.loads(meta["feature_config"]))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"model {loc.model_id}: malformed feature_config metadata: {exc}") from None
    cfg = FeatureConfig()
    if meta.get("feature_config_hash") not in (None, cfg.config_hash()):
        raise ModelLoadError(
            "this power-only model was trained with non-default feature settings that its metadata does "
            "not record; compute its scalars with the training feature configuration"
        )
    return cfg


def session_inputs(services: Services, session_id: str, loc: OnnxLocalizer) -> SessionInputs:
    """Read a stored session (rows from the database, IQ from the object store) into model inputs."""
    from heimdall.features import iq_complex_to_real, receiver_scalars_batch
    from heimdall.storage.iq import load_iq
    from heimdall.storage.queries import get_session

    session = get_session(services.db, session_id)
    index = {sid: k for k, sid in enumerate(loc.station_ids)}
    r = loc.n_receivers
    mask = np.zeros((1, r), np.float32)
    iq_model = loc.input_kind == "iq"
    x = (
        np.zeros((1, r, 2, int(loc.n_samples or 0)), np.float32)
        if iq_model
        else np.zeros((1, r, 4), np.float32)
    )
    ignored: list[int] = []
    for m in session.measurements:
        k = index.get(m.station_id)
        if k is None:
            ignored.append(m.station_id)
            continue
        where = f"session {session.id}, station {m.station_id}"
        loc_key = m.iq_bucket_key
        if loc_key is None:
            if iq_model or m.signal_strength_db is None:
                continue  # power-only row: an IQ model cannot use it
            x[0, k] = (m.signal_strength_db, np.nan, m.snr_db if m.snr_db is not None else np.nan, 1.0)
        else:
            iq = load_iq(services.store, *loc_key, m.iq_samples_count, context=where)
            if iq_model:
                if iq.size != loc.n_samples:
                    raise UserError(
                        f"{where}: recording has {iq.size} samples, the model reads exactly {loc.n_samples}; "
                        "use a model trained on recordings of this length"
                    )
                x[0, k] = iq_complex_to_real(iq)
            else:
                x[0, k] = receiver_scalars_batch(iq[None], _feature_config(loc))[0]
        mask[0, k] = 1.0
    used = [loc.station_ids[k] for k in range(r) if mask[0, k] > 0]
    if not used:
        raise UserError(
            f"session {session.id} has no usable recording from the model's receivers {list(loc.station_ids)}"
        )
    truth = (session.source.latitude, session.source.longitude) if session.source is not None else None
    return SessionInputs(
        session_id=str(session.id),
        inputs=x,
        receiver_mask=mask,
        used_stations=used,
        absent_stations=[s for s in loc.station_ids if s not in used],
        ignored_stations=sorted(ignored),
        truth_latlon=truth,
    )


# --------------------------------------------------------------------------------------------------------
# Prediction and its presentation
# --------------------------------------------------------------------------------------------------------


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
    p, c = pos[0], cov[0]
    lat, lon = loc.to_latlon(p)
    out: dict[str, Any] = {
        "session_id": inputs.session_id,
        "model": {
            "ref": model_ref,
            "model_id": loc.model_id,
            "onnx_contract": loc.metadata.get("heimdall_onnx_contract"),
            "input_kind": loc.input_kind,
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


def predict(
    services: Services, session_id: str, model: str, fmt: str = "json", dst: Path | None = None
) -> dict[str, Any]:
    """``heimdall predict`` as a function: JSON dict or GeoJSON FeatureCollection."""
    if fmt not in ("json", "geojson"):
        raise UserError(f"unknown format {fmt!r}: use json or geojson")
    loc = load_localizer(model, services.settings, dst)
    result = predict_session(loc, session_inputs(services, session_id, loc), model)
    return as_geojson(result) if fmt == "geojson" else as_json(result)


__all__ = [
    "ModelLoadError",
    "SessionInputs",
    "as_geojson",
    "as_json",
    "ellipse_ring",
    "load_localizer",
    "predict",
    "predict_session",
    "resolve_model",
    "session_inputs",
]
