"""SigMF recordings read and checked: every problem is an InterchangeError naming the file."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import sigmf
from sigmf.error import SigMFError
from sigmf.sigmffile import SigMFFile, dtype_info, get_sigmf_filenames
from sigmf.utils import parse_iso8601_datetime
from sigmf.validate import validate as validate_metadata

from heimdall.errors import UserError
from heimdall.ingest.sigmf_format import (
    META_EXT,
    SUPPORTED_DATATYPES,
    InterchangeError,
    Recording,
    _line,
    _number,
)
from heimdall.settings import Settings
from heimdall.storage.iq import IQDataError, check_iq


def find_recordings(paths: Iterable[str | Path]) -> list[Path]:
    """The `.sigmf-meta` of each path (meta, data, base name, or a folder of recordings), deduplicated."""
    metas: dict[Path, None] = {}
    for p in map(Path, paths):
        found = sorted(p.glob(f"*{META_EXT}")) if p.is_dir() else [get_sigmf_filenames(p)["meta_fn"]]
        metas.update(dict.fromkeys(m.absolute() for m in found))
    if not metas:
        raise InterchangeError("no SigMF recordings given (at least one .sigmf-meta + .sigmf-data is needed)")
    return list(metas)


def _max_bytes(max_bytes: int | None) -> int:
    """The import size cap per file: the argument, else the HEIMDALL_MAX_IMPORT_BYTES setting."""
    return Settings().max_import_bytes if max_bytes is None else max_bytes


def _check_size(meta: Path, file: Path, what: str, cap: int) -> int:
    """The size of `file` (the recording `meta`'s `what`) from stat, nothing read; refused above `cap`."""
    size = file.stat().st_size
    if size > cap:
        raise InterchangeError(
            f"{meta}: the {what} is {size} bytes, over the import size cap of {cap} bytes "
            "(set HEIMDALL_MAX_IMPORT_BYTES to raise it)"
        )
    return size


def _index(path: Path, item: dict[str, Any], key: str, what: str) -> int:
    value = item.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InterchangeError(f"{path}: {what} {key} must be an integer ≥ 0, got {_line(repr(value), 80)}")
    return value


def _check_indices(path: Path, metadata: dict[str, Any], n_samples: int) -> None:
    """Captures start inside the data (dataset-relative); annotations lie inside [offset, offset + n)."""
    offset = _index(path, metadata["global"], sigmf.OFFSET_KEY, "global")
    for i, capture in enumerate(metadata["captures"]):
        start = _index(path, capture, sigmf.SAMPLE_START_KEY, f"capture {i}")
        if start >= n_samples:
            raise InterchangeError(
                f"{path}: capture {i} starts at sample {start} but the data file holds only {n_samples}"
            )
    for i, ann in enumerate(metadata["annotations"]):
        start = _index(path, ann, sigmf.SAMPLE_START_KEY, f"annotation {i}")
        count = _index(path, ann, sigmf.SAMPLE_COUNT_KEY, f"annotation {i}")
        if start < offset or start + count > offset + n_samples:
            raise InterchangeError(
                f"{path}: annotation {i} covers samples [{start}, {start + count}) but the data file holds "
                f"samples [{offset}, {offset + n_samples})"
            )


def _metadata(path: Path) -> dict[str, Any]:
    """The .sigmf-meta as a schema-valid dict (UTF-8 JSON), checked before any data is read."""
    try:
        metadata = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InterchangeError(f"{path}: metadata is not UTF-8 text ({_line(exc.reason)})") from None
    except OSError as exc:
        raise InterchangeError(f"{path}: cannot read the metadata: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError, huge integers, deep nesting
        raise InterchangeError(f"{path}: metadata is not valid JSON: {_line(exc)}") from None
    if not isinstance(metadata, dict):
        raise InterchangeError(f"{path}: metadata must be a JSON object, got {type(metadata).__name__}")
    try:
        validate_metadata(metadata)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "top level"
        raise InterchangeError(f"{path}: invalid SigMF metadata at {where}: {_line(exc.message)}") from None
    except (jsonschema.SchemaError, RecursionError, KeyError, TypeError, ValueError) as exc:
        raise InterchangeError(f"{path}: invalid SigMF metadata: {_line(exc)}") from None
    return metadata


def _open(path: Path, max_bytes: int | None = None) -> SigMFFile:
    """Read and check metadata and data file sizes before reading samples; verify core:sha512 if given.

    Refused with an InterchangeError naming the file: files over the size cap, unreadable or invalid
    metadata, unsupported datatypes, non-conforming datasets, a data file that is not a whole number
    of samples, and captures or annotations that point outside the data.
    """
    if not path.is_file():
        raise InterchangeError(f"{path}: metadata file not found")
    cap = _max_bytes(max_bytes)
    data = get_sigmf_filenames(path)["data_fn"]
    _check_size(path, path, "metadata file", cap)  # both sizes are checked before either file is read
    if data.is_file():
        _check_size(path, data, f"data file {data.name}", cap)
    metadata = _metadata(path)
    g = metadata["global"]
    datatype = g.get(sigmf.DATATYPE_KEY)
    if datatype not in SUPPORTED_DATATYPES:
        supported = ", ".join(sorted(SUPPORTED_DATATYPES))
        raise InterchangeError(
            f"{path}: datatype {_line(repr(datatype), 80)} is not supported (complex IQ only: {supported})"
        )
    if g.get(sigmf.NUM_CHANNELS_KEY, 1) != 1:
        raise InterchangeError(f"{path}: multi-channel recordings are not supported (one receiver per file)")
    ncd = [k for k in (sigmf.DATASET_KEY, sigmf.METADATA_ONLY_KEY, sigmf.TRAILING_BYTES_KEY) if g.get(k)]
    ncd += [sigmf.HEADER_BYTES_KEY for c in metadata["captures"] if c.get(sigmf.HEADER_BYTES_KEY)][:1]
    if ncd:
        raise InterchangeError(
            f"{path}: {', '.join(ncd)}: non-conforming or metadata-only datasets are not supported "
            "(the samples must be the whole .sigmf-data beside the .sigmf-meta)"
        )
    if not data.is_file():
        raise InterchangeError(f"{path}: its data file {data} is missing")
    size = _check_size(path, data, f"data file {data.name}", cap)
    if size == 0:  # numpy cannot even map it
        raise InterchangeError(f"{path}: the data file {data} holds no samples")
    sample_size = dtype_info(datatype)["sample_size"]
    n_samples, rest = divmod(size, sample_size)
    if rest:
        raise InterchangeError(
            f"{path}: the data file {data.name} is {size} bytes, not a whole number of {datatype} samples "
            f"({sample_size} bytes each)"
        )
    _check_indices(path, metadata, n_samples)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # undeclared extension namespaces
            rec = SigMFFile(metadata=metadata, data_file=data)  # verifies core:sha512 when present
    except (SigMFError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InterchangeError(f"{path}: not a readable SigMF recording: {_line(exc)}") from None
    return rec


def _samples(path: Path, rec: SigMFFile) -> np.ndarray:
    """The samples as complex64 (fixed-point types scaled to ±1), refusing what a session cannot hold."""
    if rec.sample_count == 0:
        raise InterchangeError(f"{path}: the data file {rec.data_file} holds no samples")
    try:
        iq = np.ascontiguousarray(rec.read_samples(), dtype=np.complex64)
    except (SigMFError, OSError, ValueError, TypeError) as exc:  # TypeError: e.g. header_bytes 0.0
        raise InterchangeError(f"{path}: cannot read the samples: {_line(exc)}") from None
    try:
        return check_iq(iq)
    except IQDataError as exc:
        raise InterchangeError(f"{path}: {exc}") from None


def _position(path: Path, rec: SigMFFile, capture: dict[str, Any]) -> tuple[float, float, float | None]:
    """(lat, lon, alt) of the receiver from core:geolocation (global, else the capture)."""
    geo = rec.get_global_field(sigmf.GEOLOCATION_KEY) or capture.get(sigmf.GEOLOCATION_KEY)
    if geo is None:
        raise InterchangeError(f"{path}: no {sigmf.GEOLOCATION_KEY}: Heimdall needs the receiver position")
    lon, lat, *alt = (float(c) for c in geo["coordinates"])  # shape checked by the schema
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InterchangeError(f"{path}: {sigmf.GEOLOCATION_KEY} [{lon}, {lat}] is not a [lon, lat] position")
    if alt and not math.isfinite(alt[0]):
        raise InterchangeError(f"{path}: {sigmf.GEOLOCATION_KEY} altitude {alt[0]} is not a finite number")
    return lat, lon, alt[0] if alt else None


def _start(path: Path, capture: dict[str, Any]) -> datetime:
    stamp = capture.get(sigmf.DATETIME_KEY)
    if not isinstance(stamp, str):
        raise InterchangeError(f"{path}: the capture has no {sigmf.DATETIME_KEY} (when it was recorded)")
    try:
        return parse_iso8601_datetime(stamp)
    except ValueError:
        raise InterchangeError(
            f"{path}: {sigmf.DATETIME_KEY} {stamp!r} is not 'YYYY-MM-DDThh:mm:ss[.f]Z'"
        ) from None


def read_recording(path: Path, max_bytes: int | None = None) -> Recording:
    """Load and check one recording; every problem is an InterchangeError naming the file.

    `max_bytes` caps each file's size (default: the HEIMDALL_MAX_IMPORT_BYTES setting).
    """
    rec = _open(path, max_bytes)
    captures = rec.get_captures()
    if len(captures) > 1:
        raise InterchangeError(f"{path}: {len(captures)} capture segments; one per recording is supported")
    capture = captures[0] if captures else {}
    iq = _samples(path, rec)
    lat, lon, alt = _position(path, rec, capture)
    try:
        with open(rec.data_file, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the data file {rec.data_file}: {exc.strerror or exc}") from None
    hw = rec.get_global_field(sigmf.HW_KEY)
    rate = _number(path, rec.get_global_info(), sigmf.SAMPLE_RATE_KEY, required=True) or 0.0
    if rate <= 0:
        raise InterchangeError(f"{path}: {sigmf.SAMPLE_RATE_KEY} must be > 0, got {rate}")
    if not math.isfinite(iq.size / rate):
        raise InterchangeError(
            f"{path}: {sigmf.SAMPLE_RATE_KEY} {rate} is too small: {iq.size} samples last forever"
        )
    return Recording(
        path=path,
        iq=iq,
        sample_rate=rate,
        frequency_hz=_number(path, capture, sigmf.FREQUENCY_KEY, required=True),  # type: ignore[arg-type]
        start=_start(path, capture),
        latitude=lat,
        longitude=lon,
        altitude=alt,
        sha256=sha256,
        hw=hw if isinstance(hw, str) and hw.strip() else None,
        ext={k: v for k, v in rec.get_global_info().items() if k.startswith("heimdall:")},
    )
