"""Locate the transmitter of one recorded session with a Heimdall ``model.onnx`` (the inference-service path).

    python services/training/examples/infer_sample.py --model models/model.onnx
    python services/training/examples/infer_sample.py --model models:/heimdall-localizer@champion
    python services/training/examples/infer_sample.py --model models/model.onnx --sample my_session.npz

It runs the one inference path of the ``heimdall`` package, with no database and no object store:
:class:`heimdall.inference.localizer.OnnxLocalizer` reads everything it needs from the model file
(receivers, frame origin, input length, feature configuration, calibration) and
:func:`heimdall.inference.inputs.model_inputs` turns per-station recordings into the model's inputs —
the same function ``heimdall predict``, ``heimdall evaluate`` and training's ONNX parity check use (see
docs/INFERENCE_HANDOFF.md; mlflow is only needed to fetch a ``models:/`` URI from the registry at
``MLFLOW_TRACKING_URI``). The default sample,
``sample_session.npz`` beside this file, is one simulated nw-italy-v2 session of 7 receivers × 0.5 s
(6,250 samples at 12.5 kHz, the simulator's default), so it fits the quickstart's model; a model
trained on shorter recordings reads the middle of each (a centred crop, reported in ``notes``).

Prints JSON: position (lat/lon, WGS-84, float64), covariance (m², east/north), 1σ/2σ ellipses, the
carrier frequency fed to the model (the sample's ``frequency_hz``), the receivers used and those the
model set aside (``receiver_trust`` 0: a reading that fits no position), and the error against the
sample's known transmitter position.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import UserError
from heimdall.geo import haversine_m
from heimdall.inference.checks import crop_centred
from heimdall.inference.formats import SIGMA_LEVELS, ellipse_params
from heimdall.inference.inputs import model_inputs
from heimdall.inference.localizer import OnnxLocalizer

HERE = Path(__file__).resolve().parent


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


def locate(model_ref: str, sample_path: Path) -> dict[str, Any]:
    loc = OnnxLocalizer(fetch_model(model_ref))  # one thread: the latency budget assumes one core
    with np.load(sample_path, allow_pickle=False) as npz:
        sample = {k: npz[k] for k in npz.files}
    # station id → complex recording (√mW); stations the model does not know are ignored; a recording
    # longer than the model reads is cropped to its middle (as `heimdall locate` does)
    rate = float(sample.get("sample_rate_hz", 12_500.0))
    recordings, notes = {}, []
    for station, iq in zip(sample["station_ids"].tolist(), sample["iq"], strict=True):
        kept, note = crop_centred(iq, loc.n_samples, rate)
        if kept is None:
            raise UserError(f"station {station}: {note}")
        recordings[station] = kept
        if note and note not in notes:
            notes.append(note)
    # the session's carrier is an input (433.5 MHz loses ~9.5 dB more than 145.5 MHz); None = unknown
    frequency = float(sample["frequency_hz"]) if "frequency_hz" in sample else None
    inputs = model_inputs(
        loc.input_spec(), recordings, session_id=str(sample["session_id"]), frequency_hz=frequency
    )
    # the covariance comes out calibrated (the validation-fitted scale is part of the model)
    prediction = loc.localize(inputs.inputs, inputs.receiver_mask, inputs.frequencies)
    p, c = prediction.position_enu_m[0], prediction.covariance_enu_m2[0]
    # receivers whose reading the model set aside (it fits no position: uncalibrated, faulty, interfered);
    # None for a model file of contract 1 or 2, written before the receiver_trust output
    aside = prediction.set_aside(inputs.receiver_mask)[0]
    set_aside = [loc.station_ids[k] for k in np.flatnonzero(aside)] if loc.reports_trust else None
    lat, lon = loc.to_latlon(p)
    out: dict[str, Any] = {
        "session_id": inputs.session_id,
        "model_id": loc.model_id,
        "covariance_scale": loc.covariance_scale,
        "position": {
            "latitude": float(lat),
            "longitude": float(lon),
            "east_m": float(p[0]),
            "north_m": float(p[1]),
        },
        "covariance_enu_m2": c.tolist(),
        "ellipses": {name: ellipse_params(c, n) for name, n in SIGMA_LEVELS.items()},
        "frequency_hz": inputs.frequency_hz,
        "receivers_used": [s for s in inputs.used_stations if s not in (set_aside or ())],
        "receivers_set_aside": set_aside,
        "notes": notes,
    }
    if "truth_latitude" in sample:
        tlat, tlon = float(sample["truth_latitude"]), float(sample["truth_longitude"])
        error_m = float(haversine_m(lat, lon, tlat, tlon))
        out["truth"] = {"latitude": tlat, "longitude": tlon, "error_m": error_m}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="model.onnx, its folder, or models:/heimdall-localizer@champion"
    )
    parser.add_argument("--sample", type=Path, default=HERE / "sample_session.npz", help="session .npz")
    args = parser.parse_args(argv)
    try:
        result = locate(args.model, args.sample)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
