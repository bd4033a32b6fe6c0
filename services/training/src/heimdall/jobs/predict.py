"""``heimdall predict``: resolve the model → one stored session's inputs → ONNX Runtime → JSON / GeoJSON.

``heimdall predict`` is what the inference service does, run from the training side: the same
``model.onnx`` (from the registry, e.g. ``models:/heimdall-localizer@champion``, or a file), inputs built
by :func:`heimdall.inference.inputs.model_inputs` (calibrated IQ per receiver in the model's station
order, plus a presence mask and the session's carrier frequency) — the function training's parity
check, ``heimdall evaluate`` and the handoff example use too — and latitude/longitude computed in
float64 from the frame origin stored in the model (:mod:`heimdall.inference.formats`). The covariance
is the calibrated one the model ships (the validation-fitted scale is part of its graph), i.e. the
covariance ``heimdall evaluate`` measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heimdall.data.recordings import stored_recordings
from heimdall.errors import PathNotFoundError, UserError
from heimdall.inference.formats import as_geojson, as_json, predict_session
from heimdall.inference.inputs import SessionInputs, model_inputs
from heimdall.inference.localizer import OnnxLocalizer

if TYPE_CHECKING:
    from heimdall.services import Services
    from heimdall.settings import Settings

__all__ = [
    "ModelLoadError",
    "is_mlflow_uri",
    "load_localizer",
    "predict",
    "predict_stored",
    "resolve_model",
    "session_inputs",
]


class ModelLoadError(UserError):
    """The model reference cannot be resolved to a Heimdall ``model.onnx``."""


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
# One stored session → model inputs (a thin adapter: storage reads, inference builds)
# --------------------------------------------------------------------------------------------------------


def session_inputs(services: Services, session_id: str, loc: OnnxLocalizer) -> SessionInputs:
    """Read a stored session (rows from the database, IQ from the object store) into model inputs, with
    the session's carrier (its rows' ``frequency_hz``) as the model's band."""
    stored = stored_recordings(services.db, services.store, session_id, set(loc.station_ids))
    return model_inputs(
        loc.input_spec(features=bool(stored.recordings)),
        stored.recordings,
        stored.power,
        measured=stored.measured,
        session_id=stored.session_id,
        truth_latlon=stored.truth_latlon,
        frequency_hz=stored.frequency_hz,
    )


def predict(
    services: Services, session_id: str, model: str, fmt: str = "json", dst: Path | None = None
) -> dict[str, Any]:
    """``heimdall predict`` as a function: JSON dict or GeoJSON FeatureCollection."""
    if fmt not in ("json", "geojson"):
        raise UserError(f"unknown format {fmt!r}: use json or geojson")
    loc = load_localizer(model, services.settings, dst)
    result = predict_session(loc, session_inputs(services, session_id, loc), model)
    return as_geojson(result) if fmt == "geojson" else as_json(result)


def predict_stored(settings: Settings, session_id: str, model: str, fmt: str = "json") -> dict[str, Any]:
    """The whole ``heimdall predict`` use case: open the services, predict one stored session, close."""
    from heimdall.services import open_services

    services = open_services(settings)
    try:
        return predict(services, session_id, model, fmt)
    finally:
        services.close()
