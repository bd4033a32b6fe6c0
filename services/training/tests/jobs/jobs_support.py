"""Independent answers for the jobs tests: errors recomputed one session at a time, distances by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from heimdall.settings import Settings


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine on a 6371008.8 m sphere, written out here so no figure is checked against itself."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, a)))


def model_errors_one_by_one(settings: Settings, model_dir: Path, split: str = "test") -> dict[str, float]:
    """{session id: error (m)} of model.onnx on the sessions split.json lists, recomputed independently.

    One session at a time through the predict path (not the arrays training or evaluation batch), against
    the truth stored in the session's source row, with the distance written out above.
    """
    from heimdall.inference.localizer import OnnxLocalizer
    from heimdall.jobs.predict import session_inputs
    from heimdall.services import open_services
    from heimdall.storage.queries import get_session

    ids = json.loads((model_dir / "split.json").read_text())[split]
    loc = OnnxLocalizer(model_dir / "model.onnx")
    services = open_services(settings)
    try:
        errors = {}
        for sid in ids:
            x = session_inputs(services, sid, loc)
            pos, _ = loc.predict(x.inputs, x.receiver_mask, x.frequencies)
            lat, lon = loc.to_latlon(pos[0])
            truth = get_session(services.db, sid).source
            assert truth is not None, sid
            errors[sid] = great_circle_m(float(lat), float(lon), truth.latitude, truth.longitude)
    finally:
        services.close()
    return errors


def rmse_and_median(errors: dict[str, float]) -> tuple[float, float]:
    e = np.array(list(errors.values()))
    return float(np.sqrt(np.mean(e**2))), float(np.median(e))
