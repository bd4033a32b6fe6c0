"""Export a trained localiser as one self-contained ONNX graph, check it, time it and serve it.

The inference service must not re-implement feature extraction or standardisation (any drift there
silently moves every prediction), so :class:`InferenceGraph` puts the whole path — features from raw
IQ, :class:`~heimdall.data.normalization.NormStats` standardisation, the network and ``Σ = L Lᵀ`` —
into a single graph whose inputs are what a receiver delivers. The frame origin, the receiver order
and the feature hash travel in the model's ``metadata_props``, so a ``model.onnx`` alone is enough to
turn a prediction into latitude/longitude (:class:`OnnxLocalizer`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from heimdall.atomic import atomic_path
from heimdall.data.normalization import NormStats
from heimdall.errors import PathNotFoundError, UserError
from heimdall.features import SCALAR_NAMES, FeatureConfig, TorchFeatureExtractor
from heimdall.geo import LocalFrame
from heimdall.model import LocalizationNet

if TYPE_CHECKING:
    from heimdall.data.network import ReceiverNetwork
    from heimdall.storage.objectstore import ObjectStore

__all__ = [
    "CONTRACT_VERSION",
    "OUTPUT_NAMES",
    "InferenceGraph",
    "NotAHeimdallModelError",
    "OnnxLocalizer",
    "ellipse",
    "export_onnx",
    "measure_latency",
    "model_metadata",
    "onnx_parity",
    "upload_model",
]

#: Version of the ONNX I/O contract below; bump on any change of input/output names, shapes or units.
CONTRACT_VERSION = "1"
OUTPUT_NAMES: tuple[str, str] = ("position_enu_m", "covariance_enu_m2")
IQ_INPUT_NAMES: tuple[str, str] = ("iq", "receiver_mask")
SCALAR_INPUT_NAMES: tuple[str, str] = ("scalars", "receiver_mask")

#: Metadata keys written by :func:`export_onnx` itself (callers may not set them).
_RESERVED_KEYS = frozenset(
    {"heimdall_onnx_contract", "inputs_doc", "outputs_doc", "input_kind", "n_receivers", "n_samples"}
)
#: Metadata keys the caller must supply: without them a prediction cannot be placed on the map.
_REQUIRED_CALLER_KEYS = ("frame_origin_lat", "frame_origin_lon", "station_ids")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_MAX_BATCH = 65536
#: Bounds on what a model's metadata may ask a caller to allocate per session (64 MiB of IQ per receiver).
MAX_RECEIVERS = 4096
MAX_SAMPLES = 64 * 1024 * 1024 // 8  # float32 I and Q: 8 bytes per sample


class NotAHeimdallModelError(UserError):
    """The ONNX file lacks the metadata of :func:`export_onnx` (or has an unknown contract version)."""


# --------------------------------------------------------------------------------------------------------
# The inference graph
# --------------------------------------------------------------------------------------------------------


class InferenceGraph(nn.Module):
    """Raw receiver inputs → (position_enu_m (B, 2), covariance_enu_m2 (B, 2, 2)), float32, metres.

    * ``from_iq=True`` (default when the net uses spectrograms): ``forward(iq (B, R, 2, T),
      receiver_mask (B, R))`` with calibrated I and Q (``mean(I²+Q²)`` = power in mW) as two real
      channels; features come from :class:`TorchFeatureExtractor`, so ``T`` is fixed at export.
    * ``from_iq=False`` (power-only nets): ``forward(scalars (B, R, S), receiver_mask (B, R))`` with raw
      ``SCALAR_NAMES`` values (S = 4), followed by any extra channels the net was trained with (S = 6
      for moving receivers: ``heimdall.data.arrays.MOVING_SCALAR_NAMES``); NaN means unknown and
      becomes the training mean, as in training.

    Standardisation replicates :meth:`NormStats.apply` exactly (NaN → 0 after standardising, absent
    receivers → 0), so absent receivers' inputs (zeros, huge values) never reach the outputs.
    """

    spec_mean: Tensor
    spec_std: Tensor
    scalar_mean: Tensor
    scalar_std: Tensor

    def __init__(
        self,
        net: LocalizationNet,
        stats: NormStats,
        feature_config: FeatureConfig | None = None,
        from_iq: bool | None = None,
    ) -> None:
        super().__init__()
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

    @property
    def input_names(self) -> tuple[str, str]:
        return IQ_INPUT_NAMES if self.from_iq else SCALAR_INPUT_NAMES

    def forward(self, inputs: Tensor, receiver_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``inputs``: IQ (B, R, 2, T) or raw scalars (B, R, 4); ``receiver_mask`` (B, R), 1 = present."""
        r = self.n_receivers
        if inputs.dim() < 2 or inputs.shape[1] != r:
            raise ValueError(f"model expects {r} receivers on axis 1, got input shape {tuple(inputs.shape)}")
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
        position, scale_tril = self.net(spectrogram, sc, receiver_mask)
        covariance = LocalizationNet.covariance(scale_tril)
        return position.float(), covariance.float()


def _f32(a: ArrayLike) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


# --------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------


def model_metadata(
    network: ReceiverNetwork,
    feature_config: FeatureConfig,
    model_id: str,
    **extra: str,
) -> dict[str, str]:
    """The caller-side metadata :func:`export_onnx` needs, built from the objects it must agree with."""
    frame = network.frame
    return {
        "model_id": _check_model_id(model_id),
        "frame_origin_lat": repr(float(frame.origin_lat)),
        "frame_origin_lon": repr(float(frame.origin_lon)),
        "station_ids": json.dumps([int(s) for s in network.station_ids]),
        "station_names": json.dumps(list(network.names)),
        "feature_config_hash": feature_config.config_hash(),
        "feature_config": json.dumps(dataclasses.asdict(feature_config), sort_keys=True),
        **extra,
    }


def _io_docs(graph: InferenceGraph, n_samples: int | None) -> tuple[str, str]:
    r = graph.n_receivers
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
    inputs = {**first, "receiver_mask": mask_doc}
    outputs = {
        "position_enu_m": (
            "float32 (B, 2): transmitter (east, north) in metres in the local tangent-plane (ENU) frame at "
            "frame_origin_lat/frame_origin_lon (WGS-84 degrees)."
        ),
        "covariance_enu_m2": (
            "float32 (B, 2, 2): covariance of position_enu_m in m^2, axes (east, north); symmetric positive "
            "definite (1-sigma ellipse = its eigen-decomposition)."
        ),
    }
    return json.dumps(inputs), json.dumps(outputs)


def export_onnx(
    graph: InferenceGraph,
    example_inputs: tuple[Tensor, ...],
    path: Path,
    metadata: Mapping[str, str],
) -> Path:
    """Export ``graph`` to ``path`` atomically (dynamic batch axis, one self-contained file).

    Export with a batch of at least 2 so the batch axis is not specialised to 1. The file is written
    to a temporary sibling, checked with ``onnx.checker`` and renamed into place, so a failure never
    leaves a partial ``model.onnx`` (an existing one stays untouched).
    """
    path = Path(path)
    if len(example_inputs) != 2:
        raise ValueError(
            f"example_inputs must be ({', '.join(graph.input_names)}), got {len(example_inputs)}"
        )
    if int(example_inputs[0].shape[0]) < 2:
        raise ValueError("export with a batch of at least 2: a batch of 1 would be specialised in the graph")
    bad = sorted(k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str)))
    if bad:
        raise TypeError(f"metadata keys and values must be str; offending keys: {bad}")
    clash = sorted(_RESERVED_KEYS.intersection(metadata))
    if clash:
        raise ValueError(f"metadata keys {clash} are written by export_onnx itself")
    if "model_id" in metadata:
        _check_model_id(metadata["model_id"])  # fail now, not at upload after parity and timing
    missing = [k for k in _REQUIRED_CALLER_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"metadata is missing {missing} (see model_metadata())")
    n_ids = len(json.loads(metadata["station_ids"]))
    if n_ids != graph.n_receivers:
        raise ValueError(
            f"metadata station_ids has {n_ids} entries, the model has {graph.n_receivers} receivers"
        )

    n_samples = int(example_inputs[0].shape[-1]) if graph.from_iq else None
    inputs_doc, outputs_doc = _io_docs(graph, n_samples)
    props: dict[str, str] = {
        **metadata,
        "heimdall_onnx_contract": CONTRACT_VERSION,
        "input_kind": "iq" if graph.from_iq else "scalars",
        "n_receivers": str(graph.n_receivers),
        "inputs_doc": inputs_doc,
        "outputs_doc": outputs_doc,
    }
    if n_samples is not None:
        props["n_samples"] = str(n_samples)

    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary sibling, renamed into place with ordinary permissions (readable by a service user)
    with atomic_path(path) as tmp:
        graph.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # Benign exporter chatter: the batch Dim shared by both inputs, a torch-internal deprecation.
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(
                graph,
                tuple(example_inputs),
                dynamo=True,
                verbose=False,
                input_names=list(graph.input_names),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: batch}, {0: batch}),
            )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no ONNX program")
        proto = program.model_proto
        del proto.metadata_props[:]
        for key, value in sorted(props.items()):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


# --------------------------------------------------------------------------------------------------------
# Verification and timing
# --------------------------------------------------------------------------------------------------------


def _ort_session(model: str | Path | bytes, threads: int | None = None) -> Any:
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
            f"{where} is not a readable ONNX model (truncated, or not ONNX at all): {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_f32(x: Tensor | ArrayLike) -> NDArray[np.float32]:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def onnx_parity(
    path: Path,
    graph: InferenceGraph,
    inputs: Sequence[Tensor | ArrayLike],
    chunk_size: int = 256,
) -> dict[str, float]:
    """Run ONNX Runtime and PyTorch on the same inputs (e.g. a whole test split, in chunks).

    ``max_position_diff_m``: largest Euclidean distance between the two positions (metres).
    ``max_covariance_rel_diff``: largest ``‖Σ_onnx − Σ_torch‖_F / ‖Σ_torch‖_F`` per session (a
    per-element ratio would blow up on near-zero off-diagonal terms).
    """
    session = _ort_session(path)
    names = [i.name for i in session.get_inputs()]
    arrays = [_as_f32(x) for x in inputs]
    if len(arrays) != len(names):
        raise ValueError(f"the model takes inputs {names}, got {len(arrays)} arrays")
    n = arrays[0].shape[0]
    max_pos = max_cov = 0.0
    graph.eval()
    for start in range(0, n, chunk_size):
        chunk = [a[start : start + chunk_size] for a in arrays]
        pos_o, cov_o = session.run(list(OUTPUT_NAMES), dict(zip(names, chunk, strict=True)))
        with torch.no_grad():
            pos_t, cov_t = (t.double().numpy() for t in graph(*(torch.from_numpy(c) for c in chunk)))
        dist = np.linalg.norm(pos_o.astype(np.float64) - pos_t, axis=-1)
        rel = np.linalg.norm(cov_o.astype(np.float64) - cov_t, axis=(-2, -1)) / np.linalg.norm(
            cov_t, axis=(-2, -1)
        )
        max_pos = max(max_pos, float(np.max(dist)))
        max_cov = max(max_cov, float(np.max(rel)))
    return {"max_position_diff_m": max_pos, "max_covariance_rel_diff": max_cov, "n_sessions": float(n)}


def measure_latency(
    path: Path,
    single_inputs: Sequence[Tensor | ArrayLike],
    runs: int = 200,
    warmup: int = 20,
    threads: int = 1,
) -> dict[str, float]:
    """Wall time of one ONNX Runtime call on one core (``threads`` intra- and inter-op threads).

    ``single_inputs`` is one session (B=1); one ORT session is built per call, warmed up ``warmup``
    times, then ``runs`` calls are timed. Medians are reported because scheduler hiccups skew means.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    session = _ort_session(path, threads=threads)
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, (_as_f32(x) for x in single_inputs), strict=True))
    for _ in range(warmup):
        session.run(None, feeds)
    times = np.empty(runs)
    for k in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times[k] = time.perf_counter() - t0
    times_ms = times * 1e3
    return {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(np.mean(times_ms)),
    }


# --------------------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------------------


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


def _check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _MODEL_ID_RE.match(model_id):
        raise ValueError(f"invalid model_id {model_id!r}: use 1-128 characters of [A-Za-z0-9_-]")
    return model_id


class OnnxLocalizer:
    """A Heimdall ``model.onnx`` plus its metadata: predict in metres, convert to latitude/longitude.

    Needs only numpy, onnxruntime and :mod:`heimdall.geo` at run time. ``threads`` (default 1, the
    budget the latency figures assume) sets ONNX Runtime's intra- and inter-op threads.
    """

    def __init__(self, model: str | Path | bytes, threads: int | None = 1) -> None:
        self.session = _ort_session(model, threads=threads)
        meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        where = "<bytes>" if isinstance(model, bytes) else str(model)
        required = ["heimdall_onnx_contract", "input_kind", "n_receivers", *_REQUIRED_CALLER_KEYS]
        missing = [k for k in required if k not in meta]
        if missing:
            raise NotAHeimdallModelError(f"{where} is not a Heimdall model: metadata lacks {missing}")
        if meta["heimdall_onnx_contract"] != CONTRACT_VERSION:
            raise NotAHeimdallModelError(
                f"{where} uses ONNX contract {meta['heimdall_onnx_contract']!r}, "
                f"this code reads {CONTRACT_VERSION!r}"
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
        expected = list(IQ_INPUT_NAMES if self.input_kind == "iq" else SCALAR_INPUT_NAMES)
        if self._input_names != expected:
            raise NotAHeimdallModelError(
                f"{where}: input_kind {self.input_kind!r} needs inputs {expected}, "
                f"the graph has {self._input_names}"
            )

    def _prepare(self, inputs: ArrayLike) -> NDArray[np.float32]:
        x = np.asarray(inputs)
        if self.input_kind == "iq" and np.iscomplexobj(x):  # (B, R, T) complex → (B, R, 2, T)
            x = np.stack([x.real, x.imag], axis=-2)
        x = x.astype(np.float32, copy=False)
        n_scalars = self.session.get_inputs()[0].shape[2] if self.input_kind != "iq" else None
        n_scalars = n_scalars if isinstance(n_scalars, int) else len(SCALAR_NAMES)
        tail = (2, self.n_samples) if self.input_kind == "iq" else (n_scalars,)
        if x.ndim != 2 + len(tail) or x.shape[1] != self.n_receivers:
            got = x.shape[1] if x.ndim >= 2 else "no receiver axis"
            raise ValueError(
                f"model expects {self.n_receivers} receivers (stations {list(self.station_ids)}), got {got} "
                f"(input shape {x.shape}, expected (B, {self.n_receivers}, {', '.join(map(str, tail))}))"
            )
        if x.shape[2:] != tail:
            raise ValueError(f"input shape {x.shape} does not match (B, {self.n_receivers}, {tail})")
        return np.ascontiguousarray(x)

    def predict(
        self, inputs: ArrayLike, receiver_mask: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """IQ ``(B, R, 2, T)`` float or ``(B, R, T)`` complex, or scalars ``(B, R, 4)``, plus mask ``(B, R)``.

        Returns ``position_enu_m`` (B, 2) and ``covariance_enu_m2`` (B, 2, 2), float64.
        """
        x = self._prepare(inputs)
        mask = np.asarray(receiver_mask).astype(np.float32)
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"receiver_mask must have shape {x.shape[:2]} (B, {self.n_receivers} receivers), "
                f"got {mask.shape}"
            )
        position, covariance = self.session.run(
            list(OUTPUT_NAMES), dict(zip(self._input_names, (x, mask), strict=True))
        )
        return position.astype(np.float64), covariance.astype(np.float64)

    def to_latlon(self, position_enu_m: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(…, 2) metres east/north of the model's frame → (lat, lon) WGS-84 degrees, float64."""
        return self.frame.to_latlon(np.asarray(position_enu_m, dtype=np.float64))

    @staticmethod
    def ellipse(
        cov: ArrayLike, n_sigma: float = 1.0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """See :func:`ellipse`."""
        return ellipse(cov, n_sigma)


# --------------------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------------------


def upload_model(store: ObjectStore, bucket: str, model_id: str, path: Path) -> str:
    """Put a checked Heimdall ONNX file at ``{model_id}/model.onnx`` and return that key.

    Refuses files without the Heimdall metadata, or whose embedded ``model_id`` differs, so a
    wrong artefact is never published under a model's name.
    """
    _check_model_id(model_id)
    data = Path(path).read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError derives from Exception only
        raise NotAHeimdallModelError(f"{path} is not a readable ONNX model: {_first_line(exc)}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("heimdall_onnx_contract") != CONTRACT_VERSION:
        raise NotAHeimdallModelError(f"{path} is not a Heimdall ONNX model (contract {CONTRACT_VERSION})")
    if "model_id" in meta and meta["model_id"] != model_id:
        raise ValueError(f"{path} was exported as model_id {meta['model_id']!r}, not {model_id!r}")
    key = f"{model_id}/model.onnx"
    store.put_bytes(bucket, key, data)
    return key
