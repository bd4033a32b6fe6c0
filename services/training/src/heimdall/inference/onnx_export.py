"""Write an :class:`~heimdall.inference.graph.InferenceGraph` as one self-contained ``model.onnx``."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import Tensor

from heimdall.atomic import atomic_path
from heimdall.inference.contract import (
    CONTRACT_VERSION,
    MAX_BATCH,
    REQUIRED_CALLER_KEYS,
    RESERVED_KEYS,
    check_model_id,
)
from heimdall.inference.graph import InferenceGraph, io_docs

__all__ = ["export_onnx"]


#: torch.onnx's registry logs one "torchvision is not installed. Skipping torchvision::…" W-line per
#: torchvision operator; the localiser uses none of them.
_EXPORTER_LOGGERS = ("torch.onnx._internal.exporter._registration",)


@contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter's registry loggers at ERROR during an export, their own levels restored after."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_calibration(graph: InferenceGraph, metadata: Mapping[str, str]) -> None:
    """The metadata's calibration must describe the graph: a scale applied once, never twice or silently."""
    in_graph = float(graph.covariance_scale)
    if "calibration" not in metadata:
        if in_graph != 1.0:
            raise ValueError(f"the graph applies covariance_scale={in_graph:g}; record it in metadata")
        return
    cal = json.loads(metadata["calibration"])
    scale = float(cal.get("covariance_scale", 1.0))
    applied = bool(cal.get("applied_in_graph", False))
    if applied and abs(scale - in_graph) > 1e-6 * scale:
        raise ValueError(
            f"metadata calibration says {scale:g} is applied in the graph, which applies {in_graph:g}"
        )
    if not applied and in_graph != 1.0:
        raise ValueError(
            f"the graph applies covariance_scale={in_graph:g} but metadata calibration lacks "
            "applied_in_graph: consumers would apply it twice"
        )


def export_onnx(
    graph: InferenceGraph,
    example_inputs: tuple[Tensor, ...],
    path: Path,
    metadata: Mapping[str, str],
) -> Path:
    """Export ``graph`` to ``path`` atomically (dynamic batch axis, one self-contained file).

    ``example_inputs`` follow :attr:`InferenceGraph.input_names` (contract :data:`CONTRACT_VERSION`:
    IQ or scalars, receiver_mask, frequency_hz); the outputs are :attr:`InferenceGraph.output_names`
    (position_enu_m, covariance_enu_m2, receiver_trust). Export with a batch of at least 2 so the batch
    axis is not specialised to 1. The file is written
    to a temporary sibling, checked with ``onnx.checker`` and renamed into place, so a failure never
    leaves a partial ``model.onnx`` (an existing one stays untouched).
    """
    path = Path(path)
    if len(example_inputs) != len(graph.input_names):
        raise ValueError(
            f"example_inputs must be ({', '.join(graph.input_names)}), got {len(example_inputs)}"
        )
    if int(example_inputs[0].shape[0]) < 2:
        raise ValueError("export with a batch of at least 2: a batch of 1 would be specialised in the graph")
    bad = sorted(k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str)))
    if bad:
        raise TypeError(f"metadata keys and values must be str; offending keys: {bad}")
    clash = sorted(RESERVED_KEYS.intersection(metadata))
    if clash:
        raise ValueError(f"metadata keys {clash} are written by export_onnx itself")
    if "model_id" in metadata:
        check_model_id(metadata["model_id"])  # fail now, not at upload after parity and timing
    missing = [k for k in REQUIRED_CALLER_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"metadata is missing {missing} (see model_metadata())")
    n_ids = len(json.loads(metadata["station_ids"]))
    if n_ids != graph.n_receivers:
        raise ValueError(
            f"metadata station_ids has {n_ids} entries, the model has {graph.n_receivers} receivers"
        )
    _check_calibration(graph, metadata)

    n_samples = int(example_inputs[0].shape[-1]) if graph.from_iq else None
    inputs_doc, outputs_doc = io_docs(graph, n_samples)
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
    if graph.frequency_fill_hz is not None:
        props["frequency_fill_hz"] = repr(graph.frequency_fill_hz)

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary sibling, renamed into place with ordinary permissions (readable by a service user)
    with atomic_path(path) as tmp:
        graph.eval()
        with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_logs():
            # Benign exporter chatter: the batch Dim shared by the inputs, a torch-internal deprecation.
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(
                graph,
                tuple(example_inputs),
                dynamo=True,
                verbose=False,
                input_names=list(graph.input_names),
                output_names=list(graph.output_names),
                dynamic_shapes=tuple({0: batch} for _ in graph.input_names),
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
