"""Publish a checked Heimdall ``model.onnx`` to the object store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from heimdall.inference.contract import (
    SUPPORTED_CONTRACTS,
    NotAHeimdallModelError,
    check_model_id,
    first_line,
)

if TYPE_CHECKING:
    from heimdall.storage.objectstore import ObjectStore

__all__ = ["upload_model"]


def upload_model(store: ObjectStore, bucket: str, model_id: str, path: Path) -> str:
    """Put a checked Heimdall ONNX file at ``{model_id}/model.onnx`` and return that key.

    Refuses files without the Heimdall metadata of a contract the localiser serves, or whose embedded
    ``model_id`` differs, so a wrong artefact is never published under a model's name.
    """
    check_model_id(model_id)
    data = Path(path).read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError derives from Exception only
        raise NotAHeimdallModelError(f"{path} is not a readable ONNX model: {first_line(exc)}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("heimdall_onnx_contract") not in SUPPORTED_CONTRACTS:
        raise NotAHeimdallModelError(
            f"{path} is not a Heimdall ONNX model (contract {' or '.join(SUPPORTED_CONTRACTS)})"
        )
    if "model_id" in meta and meta["model_id"] != model_id:
        raise ValueError(f"{path} was exported as model_id {meta['model_id']!r}, not {model_id!r}")
    key = f"{model_id}/model.onnx"
    store.put_bytes(bucket, key, data)
    return key
