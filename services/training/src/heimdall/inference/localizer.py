"""A Heimdall ``model.onnx`` and its metadata: predict in metres, convert to latitude/longitude.

Needs only numpy, onnxruntime and :mod:`heimdall.geo` at run time: everything a prediction needs —
receiver order and positions, frame origin, input length, feature configuration, covariance
calibration — is read from the file's metadata (see :func:`~heimdall.inference.graph.model_metadata`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.errors import PathNotFoundError
from heimdall.features import SCALAR_NAMES, FeatureConfig
from heimdall.geo import LocalFrame
from heimdall.inference.contract import (
    FREQUENCY_INPUT,
    MAX_RECEIVERS,
    MAX_SAMPLES,
    REQUIRED_CALLER_KEYS,
    SUPPORTED_CONTRACTS,
    TRUST_OUTPUT,
    NotAHeimdallModelError,
    first_line,
    input_names,
    output_names,
)
from heimdall.inference.inputs import InputSpec

__all__ = ["OnnxLocalizer", "Prediction", "ellipse", "ort_session"]

log = logging.getLogger("heimdall.inference")
#: Models already warned about in this process (an uncalibrated model is said once, not per session).
_WARNED_UNCALIBRATED: set[str] = set()


def ort_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types derive from Exception only
        where = "<bytes>" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise PathNotFoundError(f"model {where} does not exist") from None
        raise NotAHeimdallModelError(
            f"{where} is not a readable ONNX model (truncated, or not ONNX at all): {first_line(exc)}"
        ) from None


def ellipse(
    cov: ArrayLike, n_sigma: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Error ellipse of ENU covariances ``(..., 2, 2)`` (m², axes east, north).

    Returns ``(semi_major_m, semi_minor_m, orientation_deg)``: semi-axes are ``n_sigma·sqrt(λ)`` of the
    eigenvalues; the orientation is the azimuth of the major axis in degrees **clockwise from north**
    (0 = north-south, 90 = east-west), folded into [0, 180) since an axis has no direction. A 1-sigma
    ellipse holds 39.3 % of a 2-D Gaussian; ``n_sigma=2.4477`` gives 95 %.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.shape[-2:] != (2, 2):
        raise ValueError(f"cov must have shape (..., 2, 2), got {c.shape}")
    if n_sigma <= 0:
        raise ValueError(f"n_sigma must be > 0, got {n_sigma}")
    ee, nn_, en = c[..., 0, 0], c[..., 1, 1], 0.5 * (c[..., 0, 1] + c[..., 1, 0])
    vals, vecs = np.linalg.eigh(np.stack([np.stack([ee, en], -1), np.stack([en, nn_], -1)], -2))
    major = vecs[..., :, 1]  # eigh sorts ascending: column 1 is the major axis (east, north)
    azimuth = np.degrees(np.arctan2(major[..., 0], major[..., 1])) % 180.0
    azimuth = np.where(np.isclose(azimuth, 180.0), 0.0, azimuth)
    semi = n_sigma * np.sqrt(np.clip(vals, 0.0, None))
    return semi[..., 1], semi[..., 0], azimuth


class Prediction(NamedTuple):
    """What :meth:`OnnxLocalizer.localize` returns, float64: metres, m² and each receiver's weight."""

    position_enu_m: NDArray[np.float64]  # (B, 2)
    covariance_enu_m2: NDArray[np.float64]  # (B, 2, 2), calibrated
    #: (B, R): 1 = the reading was used, 0 = absent or set aside (present but fitting no position);
    #: None for a file written before the ``receiver_trust`` output, which cannot say
    receiver_trust: NDArray[np.float64] | None

    def set_aside(self, receiver_mask: ArrayLike) -> NDArray[np.bool_]:
        """(B, R): present in ``receiver_mask`` and set aside by the model (all False when unknown)."""
        present = np.asarray(receiver_mask, dtype=np.float64) > 0.5
        if self.receiver_trust is None:
            return np.zeros_like(present)
        return present & (self.receiver_trust < 0.5)


def _warn_uncalibrated(key: str) -> None:
    if key in _WARNED_UNCALIBRATED:
        return
    _WARNED_UNCALIBRATED.add(key)
    log.warning(
        "model %s carries no fitted covariance calibration (exported before calibration shipped): "
        "its ellipses are the network's, scale 1; retrain to ship a validation-fitted scale",
        key,
    )


class OnnxLocalizer:
    """A Heimdall ``model.onnx`` plus its metadata: predict in metres, convert to latitude/longitude.

    Needs only numpy, onnxruntime and :mod:`heimdall.geo` at run time. ``threads`` (default 1, the
    budget the latency figures assume) sets ONNX Runtime's intra- and inter-op threads.

    Besides the contract keys it reads ``receivers`` (ids, names, latitude/longitude/altitude, when the
    file has them) and ``calibration``. :meth:`predict` always returns the *calibrated* covariance, the
    one the model was evaluated with: models from ``heimdall train`` carry the validation-fitted scale
    inside the graph (``applied_in_graph``), so the graph's output is used as is; an older file that only
    records a scale in its metadata gets it applied here. ``covariance_scale`` is the shipped scale
    either way. A model with no fitted calibration (exported before calibration shipped) loads with
    scale 1 and one warning per process.

    Contract 2 and 3 files take each session's carrier ``frequency_hz`` (:meth:`predict`); contract 1 files
    (two inputs, exported before the carrier was an input) still load and run, without it
    (``reads_frequency`` False). Which one a file is, is checked against its graph's input names.

    :meth:`localize` also returns ``receiver_trust`` (B, R), where a receiver the model set aside (a
    reading no position explains) is 0; contract-1 and -2 files, written before that output
    (``reports_trust`` False), give None there. :meth:`predict` is the position and covariance alone.
    """

    def __init__(self, model: str | Path | bytes, threads: int | None = 1) -> None:
        self.session = ort_session(model, threads=threads)
        meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        where = "<bytes>" if isinstance(model, bytes) else str(model)
        required = ["heimdall_onnx_contract", "input_kind", "n_receivers", *REQUIRED_CALLER_KEYS]
        missing = [k for k in required if k not in meta]
        if missing:
            raise NotAHeimdallModelError(f"{where} is not a Heimdall model: metadata lacks {missing}")
        self.contract: str = meta["heimdall_onnx_contract"]
        if self.contract not in SUPPORTED_CONTRACTS:
            raise NotAHeimdallModelError(
                f"{where} uses ONNX contract {self.contract!r}, this code reads "
                f"{', '.join(map(repr, SUPPORTED_CONTRACTS))}"
            )
        self.metadata = meta
        self.input_kind: str = meta["input_kind"]
        try:
            self.n_receivers = int(meta["n_receivers"])
            self.n_samples: int | None = int(meta["n_samples"]) if "n_samples" in meta else None
            self.station_ids: tuple[int, ...] = tuple(int(s) for s in json.loads(meta["station_ids"]))
            names = json.loads(meta.get("station_names", "null"))
            self.station_names: tuple[str, ...] | None = tuple(names) if names is not None else None
            self.frame = LocalFrame(float(meta["frame_origin_lat"]), float(meta["frame_origin_lon"]))
            fill = meta.get("frequency_fill_hz")
            #: the carrier the model assumes for an unknown one (None: it does not read the carrier)
            self.frequency_fill_hz: float | None = float(fill) if fill is not None else None
        except (TypeError, ValueError) as exc:
            raise NotAHeimdallModelError(f"{where}: malformed Heimdall metadata: {exc}") from None
        self.model_id: str | None = meta.get("model_id")
        if not 1 <= self.n_receivers <= MAX_RECEIVERS or len(self.station_ids) != self.n_receivers:
            raise NotAHeimdallModelError(
                f"{where}: metadata n_receivers={self.n_receivers} with {len(self.station_ids)} station_ids "
                f"(need 1..{MAX_RECEIVERS}, one id per receiver)"
            )
        if self.n_samples is not None and not 1 <= self.n_samples <= MAX_SAMPLES:
            raise NotAHeimdallModelError(
                f"{where}: metadata n_samples={self.n_samples} is outside 1..{MAX_SAMPLES} "
                "(at most 64 MiB of float32 IQ per receiver)"
            )
        self._input_names = [i.name for i in self.session.get_inputs()]
        expected = list(input_names(self.contract, self.input_kind))
        if self._input_names != expected:
            raise NotAHeimdallModelError(
                f"{where}: contract {self.contract} with input_kind {self.input_kind!r} needs inputs "
                f"{expected}, the graph has {self._input_names}"
            )
        #: whether the graph takes ``frequency_hz`` (contract ≥ 2); a contract-1 file predicts without it
        self.reads_frequency = FREQUENCY_INPUT in self._input_names
        self._output_names = tuple(o.name for o in self.session.get_outputs())
        allowed = output_names(self.contract)
        if self._output_names not in allowed:
            raise NotAHeimdallModelError(
                f"{where}: contract {self.contract} needs outputs "
                f"{' or '.join(str(list(a)) for a in allowed)}, the graph has {list(self._output_names)}"
            )
        #: whether the graph says which receivers it set aside (``receiver_trust``); older files do not
        self.reports_trust = TRUST_OUTPUT in self._output_names
        try:
            self.receivers: tuple[dict[str, Any], ...] | None = (
                tuple(dict(r) for r in json.loads(meta["receivers"])) if "receivers" in meta else None
            )
            calibration = json.loads(meta.get("calibration", "{}"))
            self.calibration: dict[str, Any] = dict(calibration)
            self.covariance_scale = float(calibration.get("covariance_scale", 1.0))
            in_graph = bool(calibration.get("applied_in_graph", False))
        except (TypeError, ValueError, AttributeError) as exc:
            raise NotAHeimdallModelError(f"{where}: malformed Heimdall metadata: {exc}") from None
        if self.receivers is not None and [r.get("station_id") for r in self.receivers] != list(
            self.station_ids
        ):
            raise NotAHeimdallModelError(f"{where}: metadata receivers do not follow station_ids")
        if not (np.isfinite(self.covariance_scale) and self.covariance_scale > 0):
            raise NotAHeimdallModelError(
                f"{where}: calibration covariance_scale={self.covariance_scale} is not a finite number > 0"
            )
        #: what :meth:`predict` multiplies the graph's covariance by (1.0 when the graph applies the scale)
        self._post_scale = 1.0 if in_graph else self.covariance_scale
        self.calibrated = self.calibration.get("fitted_on") is not None
        if not self.calibrated:
            _warn_uncalibrated(self.model_id or where)

    @property
    def n_scalars(self) -> int:
        """Width S of a power-only model's ``scalars (B, R, S)`` input (4, or 6 for moving receivers)."""
        n = self.session.get_inputs()[0].shape[2] if self.input_kind != "iq" else None
        return n if isinstance(n, int) else len(SCALAR_NAMES)

    def feature_config(self) -> FeatureConfig:
        """The feature configuration the model was trained with (needed to compute a power-only model's
        scalars from IQ; an IQ model computes its features inside the graph)."""
        meta = self.metadata
        if "feature_config" in meta:
            try:
                return FeatureConfig(**json.loads(meta["feature_config"]))
            except (TypeError, ValueError) as exc:
                raise NotAHeimdallModelError(
                    f"model {self.model_id}: malformed feature_config metadata: {exc}"
                ) from None
        cfg = FeatureConfig()
        if meta.get("feature_config_hash") not in (None, cfg.config_hash()):
            raise NotAHeimdallModelError(
                "this power-only model was trained with non-default feature settings that its metadata "
                "does not record; compute its scalars with the training feature configuration"
            )
        return cfg

    def input_spec(self, *, features: bool = True) -> InputSpec:
        """What :func:`heimdall.inference.inputs.model_inputs` needs to build this model's inputs.

        A power-only model fed IQ needs its feature configuration (``features=True``, the default);
        ``features=False`` skips reading it, for power rows only.
        """
        scalars_from_iq = self.input_kind != "iq" and features
        return InputSpec(
            station_ids=self.station_ids,
            input_kind=self.input_kind,
            n_samples=self.n_samples,
            n_scalars=self.n_scalars,
            feature_config=self.feature_config() if scalars_from_iq else None,
        )

    def _prepare(self, inputs: ArrayLike) -> NDArray[np.float32]:
        x = np.asarray(inputs)
        if self.input_kind == "iq" and np.iscomplexobj(x):  # (B, R, T) complex → (B, R, 2, T)
            x = np.stack([x.real, x.imag], axis=-2)
        x = x.astype(np.float32, copy=False)
        tail = (2, self.n_samples) if self.input_kind == "iq" else (self.n_scalars,)
        if x.ndim != 2 + len(tail) or x.shape[1] != self.n_receivers:
            got = x.shape[1] if x.ndim >= 2 else "no receiver axis"
            raise ValueError(
                f"model expects {self.n_receivers} receivers (stations {list(self.station_ids)}), got {got} "
                f"(input shape {x.shape}, expected (B, {self.n_receivers}, {', '.join(map(str, tail))}))"
            )
        if x.shape[2:] != tail:
            raise ValueError(f"input shape {x.shape} does not match (B, {self.n_receivers}, {tail})")
        return np.ascontiguousarray(x)

    @staticmethod
    def _frequencies(frequency_hz: ArrayLike | None, batch: int) -> NDArray[np.float32]:
        """(B,) float32 carriers: None = unknown (NaN), one number = every session's; > 0 Hz or NaN."""
        if frequency_hz is None:
            return np.full(batch, np.nan, np.float32)
        f = np.asarray(frequency_hz, dtype=np.float64)
        if f.ndim == 0:
            f = np.full(batch, float(f))
        if f.shape != (batch,):
            raise ValueError(f"frequency_hz must be one number or have shape ({batch},), got {f.shape}")
        bad = ~np.isnan(f) & ~(np.isfinite(f) & (f > 0))
        if bad.any():
            raise ValueError(
                f"frequency_hz must be a carrier > 0 Hz or NaN (unknown), got {f[bad][0]!r} "
                f"(session {int(np.flatnonzero(bad)[0])})"
            )
        return f.astype(np.float32)

    def predict(
        self, inputs: ArrayLike, receiver_mask: ArrayLike, frequency_hz: ArrayLike | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``position_enu_m`` (B, 2) and the calibrated ``covariance_enu_m2`` (B, 2, 2), float64; the
        arguments are :meth:`localize`'s."""
        position, covariance, _ = self.localize(inputs, receiver_mask, frequency_hz)
        return position, covariance

    def localize(
        self, inputs: ArrayLike, receiver_mask: ArrayLike, frequency_hz: ArrayLike | None = None
    ) -> Prediction:
        """IQ ``(B, R, 2, T)`` float or ``(B, R, T)`` complex, or scalars ``(B, R, 4)``, plus mask ``(B, R)``.

        ``frequency_hz``: each session's carrier in Hz, ``(B,)`` or one number for all; None or NaN =
        unknown, which a contract-2 or -3 model reads as its training median carrier
        (:attr:`frequency_fill_hz`). A contract-1 model ignores it.

        Returns the :class:`Prediction`: position, calibrated covariance and ``receiver_trust``.
        """
        x = self._prepare(inputs)
        mask = np.asarray(receiver_mask).astype(np.float32)
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"receiver_mask must have shape {x.shape[:2]} (B, {self.n_receivers} receivers), "
                f"got {mask.shape}"
            )
        feeds = [x, mask]
        if self.reads_frequency:
            feeds.append(self._frequencies(frequency_hz, x.shape[0]))
        position, covariance, *trust = self.session.run(
            list(self._output_names), dict(zip(self._input_names, feeds, strict=True))
        )
        cov = covariance.astype(np.float64)
        return Prediction(
            position.astype(np.float64),
            cov if self._post_scale == 1.0 else cov * self._post_scale,
            trust[0].astype(np.float64) if trust else None,
        )

    def to_latlon(self, position_enu_m: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(…, 2) metres east/north of the model's frame → (lat, lon) WGS-84 degrees, float64."""
        return self.frame.to_latlon(np.asarray(position_enu_m, dtype=np.float64))

    @staticmethod
    def ellipse(
        cov: ArrayLike, n_sigma: float = 1.0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """See :func:`ellipse`."""
        return ellipse(cov, n_sigma)
