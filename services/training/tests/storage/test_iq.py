"""IQ objects: every malformed recording is refused with a message naming where it came from."""

from __future__ import annotations

import io

import numpy as np
import pytest

from heimdall.storage.iq import IQDataError, check_iq, decode_iq, encode_iq, iq_key, load_iq, save_iq
from heimdall.storage.objectstore import ObjectNotFoundError, ObjectStoreError


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


GOOD = (np.arange(64) * (1 + 1j)).astype(np.complex64) + 1


def test_key_layout() -> None:
    assert iq_key("task-1", 3) == "sessions/task-1/websdr_3.npy"
    with pytest.raises(ObjectStoreError):
        iq_key("../evil", 3)


def test_round_trip(store) -> None:
    save_iq(store, "heimdall-raw-iq", "sessions/t/websdr_1.npy", GOOD)
    back = load_iq(store, "heimdall-raw-iq", "sessions/t/websdr_1.npy", 64, context="session t, station 1")
    assert back.dtype == np.complex64 and np.array_equal(back, GOOD)


def test_bytes_are_plain_npy() -> None:
    assert np.array_equal(np.load(io.BytesIO(encode_iq(GOOD)), allow_pickle=False), GOOD)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_npy(GOOD)[:-40], "corrupt or truncated"),
        (b"not an npy file at all", "corrupt or truncated"),
        (_npy(GOOD.astype(np.complex128)), "complex64"),
        (_npy(GOOD.real.copy()), "complex64"),
        (_npy(GOOD.reshape(8, 8)), "1-D"),
        (_npy(np.where(np.arange(64) == 5, np.nan, GOOD).astype(np.complex64)), "NaN or Inf"),
        (_npy(np.where(np.arange(64) == 5, np.inf, GOOD).astype(np.complex64)), "NaN or Inf"),
        (_npy(np.zeros(64, np.complex64)), "all zeros"),
        (_npy(np.zeros(0, np.complex64)), "empty"),
        (_npy(GOOD[:60]), "iq_samples_count=64"),
    ],
)
def test_bad_recordings_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(IQDataError, match=match) as err:
        decode_iq(data, expected_count=64, context="session S1, station 4, key heimdall-raw-iq/x")
    assert "session S1, station 4" in str(err.value)


def test_pickled_object_arrays_are_not_loaded() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IQDataError, match="corrupt"):
        decode_iq(buf.getvalue())


def test_encode_refuses_bad_arrays() -> None:
    with pytest.raises(IQDataError, match="complex64"):
        encode_iq(np.ones(4, np.complex128))
    with pytest.raises(IQDataError, match="complex64"):
        check_iq([1, 2, 3])  # type: ignore[arg-type]


def test_missing_object_names_the_row(store) -> None:
    with pytest.raises(ObjectNotFoundError, match="session X, station 2"):
        load_iq(store, "heimdall-raw-iq", "sessions/none/websdr_2.npy", 10, context="session X, station 2")
