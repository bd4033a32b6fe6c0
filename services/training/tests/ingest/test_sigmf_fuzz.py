"""Fuzzing the SigMF reader: random and mutated metadata and data never crash with anything but a clear
InterchangeError (one non-empty line naming the file); whatever is accepted imports cleanly."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heimdall.ingest import sigmf_format
from heimdall.ingest.sigmf import SUPPORTED_DATATYPES, InterchangeError, Truth, import_sigmf, read_recording
from heimdall.storage.database import open_database
from heimdall.storage.objectstore import FileObjectStore
from heimdall.storage.recordings import RecordingWriteError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
CAP = 64 * 1024  # every fuzzed file is far below; the cap itself is tested in test_sigmf_io.py

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and ±Infinity too: Python's json reads and writes them
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_number = st.one_of(st.integers(-(2**64), 2**64), st.floats(), st.sampled_from([0, -1, 1e308, 5e-324]))
GLOBAL_KEYS = [
    "core:datatype",
    "core:sample_rate",
    "core:version",
    "core:num_channels",
    "core:sha512",
    "core:offset",
    "core:geolocation",
    "core:hw",
    "core:dataset",
    "core:metadata_only",
    "core:trailing_bytes",
    "core:extensions",
    *(
        v
        for k, v in vars(sigmf_format).items()
        if k.isupper() and isinstance(v, str) and v.startswith("heimdall:")
    ),
]
CAPTURE_KEYS = [
    "core:sample_start",
    "core:frequency",
    "core:datetime",
    "core:header_bytes",
    "core:geolocation",
]
ANNOTATION_KEYS = ["core:sample_start", "core:sample_count", "core:freq_lower_edge", "core:label"]
_geo = st.fixed_dictionaries(
    {"type": st.just("Point"), "coordinates": st.lists(st.floats() | st.integers(), min_size=0, max_size=4)}
)
_value = st.one_of(_json, _number, _geo, st.sampled_from([*sorted(SUPPORTED_DATATYPES), "rf32_le", "cf32"]))


def _valid(n: int = 64, seed: int = 0) -> tuple[dict, bytes]:
    rng = np.random.default_rng(seed)
    iq = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 1e-3).astype("<c8")
    meta = {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": 12500.0,
            "core:version": "1.2.0",
            "core:hw": "rx fuzz",
            "core:geolocation": {"type": "Point", "coordinates": [7.672, 45.044, 250.0]},
        },
        "captures": [
            {"core:sample_start": 0, "core:frequency": 145.5e6, "core:datetime": "2026-02-01T10:00:00Z"}
        ],
        "annotations": [{"core:sample_start": 0, "core:sample_count": n}],
    }
    return meta, iq.tobytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sigmf-fuzz")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sigmf-fuzz-db")
    db = open_database(f"sqlite:///{root}/h.db")
    yield db, FileObjectStore(root / "objects")
    db.dispose()


def _files(scratch: Path, meta: bytes, data: bytes | None) -> Path:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "r.sigmf-meta").write_bytes(meta)
    if data is not None:
        (folder / "r.sigmf-data").write_bytes(data)
    return folder / "r.sigmf-meta"


def _read_or_clear_error(meta_path: Path, allowed: tuple[type[Exception], ...] = (InterchangeError,)):
    """The recording, or None after checking the refusal is one clear line naming the file."""
    try:
        return read_recording(meta_path, CAP)
    except allowed as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        assert str(meta_path) in message, message
        return None
    finally:
        shutil.rmtree(meta_path.parent, ignore_errors=True)


@FUZZ
@given(st.binary(max_size=600), st.binary(max_size=600) | st.none())
def test_random_bytes_as_metadata_and_data(scratch: Path, meta: bytes, data: bytes | None) -> None:
    assert _read_or_clear_error(_files(scratch, meta, data)) is None


@FUZZ
@given(_json)
def test_random_json_as_metadata(scratch: Path, doc) -> None:
    _, data = _valid()
    assert _read_or_clear_error(_files(scratch, json.dumps(doc).encode(), data)) is None


@FUZZ
@given(st.data())
def test_byte_mutations_of_valid_metadata(scratch: Path, data) -> None:
    meta, payload = _valid()
    text = bytearray(json.dumps(meta).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            text[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            text[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del text[i]
        else:
            del text[i:]
            break
    _read_or_clear_error(_files(scratch, bytes(text), payload))


@FUZZ
@given(
    st.sampled_from(sorted(SUPPORTED_DATATYPES)),
    st.binary(min_size=0, max_size=800),
    st.sampled_from(["none", "right", "wrong"]),
)
def test_random_data_file_for_every_datatype(
    scratch: Path, datatype: str, payload: bytes, digest: str
) -> None:
    meta, _ = _valid()
    meta["global"]["core:datatype"] = datatype
    meta["annotations"] = []
    if digest != "none":
        meta["global"]["core:sha512"] = hashlib.sha512(
            payload + (b"x" if digest == "wrong" else b"")
        ).hexdigest()
    rec = _read_or_clear_error(_files(scratch, json.dumps(meta).encode(), payload))
    if rec is not None:  # accepted: a whole number of samples, finite, not all zero, checksum right
        assert rec.iq.dtype == np.complex64 and rec.iq.size * (len(payload) // rec.iq.size) == len(payload)
        assert np.isfinite(rec.iq.view(np.float32)).all() and digest != "wrong"


def _first(meta: dict, section: str) -> dict | None:
    items = meta.get(section)
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None


@st.composite
def _mutated_meta(draw) -> dict:
    """A valid recording's metadata with 1-5 keys set to odd values, dropped, or sections replaced."""
    meta, _ = _valid()
    for _ in range(draw(st.integers(1, 5))):
        where = draw(st.sampled_from(["global", "capture", "annotation", "drop", "sections"]))
        g, capture, annotation = meta.get("global"), _first(meta, "captures"), _first(meta, "annotations")
        if where == "global" and isinstance(g, dict):
            g[draw(st.sampled_from(GLOBAL_KEYS))] = draw(_value)
        elif where == "capture" and capture is not None:
            capture[draw(st.sampled_from(CAPTURE_KEYS))] = draw(_value)
        elif where == "annotation" and annotation is not None:
            annotation[draw(st.sampled_from(ANNOTATION_KEYS))] = draw(_value)
        elif where == "drop" and isinstance(g, dict):
            g.pop(draw(st.sampled_from(GLOBAL_KEYS)), None)
        elif where == "sections":
            section = draw(st.sampled_from(["global", "captures", "annotations", "extra"]))
            meta[section] = draw(st.sampled_from([[], [{}], None, "x"]) | _json)
    return meta


@FUZZ
@given(_mutated_meta(), st.booleans(), st.booleans())
def test_mutated_metadata_imports_or_is_refused_clearly(
    scratch: Path, target, meta: dict, with_truth: bool, pair: bool
) -> None:
    """Through the whole import (grouping, truth, stations, session rows) into one database."""
    db, store = target
    _, payload = _valid(seed=zlib.crc32(json.dumps(meta, sort_keys=True).encode()))
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "a.sigmf-meta").write_text(json.dumps(meta))
    (folder / "a.sigmf-data").write_bytes(payload)
    if pair:  # a second, valid recording: mutated fields now meet another file's in one session
        good, other = _valid(seed=1)
        g = meta.get("global")
        good["global"].update(
            {k: v for k, v in g.items() if k.startswith("heimdall:")} if isinstance(g, dict) else {}
        )
        good["global"]["core:geolocation"] = {"type": "Point", "coordinates": [11.35, 46.5]}
        (folder / "b.sigmf-meta").write_text(json.dumps(good))
        (folder / "b.sigmf-data").write_bytes(other)
    try:
        result = import_sigmf(
            db, store, "raw", [folder], truth=Truth(45, 7) if with_truth else None, max_bytes=CAP
        )
    except (InterchangeError, RecordingWriteError) as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
    else:
        assert result.written + result.already_present == len(result.records) >= 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
