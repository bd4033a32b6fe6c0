"""The ONNX I/O contract of a Heimdall ``model.onnx``: names, version, metadata keys and bounds."""

from __future__ import annotations

import re

from heimdall.errors import UserError

__all__ = [
    "CONTRACT_VERSION",
    "FREQUENCY_INPUT",
    "IQ_INPUT_NAMES",
    "MAX_BATCH",
    "MAX_RECEIVERS",
    "MAX_SAMPLES",
    "OUTPUT_NAMES",
    "REQUIRED_CALLER_KEYS",
    "RESERVED_KEYS",
    "SCALAR_INPUT_NAMES",
    "SUPPORTED_CONTRACTS",
    "TRUST_OUTPUT",
    "NotAHeimdallModelError",
    "check_model_id",
    "input_names",
    "output_names",
]

#: Version of the ONNX I/O contract below; bump on any change of input/output names, shapes or units.
#: Version 2 added the session's carrier ``frequency_hz (B,)`` as a third input (version 1: two inputs);
#: version 3 added ``receiver_trust (B, R)`` as a third output (versions 1 and 2: two outputs).
CONTRACT_VERSION = "3"
#: Contracts :class:`~heimdall.inference.localizer.OnnxLocalizer` serves: version-1 and -2 files still run.
SUPPORTED_CONTRACTS: tuple[str, ...] = ("1", "2", "3")
#: Each receiver's weight in the estimate (B, R): 1 = its reading was used, 0 = absent or set aside.
TRUST_OUTPUT = "receiver_trust"
#: What :func:`~heimdall.inference.onnx_export.export_onnx` writes (contract 3); contract-1 and -2 files
#: have the first two (see :func:`output_names`).
OUTPUT_NAMES: tuple[str, ...] = ("position_enu_m", "covariance_enu_m2", TRUST_OUTPUT)
#: The carrier of each session in Hz, float32 (B,); NaN = unknown (the model's training median band).
FREQUENCY_INPUT = "frequency_hz"
IQ_INPUT_NAMES: tuple[str, ...] = ("iq", "receiver_mask", FREQUENCY_INPUT)
SCALAR_INPUT_NAMES: tuple[str, ...] = ("scalars", "receiver_mask", FREQUENCY_INPUT)

#: Metadata keys written by :func:`~heimdall.inference.onnx_export.export_onnx` itself (callers may not).
RESERVED_KEYS = frozenset(
    {
        "heimdall_onnx_contract",
        "inputs_doc",
        "outputs_doc",
        "input_kind",
        "n_receivers",
        "n_samples",
        "frequency_fill_hz",
    }
)
#: Metadata keys the caller must supply: without them a prediction cannot be placed on the map.
REQUIRED_CALLER_KEYS = ("frame_origin_lat", "frame_origin_lon", "station_ids")
MAX_BATCH = 65536
#: Bounds on what a model's metadata may ask a caller to allocate per session (64 MiB of IQ per receiver).
MAX_RECEIVERS = 4096
MAX_SAMPLES = 64 * 1024 * 1024 // 8  # float32 I and Q: 8 bytes per sample

_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class NotAHeimdallModelError(UserError):
    """The ONNX file lacks the metadata of ``export_onnx`` (or has an unknown contract version)."""


def input_names(contract: str, input_kind: str) -> tuple[str, ...]:
    """The graph input names of a model file of ``contract`` and ``input_kind`` (``iq`` or ``scalars``)."""
    names = IQ_INPUT_NAMES if input_kind == "iq" else SCALAR_INPUT_NAMES
    return names[:2] if contract == "1" else names


def output_names(contract: str) -> tuple[tuple[str, ...], ...]:
    """The graph output names a model file of ``contract`` may have (any one of the tuples returned):
    ``receiver_trust`` came with contract 3, files of contracts 1 and 2 have the first two."""
    return (OUTPUT_NAMES[:2],) if contract in ("1", "2") else (OUTPUT_NAMES,)


def check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _MODEL_ID_RE.match(model_id):
        raise ValueError(f"invalid model_id {model_id!r}: use 1-128 characters of [A-Za-z0-9_-]")
    return model_id


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
