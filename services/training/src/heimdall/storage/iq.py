"""IQ objects: `.npy` complex64 arrays under `sessions/{task_id}/websdr_{station_id}.npy`.

Every read is checked against its database row (dtype, shape, finiteness, sample count) so a
corrupt or mismatched recording is reported by session, station and key instead of silently
becoming a training sample.
"""

from __future__ import annotations

import io

import numpy as np

from heimdall.errors import DataError
from heimdall.storage.objectstore import ObjectNotFoundError, ObjectStore, validate_key

IQ_FORMAT = "npy-complex64"


class IQDataError(DataError):
    """An IQ object is unusable; the message names the session, station and key."""


def iq_key(task_id: str, station_id: int) -> str:
    """The acquisition service's key for one receiver's recording of one session."""
    return validate_key(f"sessions/{task_id}/websdr_{int(station_id)}.npy")


def encode_iq(iq: np.ndarray, context: str = "") -> bytes:
    """Serialise a 1-D finite complex64 array as `.npy` bytes (refusing anything else)."""
    check_iq(iq, context=context)
    buf = io.BytesIO()
    np.save(buf, iq, allow_pickle=False)
    return buf.getvalue()


def check_iq(iq: np.ndarray, expected_count: int | None = None, context: str = "") -> np.ndarray:
    """Validate an IQ array; returns it unchanged or raises IQDataError naming `context`."""
    where = f" ({context})" if context else ""
    if not isinstance(iq, np.ndarray) or iq.dtype != np.complex64:
        dtype = getattr(iq, "dtype", type(iq).__name__)
        raise IQDataError(f"IQ must be complex64, got {dtype}{where}")
    if iq.ndim != 1:
        raise IQDataError(f"IQ must be 1-D, got shape {iq.shape}{where}")
    if iq.size == 0:
        raise IQDataError(f"IQ recording is empty{where}")
    if expected_count is not None and iq.size != expected_count:
        raise IQDataError(
            f"IQ has {iq.size} samples but its row says iq_samples_count={expected_count}{where}"
        )
    if not np.isfinite(iq.view(np.float32)).all():
        raise IQDataError(f"IQ contains NaN or Inf values{where}")
    if not np.any(iq):
        raise IQDataError(f"IQ recording is all zeros{where}")
    return iq


def decode_iq(data: bytes, expected_count: int | None = None, context: str = "") -> np.ndarray:
    """Parse `.npy` bytes without pickle and validate them (see check_iq)."""
    where = f" ({context})" if context else ""
    try:
        iq = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise IQDataError(f"corrupt or truncated .npy: {exc}{where}") from None
    return check_iq(iq, expected_count, context)


def save_iq(store: ObjectStore, bucket: str, key: str, iq: np.ndarray) -> None:
    store.put_bytes(bucket, key, encode_iq(iq, context=f"{bucket}/{key}"))


def load_iq(
    store: ObjectStore, bucket: str, key: str, expected_count: int | None, context: str = ""
) -> np.ndarray:
    """Read and validate one recording; `context` (session/station) joins the key in errors."""
    where = f"{context}, key {bucket}/{key}" if context else f"key {bucket}/{key}"
    try:
        data = store.get_bytes(bucket, key)
    except ObjectNotFoundError:
        raise ObjectNotFoundError(f"IQ object missing for an existing row ({where}) in {store.url}") from None
    return decode_iq(data, expected_count, where)
