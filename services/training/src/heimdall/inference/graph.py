"""The whole inference path as one torch module, and the metadata a model file carries.

The inference service must not re-implement feature extraction or standardisation (any drift there
silently moves every prediction), so :class:`InferenceGraph` puts the whole path — features from raw
IQ, :class:`~heimdall.data.normalization.NormStats` standardisation, the network and ``Σ = L Lᵀ`` —
into a single graph whose inputs are what a receiver delivers. :func:`model_metadata` is what travels
with it in the model's ``metadata_props`` (receivers and their positions, the frame origin, the full
feature configuration and the covariance calibration), so a ``model.onnx`` alone is enough to turn
recordings into latitude/longitude (:class:`~heimdall.inference.localizer.OnnxLocalizer`).

The covariance calibration (a multiplier fitted on validation at the end of training) is a *graph
constant*: ``covariance_enu_m2`` leaves the graph calibrated, so every consumer — ours, the inference
service, a third party with bare ONNX Runtime — reports the ellipses that were evaluated, with no code.
The metadata records the same value (``calibration.covariance_scale``, ``applied_in_graph: true``) and
how it was chosen.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from heimdall.data.normalization import NormStats
from heimdall.features import SCALAR_NAMES, FeatureConfig, TorchFeatureExtractor
from heimdall.inference.contract import IQ_INPUT_NAMES, OUTPUT_NAMES, SCALAR_INPUT_NAMES, check_model_id
from heimdall.model import LocalizationNet

if TYPE_CHECKING:
    from heimdall.data.network import ReceiverNetwork

__all__ = ["DEFAULT_CALIBRATION", "InferenceGraph", "io_docs", "model_metadata"]

#: What a model carries when nothing was fitted: ``covariance_enu_m2`` as the network gives it.
#: ``heimdall train`` fits the scale on validation and bakes it into the graph (``applied_in_graph``).
DEFAULT_CALIBRATION: dict[str, object] = {
    "covariance_scale": 1.0,
    "fitted_on": None,
    "applied_in_graph": True,
}


class InferenceGraph(nn.Module):
    """Raw receiver inputs → (position_enu_m (B, 2), covariance_enu_m2 (B, 2, 2), receiver_trust (B, R)).

    * ``from_iq=True`` (default when the net uses spectrograms): ``forward(iq (B, R, 2, T),
      receiver_mask (B, R), frequency_hz (B,))`` with calibrated I and Q (``mean(I²+Q²)`` = power in
      mW) as two real channels; features come from :class:`TorchFeatureExtractor`, so ``T`` is fixed
      at export.
    * ``from_iq=False`` (power-only nets): ``forward(scalars (B, R, S), receiver_mask (B, R),
      frequency_hz (B,))`` with raw ``SCALAR_NAMES`` values (S = 4), followed by any extra channels the
      net was trained with (S = 6 for moving receivers: ``heimdall.data.arrays.MOVING_SCALAR_NAMES``);
      NaN means unknown and becomes the training mean, as in training.

    ``frequency_hz`` is each session's carrier in Hz (ONNX contract 2); NaN = unknown, which the
    network reads as its training median carrier. A network built with ``use_frequency=False``
    ignores it (the input stays in the graph: every file since contract 2 takes the same three inputs).

    Standardisation replicates :meth:`NormStats.apply` exactly (NaN → 0 after standardising, absent
    receivers → 0), so absent receivers' inputs (zeros, huge values) never reach the outputs.

    ``covariance_scale`` (the validation-fitted calibration, 1.0 = none) multiplies ``L Lᵀ`` inside the
    graph; it is the buffer (ONNX initializer) ``covariance_scale``.

    ``receiver_trust`` is the weight each receiver's reading had in the estimate: 1 = used, 0 = absent,
    or present but *set aside* — a net with ``localize`` (the radio map, alone or fused) sets aside a
    reading that no position explains (an uncalibrated, faulty or interfered receiver), and a consumer
    must say so rather than present the estimate as made from every receiver. A net without
    ``localize`` uses every present receiver: its trust is the mask.
    """

    spec_mean: Tensor
    spec_std: Tensor
    scalar_mean: Tensor
    scalar_std: Tensor
    covariance_scale: Tensor

    def __init__(
        self,
        net: LocalizationNet,
        stats: NormStats,
        feature_config: FeatureConfig | None = None,
        from_iq: bool | None = None,
        covariance_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not (np.isfinite(covariance_scale) and covariance_scale > 0):
            raise ValueError(f"covariance_scale must be a finite number > 0, got {covariance_scale!r}")
        feature_config = FeatureConfig() if feature_config is None else feature_config
        from_iq = bool(net.use_spectrogram) if from_iq is None else bool(from_iq)
        if net.use_spectrogram and not from_iq:
            raise ValueError(
                "the network uses spectrograms, which only the IQ path computes: use from_iq=True"
            )
        n_scalars = len(SCALAR_NAMES)
        # the IQ path computes exactly SCALAR_NAMES; power-only nets may append channels after them
        fits = net.n_scalars == n_scalars if from_iq else net.n_scalars >= n_scalars
        if not fits or np.shape(stats.scalar_mean) != (net.n_scalars,):
            raise ValueError(
                f"the ONNX contract feeds the {n_scalars} scalars {SCALAR_NAMES}; network has "
                f"n_scalars={net.n_scalars}, NormStats has {np.shape(stats.scalar_mean)[0]} scalar stats"
            )
        if net.use_spectrogram and not (
            net.n_bands == feature_config.n_bands and np.shape(stats.spec_mean) == (net.n_bands,)
        ):
            raise ValueError(
                f"band mismatch: network n_bands={net.n_bands}, feature config n_bands="
                f"{feature_config.n_bands}, NormStats spec stats {np.shape(stats.spec_mean)}"
            )
        self.net = net.eval()
        self.from_iq = from_iq
        self.feature_config = feature_config
        self.n_receivers = int(net.n_receivers)
        self.n_scalars = int(net.n_scalars)
        self.features = TorchFeatureExtractor(feature_config) if from_iq else None
        spec_mean = stats.spec_mean if net.use_spectrogram else np.zeros(0)
        spec_std = stats.spec_std if net.use_spectrogram else np.ones(0)
        self.register_buffer("spec_mean", _f32(spec_mean)[:, None])  # (C, 1): broadcasts over frames
        self.register_buffer("spec_std", _f32(spec_std)[:, None])
        self.register_buffer("scalar_mean", _f32(stats.scalar_mean))
        self.register_buffer("scalar_std", _f32(stats.scalar_std))
        self.register_buffer("covariance_scale", _f32(covariance_scale))

    @property
    def input_names(self) -> tuple[str, ...]:
        return IQ_INPUT_NAMES if self.from_iq else SCALAR_INPUT_NAMES

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES

    @property
    def sets_aside(self) -> bool:
        """Whether the net can set a present receiver aside (it has ``localize``: the radio map)."""
        return callable(getattr(self.net, "localize", None))

    @property
    def frequency_fill_hz(self) -> float | None:
        """The carrier an unknown ``frequency_hz`` stands for (None: the network ignores the carrier)."""
        if not getattr(self.net, "use_frequency", False):
            return None
        return float(self.net.frequency_fill_hz)

    def forward(
        self, inputs: Tensor, receiver_mask: Tensor, frequency_hz: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``inputs``: IQ (B, R, 2, T) or raw scalars (B, R, 4); ``receiver_mask`` (B, R), 1 = present;
        ``frequency_hz`` (B,) carrier in Hz, NaN = unknown."""
        r = self.n_receivers
        if inputs.dim() < 2 or inputs.shape[1] != r:
            raise ValueError(f"model expects {r} receivers on axis 1, got input shape {tuple(inputs.shape)}")
        if frequency_hz.dim() != 1:
            raise ValueError(f"frequency_hz must have shape (B,), got {tuple(frequency_hz.shape)}")
        present = receiver_mask > 0.5
        spectrogram: Tensor = inputs.new_zeros(1)  # ignored by power-only nets
        if self.features is not None:
            if inputs.dim() != 4 or inputs.shape[2] != 2:
                raise ValueError(f"iq must have shape (B, {r}, 2, T), got {tuple(inputs.shape)}")
            feats = self.features(inputs.flatten(0, 1))
            scalars = feats.scalars.unflatten(0, (-1, r))  # (B, R, 4)
            if self.net.use_spectrogram:
                spec = (feats.log_mel - self.spec_mean) / self.spec_std
                spec = spec.unflatten(0, (-1, r))  # (B, R, C, F)
                spectrogram = torch.where(present[:, :, None, None], spec, torch.zeros_like(spec))
        else:
            if inputs.dim() != 3 or inputs.shape[2] != self.n_scalars:
                raise ValueError(
                    f"scalars must have shape (B, {r}, {self.n_scalars}), got {tuple(inputs.shape)}"
                )
            scalars = inputs
        sc = torch.nan_to_num((scalars - self.scalar_mean) / self.scalar_std, nan=0.0)
        sc = torch.where(present[:, :, None], sc, torch.zeros_like(sc))
        used = present.float()
        carrier = frequency_hz.float()
        if self.sets_aside:
            position, scale_tril, trust = self.net.localize(spectrogram, sc, receiver_mask, carrier)
            used = used * trust.float()
        else:
            position, scale_tril = self.net(spectrogram, sc, receiver_mask, carrier)
        covariance = LocalizationNet.covariance(scale_tril).float() * self.covariance_scale
        return position.float(), covariance, used


def _f32(a: ArrayLike) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def model_metadata(
    network: ReceiverNetwork,
    feature_config: FeatureConfig,
    model_id: str,
    *,
    altitudes_m: Sequence[float | None] | None = None,
    calibration: dict[str, object] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The caller-side metadata :func:`~heimdall.inference.onnx_export.export_onnx` needs.

    Built from the objects it must agree with: receiver ids, names and positions (``receivers``:
    latitude/longitude WGS-84 degrees, ``altitude_m`` when known, else null), the frame origin, the full
    feature configuration and its hash, and the covariance ``calibration`` (:data:`DEFAULT_CALIBRATION`
    unless given; ``applied_in_graph`` says whether the graph's output already carries the scale, which
    :func:`~heimdall.inference.onnx_export.export_onnx` checks against the graph). Nothing else (no
    database, no ``network.json``) is needed to use the model.
    """
    frame = network.frame
    alts = [None] * network.size if altitudes_m is None else list(altitudes_m)
    if len(alts) != network.size:
        raise ValueError(f"altitudes_m has {len(alts)} entries for {network.size} receivers")
    receivers = [
        {
            "station_id": int(sid),
            "name": str(name),
            "latitude": float(lat),
            "longitude": float(lon),
            "altitude_m": None if alt is None else float(alt),
        }
        for sid, name, lat, lon, alt in zip(
            network.station_ids, network.names, network.latitudes, network.longitudes, alts, strict=True
        )
    ]
    cal = dict(DEFAULT_CALIBRATION if calibration is None else calibration)
    scale = cal.get("covariance_scale")
    if not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"calibration covariance_scale must be a finite number > 0, got {scale!r}")
    return {
        "model_id": check_model_id(model_id),
        "frame_origin_lat": repr(float(frame.origin_lat)),
        "frame_origin_lon": repr(float(frame.origin_lon)),
        "station_ids": json.dumps([int(s) for s in network.station_ids]),
        "station_names": json.dumps(list(network.names)),
        "receivers": json.dumps(receivers),
        "feature_config_hash": feature_config.config_hash(),
        "feature_config": json.dumps(dataclasses.asdict(feature_config), sort_keys=True),
        "calibration": json.dumps(cal, sort_keys=True),
        **extra,
    }


def io_docs(graph: InferenceGraph, n_samples: int | None) -> tuple[str, str]:
    r = graph.n_receivers
    fill = graph.frequency_fill_hz
    frequency_doc = (
        "float32 (B,): carrier (centre) frequency of each session in Hz, e.g. 145.5e6 or 433.5e6; "
        + (
            f"NaN = unknown: the model then assumes {fill:.6g} Hz, the median carrier of its training "
            "sessions (frequency_fill_hz)."
            if fill is not None
            else "this model was trained without the carrier and ignores it."
        )
    )
    mask_doc = (
        f"float32 (B, {r}): 1 = receiver present, 0 = absent; receiver k is station_ids[k]. "
        "Absent receivers' inputs are ignored (any finite value)."
    )
    if graph.from_iq:
        cfg = graph.feature_config
        first = {
            "iq": (
                f"float32 (B, {r}, 2, {n_samples}): calibrated baseband IQ per receiver, "
                f"channel 0 = I, 1 = Q, sampled at {cfg.sample_rate:g} Hz, "
                "scaled so mean(I^2+Q^2) is the received power in mW. "
                "Must be finite."
            )
        }
    else:
        first = {
            "scalars": (
                f"float32 (B, {r}, {graph.n_scalars}): raw per-receiver {list(SCALAR_NAMES)} "
                "(dBm, dBm, dB, 0/1)"
                + (
                    ", then receiver_offset_east_km, receiver_offset_north_km (a moving receiver's "
                    "offset from its nominal position, 0 if fixed)"
                    if graph.n_scalars == len(SCALAR_NAMES) + 2
                    else ""
                )
                + "; NaN = unknown."
            )
        }
    inputs = {**first, "receiver_mask": mask_doc, "frequency_hz": frequency_doc}
    outputs = {
        "position_enu_m": (
            "float32 (B, 2): transmitter (east, north) in metres in the local tangent-plane (ENU) frame at "
            "frame_origin_lat/frame_origin_lon (WGS-84 degrees)."
        ),
        "covariance_enu_m2": (
            "float32 (B, 2, 2): covariance of position_enu_m in m^2, axes (east, north); symmetric positive "
            "definite (1-sigma ellipse = its eigen-decomposition)."
        ),
        "receiver_trust": (
            f"float32 (B, {r}): the weight of each receiver's reading in the estimate, receiver k = "
            "station_ids[k]: 1 = used, 0 = absent (receiver_mask 0) or set aside. "
            + (
                "A present receiver at 0 was set aside: its reading fits no position (an uncalibrated, "
                "faulty or interfered receiver); name it to the user."
                if graph.sets_aside
                else "This model uses every present receiver: receiver_trust equals receiver_mask."
            )
        ),
    }
    return json.dumps(inputs), json.dumps(outputs)
