"""``heimdall locate``: a user's recordings → one position and ellipse per capture, with no database.

The model is resolved as ``heimdall predict`` resolves it (:func:`heimdall.jobs.predict.load_localizer`:
a folder, a ``model.onnx`` or ``models:/…``); its receivers, their positions and the frame come from the
model's own metadata, so no database or object store is opened. Recordings are read and grouped by
:mod:`heimdall.inference.recordings_in`, checked against the model by :mod:`heimdall.inference.checks`,
turned into inputs by :func:`heimdall.inference.inputs.model_inputs` (with the capture's carrier, the
``core:frequency`` / sidecar ``frequency_hz`` of its files) and predicted by
:func:`heimdall.inference.formats.predict_session`: the path ``predict`` and the handoff example use.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from heimdall.errors import UserError
from heimdall.inference.checks import MIN_RECEIVERS, CheckedCapture, ReceiverCheck, check_capture
from heimdall.inference.formats import SET_ASIDE_ADVICE, SET_ASIDE_REASON, as_json, predict_session
from heimdall.inference.inputs import model_inputs
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.recordings_in import group_captures, read_user_recordings
from heimdall.jobs.predict import load_localizer
from heimdall.settings import Settings

__all__ = [
    "CaptureEstimate",
    "LocateOutcome",
    "LocateRequest",
    "NetworkReceiver",
    "ReceiverReport",
    "TooFewReceiversError",
    "locate",
]

DEFAULT_MODEL = "models:/heimdall-localizer@champion"


class TooFewReceiversError(UserError):
    """Fewer than :data:`~heimdall.inference.checks.MIN_RECEIVERS` usable receivers in a capture."""


class LocateRequest(BaseModel):
    recordings: list[Path] = Field(min_length=1)
    model: str = DEFAULT_MODEL
    exclude: list[int] = Field(default_factory=list)


class NetworkReceiver(BaseModel):
    """One receiver of the model's network, from its metadata."""

    station_id: int
    name: str | None
    latitude: float | None
    longitude: float | None


class ReceiverReport(BaseModel):
    """One recording of a capture: used (notes say what was done), refused or excluded (reason says why),
    or set aside (it passed the checks, but the model found its reading fits no position)."""

    station_id: int | None
    name: str | None
    source: str  # file name
    status: str  # used | set_aside | refused | excluded
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    sample_rate_hz: float
    n_samples: int
    frequency_hz: float | None = None  # as the file says (the capture's carrier is the model's input)
    latitude: float | None = None  # the model's position of the receiver
    longitude: float | None = None
    power_dbm: float | None = None
    noise_floor_dbm: float | None = None
    snr_db: float | None = None
    heard: bool | None = None

    def line(self) -> str:
        """One line naming the receiver and the reason (refused/excluded) or what was done (used)."""
        who = f"station {self.station_id}" if self.station_id is not None else "receiver"
        who += f" ({self.name})" if self.name else ""
        if self.status == "set_aside":
            return f"set aside: {who} in {self.source}: {SET_ASIDE_ADVICE}"
        what = self.reason if self.reason else "; ".join(self.notes) or "as recorded"
        return f"{self.status}: {who} in {self.source}: {what}"


class Truth(BaseModel):
    latitude: float
    longitude: float
    error_m: float


class CaptureEstimate(BaseModel):
    """One capture's estimate: WGS-84 position, ENU metres, calibrated covariance, receivers, truth."""

    label: str  # the session id of the files, else the capture start (ISO 8601)
    capture_start: str
    latitude: float
    longitude: float
    east_m: float
    north_m: float
    covariance_enu_m2: list[list[float]]
    receivers: list[ReceiverReport]
    truth: Truth | None = None
    #: :func:`heimdall.inference.formats.predict_session`'s dict, as the output formats take it
    prediction: dict[str, Any]

    def used(self) -> list[ReceiverReport]:
        return [r for r in self.receivers if r.status == "used"]

    def refused(self) -> list[ReceiverReport]:
        return [r for r in self.receivers if r.status == "refused"]

    def excluded(self) -> list[ReceiverReport]:
        return [r for r in self.receivers if r.status == "excluded"]

    def set_aside(self) -> list[ReceiverReport]:
        return [r for r in self.receivers if r.status == "set_aside"]

    def as_json(self) -> dict[str, Any]:
        """``predict``'s JSON for this capture, its receivers section extended with every check."""
        out = as_json(self.prediction)
        out["capture"] = {"label": self.label, "start": self.capture_start}
        out["receivers"] = {
            **out["receivers"],
            "refused": [r.model_dump(mode="json") for r in self.refused()],
            "excluded": [r.model_dump(mode="json") for r in self.excluded()],
            "checks": [r.model_dump(mode="json") for r in self.receivers],
        }
        return out


class LocateOutcome(BaseModel):
    model_ref: str
    model_id: str | None
    network: list[NetworkReceiver]
    estimates: list[CaptureEstimate]

    def as_json(self) -> dict[str, Any]:
        return {
            "model": {"ref": self.model_ref, "model_id": self.model_id},
            "network": [r.model_dump(mode="json") for r in self.network],
            "estimates": [e.as_json() for e in self.estimates],
        }

    def lines(self) -> list[str]:
        """Every refusal, exclusion and receiver the model set aside, one line each, prefixed by the
        capture when there are several."""
        many = len(self.estimates) > 1
        return [
            (f"capture {e.label}: " if many else "") + r.line()
            for e in self.estimates
            for r in e.receivers
            if r.status != "used"
        ]


def _network(loc: OnnxLocalizer) -> list[NetworkReceiver]:
    by_id = {int(r["station_id"]): r for r in loc.receivers or ()}
    names = loc.station_names or (None,) * len(loc.station_ids)
    return [
        NetworkReceiver(
            station_id=sid,
            name=name,
            latitude=by_id.get(sid, {}).get("latitude"),
            longitude=by_id.get(sid, {}).get("longitude"),
        )
        for sid, name in zip(loc.station_ids, names, strict=True)
    ]


def _report(chk: ReceiverCheck, network: dict[int, NetworkReceiver]) -> ReceiverReport:
    known = network.get(chk.station_id) if chk.station_id is not None else None
    return ReceiverReport(
        station_id=chk.station_id,
        name=chk.station_name,
        source=chk.source,
        status=chk.status,
        reason=chk.reason,
        notes=chk.notes,
        sample_rate_hz=chk.sample_rate_hz,
        n_samples=chk.n_samples,
        frequency_hz=chk.frequency_hz,
        latitude=known.latitude if known else None,
        longitude=known.longitude if known else None,
        power_dbm=chk.power_dbm,
        noise_floor_dbm=chk.noise_floor_dbm,
        snr_db=chk.snr_db,
        heard=chk.heard,
    )


def _estimate(
    loc: OnnxLocalizer, checked: CheckedCapture, model_ref: str, network: dict[int, NetworkReceiver]
) -> CaptureEstimate:
    capture = checked.capture
    reports = [_report(c, network) for c in checked.checks]
    if len(checked.recordings) < MIN_RECEIVERS:
        others = "; ".join(r.line() for r in reports if r.status != "used") or "no other recordings"
        raise TooFewReceiversError(
            f"capture {capture.label}: {len(checked.recordings)} usable receiver(s), at least "
            f"{MIN_RECEIVERS} are needed ({others})"
        )
    inputs = model_inputs(
        loc.input_spec(),
        checked.recordings,
        session_id=capture.label,
        truth_latlon=capture.truth_latlon,
        frequency_hz=capture.frequency_hz,  # the band the files state; None: the model's training median
    )
    result = predict_session(loc, inputs, model_ref)
    for entry in result["set_aside"] or ():  # passed every check, but its reading fits no position
        for r in reports:
            if r.status == "used" and r.station_id == entry["station_id"]:
                r.status, r.reason = "set_aside", SET_ASIDE_REASON
    pos = result["position"]
    truth = result.get("truth")
    return CaptureEstimate(
        label=capture.label,
        capture_start=capture.start.isoformat().replace("+00:00", "Z"),
        latitude=pos["latitude"],
        longitude=pos["longitude"],
        east_m=pos["east_m"],
        north_m=pos["north_m"],
        covariance_enu_m2=result["covariance_enu_m2"],
        receivers=reports,
        truth=Truth(**truth) if truth is not None else None,
        prediction=result,
    )


def locate(request: LocateRequest, settings: Settings) -> LocateOutcome:
    """Read and group the recordings, resolve the model, check, predict every capture.

    Bad files (unreadable, malformed, wrong dtype) stop everything before the model is fetched; a
    capture with fewer than :data:`MIN_RECEIVERS` usable receivers is a :class:`TooFewReceiversError`.
    """
    recordings = read_user_recordings(request.recordings, settings.max_import_bytes)
    captures = group_captures(recordings)
    with tempfile.TemporaryDirectory(prefix="heimdall-model-") as tmp:
        loc = load_localizer(request.model, settings, Path(tmp))  # the session holds the graph in memory
    unknown = sorted(set(request.exclude) - set(loc.station_ids))
    if unknown:
        raise UserError(
            f"--exclude {','.join(map(str, unknown))}: not a receiver of this model "
            f"(its receivers: {', '.join(map(str, loc.station_ids))})"
        )
    network = _network(loc)
    by_id = {r.station_id: r for r in network}
    estimates = [
        _estimate(loc, check_capture(loc, c, set(request.exclude)), request.model, by_id) for c in captures
    ]
    return LocateOutcome(model_ref=request.model, model_id=loc.model_id, network=network, estimates=estimates)
