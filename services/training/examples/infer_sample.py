"""Locate the transmitter of one recorded session with a Heimdall ``model.onnx`` (the inference-service path).

    python services/training/examples/infer_sample.py --model models/model.onnx
    python services/training/examples/infer_sample.py --model models:/heimdall-localizer@champion
    python services/training/examples/infer_sample.py --model models/model.onnx --sample my_session.npz

Needs only numpy and onnxruntime (plus mlflow to fetch a ``models:/`` URI from the registry at
``MLFLOW_TRACKING_URI``). It deliberately imports nothing from the ``heimdall`` package: it is the
reference an inference service ports (see docs/INFERENCE_HANDOFF.md). The default sample,
``sample_session.npz`` beside this file, is one simulated nw-italy-v1 session of 7 receivers × 0.1 s
(1,250 samples at 12.5 kHz), so it fits a model trained on 0.1 s recordings, e.g.
``heimdall simulate --duration 0.1`` then ``heimdall train``.

Prints JSON: position (lat/lon, WGS-84, float64), covariance (m², east/north), 1σ/2σ ellipses, and the
error against the sample's known transmitter position.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
CONTRACT = "1"  # heimdall ONNX I/O contract this code implements

# WGS-84, as in heimdall.geo
WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
EARTH_RADIUS_M = 6_371_008.8


# ------------------------------------------------------------------------------------------------------
# The local east/north frame (float64): origin = the model's frame_origin_lat/lon metadata
# ------------------------------------------------------------------------------------------------------


def _ecef(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    phi, lam = np.radians(lat), np.radians(lon)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
    return np.stack(
        [n * np.cos(phi) * np.cos(lam), n * np.cos(phi) * np.sin(lam), n * (1.0 - WGS84_E2) * np.sin(phi)],
        axis=-1,
    )


def to_enu(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Ground points (degrees) → metres (east, north) in the tangent plane at (lat0, lon0)."""
    phi, lam = np.radians(lat0), np.radians(lon0)
    rot = np.array(
        [
            [-np.sin(lam), np.cos(lam), 0.0],
            [-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)],
            [np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)],
        ]
    )
    lat, lon = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float))
    enu = (_ecef(lat, lon) - _ecef(np.array(lat0), np.array(lon0))) @ rot.T
    return enu[..., :2]


def to_latlon(enu: np.ndarray, lat0: float, lon0: float) -> tuple[np.ndarray, np.ndarray]:
    """Metres (east, north) → ground point (lat, lon) degrees: spherical guess + 4 Newton steps."""
    e = np.asarray(enu, float)
    lat = lat0 + np.degrees(e[..., 1] / EARTH_RADIUS_M)
    lon = lon0 + np.degrees(e[..., 0] / (EARTH_RADIUS_M * np.cos(np.radians(lat))))
    for _ in range(4):
        err = to_enu(lat, lon, lat0, lon0) - e
        lat = lat - np.degrees(err[..., 1] / EARTH_RADIUS_M)
        lon = lon - np.degrees(err[..., 0] / (EARTH_RADIUS_M * np.cos(np.radians(lat))))
    return lat, lon


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def ellipse(cov: np.ndarray, n_sigma: float) -> dict[str, float]:
    """Semi-axes (m) and the major axis' azimuth (degrees clockwise from north, in [0, 180))."""
    c = 0.5 * (cov + cov.T)
    vals, vecs = np.linalg.eigh(c)  # ascending: column 1 is the major axis (east, north)
    azimuth = float(np.degrees(np.arctan2(vecs[0, 1], vecs[1, 1])) % 180.0)
    azimuth = 0.0 if math.isclose(azimuth, 180.0) else azimuth
    major, minor = (n_sigma * math.sqrt(max(v, 0.0)) for v in (vals[1], vals[0]))
    return {
        "n_sigma": n_sigma,
        "confidence": round(1.0 - math.exp(-0.5 * n_sigma**2), 4),
        "semi_major_m": major,
        "semi_minor_m": minor,
        "orientation_deg": azimuth,
        "area_km2": math.pi * major * minor / 1e6,
    }


# ------------------------------------------------------------------------------------------------------
# Model and inputs
# ------------------------------------------------------------------------------------------------------


def fetch_model(ref: str) -> Path:
    """A local model.onnx: the path itself, a folder holding it, or an MLflow URI (downloaded)."""
    if ref.startswith(("models:/", "runs:/")):
        import os

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow  # only for registry URIs

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=tempfile.mkdtemp()))
        return local / "model.onnx" if local.is_dir() else local
    path = Path(ref)
    return path / "model.onnx" if path.is_dir() else path


def load_model(path: Path) -> tuple[ort.InferenceSession, dict[str, str]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the latency budget assumes one core
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("heimdall_onnx_contract") != CONTRACT:
        sys.exit(f"{path}: not a Heimdall ONNX model of contract {CONTRACT} (metadata {sorted(meta)})")
    if meta.get("input_kind") != "iq":
        sys.exit(f"{path}: a power-only model (input_kind={meta.get('input_kind')}); this example feeds IQ")
    return session, meta


def build_inputs(sample: dict[str, np.ndarray], meta: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(iq (1, R, 2, T) float32, receiver_mask (1, R) float32) in the model's receiver order."""
    station_ids = json.loads(meta["station_ids"])  # receiver k of the model is station_ids[k]
    n_samples = int(meta["n_samples"])
    iq = np.zeros((1, len(station_ids), 2, n_samples), np.float32)
    mask = np.zeros((1, len(station_ids)), np.float32)
    for sid, rec in zip(sample["station_ids"].tolist(), sample["iq"], strict=True):
        if sid not in station_ids:
            continue  # a receiver the model was not trained with
        if rec.shape[-1] != n_samples:
            sys.exit(f"station {sid}: {rec.shape[-1]} samples, the model reads exactly {n_samples}")
        k = station_ids.index(sid)
        iq[0, k, 0], iq[0, k, 1] = rec.real, rec.imag  # channel 0 = I, 1 = Q; units sqrt(mW)
        mask[0, k] = 1.0
    return iq, mask


def locate(model_ref: str, sample_path: Path) -> dict:
    path = fetch_model(model_ref)
    session, meta = load_model(path)
    with np.load(sample_path, allow_pickle=False) as npz:
        sample = {k: npz[k] for k in npz.files}
    iq, mask = build_inputs(sample, meta)
    position, covariance = session.run(
        ["position_enu_m", "covariance_enu_m2"], {"iq": iq, "receiver_mask": mask}
    )
    p, c = position[0].astype(np.float64), covariance[0].astype(np.float64)
    lat0, lon0 = float(meta["frame_origin_lat"]), float(meta["frame_origin_lon"])
    lat, lon = to_latlon(p, lat0, lon0)
    out = {
        "session_id": str(sample["session_id"]),
        "model_id": meta.get("model_id"),
        "position": {
            "latitude": float(lat),
            "longitude": float(lon),
            "east_m": float(p[0]),
            "north_m": float(p[1]),
        },
        "covariance_enu_m2": c.tolist(),
        "ellipses": {"1sigma": ellipse(c, 1.0), "2sigma": ellipse(c, 2.0)},
        "receivers_used": [s for s, m in zip(json.loads(meta["station_ids"]), mask[0], strict=True) if m > 0],
    }
    if "truth_latitude" in sample:
        tlat, tlon = float(sample["truth_latitude"]), float(sample["truth_longitude"])
        out["truth"] = {"latitude": tlat, "longitude": tlon, "error_m": haversine_m(lat, lon, tlat, tlon)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="model.onnx, its folder, or models:/heimdall-localizer@champion"
    )
    parser.add_argument("--sample", type=Path, default=HERE / "sample_session.npz", help="session .npz")
    args = parser.parse_args(argv)
    print(json.dumps(locate(args.model, args.sample), indent=2))


if __name__ == "__main__":
    main()
