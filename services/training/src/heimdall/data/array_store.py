"""Warm start: the loaded :class:`SessionArrays` of one training input, kept on disk as ``.npy`` files.

Loading from the database means listing every session with its measurement rows (about 1 ms per
session, so minutes at 100k) before the first epoch. The arrays that come out depend only on the
input (dataset labels, feature configuration, receiver order, split options) and on the stored
sessions, so they are kept under ``root/{input key}/``: a warm start is a few SQL queries and some file
reads. The large array (the spectrograms) is a :class:`~heimdall.data.row_file.RowFile` that the cold
load writes session by session and training reads by the rows each batch needs, so it is never held in
memory either way.

An entry is valid only for the content it was built from: its ``fingerprint`` hashes the ids of the
approved sessions of the labels, how many measurement rows they have and the sums of their power and
SNR values (so approving, adding, deleting or editing a session invalidates it). Entries are written
to a temporary folder and renamed into place, so a killed build leaves nothing that could be read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from heimdall.data.network import ReceiverNetwork
from heimdall.data.row_file import RowFile
from heimdall.errors import UserError
from heimdall.storage.database import Database
from heimdall.storage.scenarios import load_scenarios
from heimdall.storage.schema import Measurement, RecordingSession

log = logging.getLogger("heimdall.data")

STORE_VERSION = 1
_META = "arrays.json"
_ID_CHUNK = 20_000


def input_key(options: Mapping[str, Any]) -> str:
    """The folder name of one training input: a hash of everything that decides the arrays."""
    text = json.dumps({"version": STORE_VERSION, **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def content_fingerprint(db: Database, datasets: Sequence[str]) -> str:
    """Hash of the approved sessions of ``datasets``: their ids, row count and power/SNR sums."""
    approved = (RecordingSession.dataset.in_(list(datasets))) & (
        RecordingSession.approval_status == "approved"
    )
    digest = hashlib.sha256()
    with db.sessions() as q:
        ids = q.scalars(select(RecordingSession.id).where(approved).order_by(RecordingSession.id))
        for sid in ids:
            digest.update(sid.bytes)
        rows, power, snr = q.execute(
            select(
                func.count(Measurement.id),
                func.coalesce(func.sum(Measurement.signal_strength_db), 0.0),
                func.coalesce(func.sum(Measurement.snr_db), 0.0),
            )
            .join(RecordingSession, RecordingSession.id == Measurement.recording_session_id)
            .where(approved)
        ).one()
    digest.update(f"{int(rows)}/{float(power):.6e}/{float(snr):.6e}".encode())
    return digest.hexdigest()


@contextmanager
def building(folder: Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` for a build; removed if the build fails (or once renamed)."""
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create the array store {tmp.parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_arrays(tmp: Path, folder: Path, fingerprint: str, arrays: Any) -> Any:
    """Complete the build in ``tmp`` (the row files a load wrote there) and rename it to ``folder``.

    Returns ``arrays`` with its row files read from ``folder``. An OS error (disk full) only costs the
    warm start: it is logged and the arrays are returned as they are (before ``tmp`` is removed, their
    row files are read into memory so the run can go on).
    """
    meta: dict[str, Any] = {"fingerprint": fingerprint, "arrays": [], "objects": {}, "row_files": {}}
    try:
        for f in fields(arrays):
            value = getattr(arrays, f.name)
            if isinstance(value, RowFile):
                if value.path.parent != tmp:
                    raise OSError(f"the row file {value.path} is not part of this build")
                np.save(tmp / f"{f.name}.rows.npy", value.rows, allow_pickle=False)
                meta["row_files"][f.name] = value.path.name
            elif isinstance(value, np.ndarray):
                if value.dtype == object:  # strings (splits, labels, scenario hashes)
                    meta["objects"][f.name] = [str(v) for v in value.tolist()]
                else:
                    np.save(tmp / f"{f.name}.npy", value, allow_pickle=False)
                    meta["arrays"].append(f.name)
        meta.update(
            session_ids=[str(s) for s in arrays.session_ids],
            network=arrays.network.to_dict(),
            datasets=list(arrays.datasets),
            feature_hash=arrays.feature_hash,
            skipped=arrays.skipped,
            scenarios=sorted(arrays.scenarios or {}),
            has_scenarios=arrays.scenarios is not None,
        )
        (tmp / _META).write_text(json.dumps(meta))
        _put_in_place(tmp, folder, fingerprint)
    except OSError as exc:
        log.warning(
            "could not keep the loaded arrays in %s for a warm start: %s", folder, exc.strerror or exc
        )
        in_memory = {
            f.name: np.asarray(getattr(arrays, f.name))
            for f in fields(arrays)
            if isinstance(getattr(arrays, f.name), RowFile)
        }
        return replace(arrays, **in_memory)
    moved = {
        name: RowFile(folder / path_name, getattr(arrays, name).rows)
        for name, path_name in meta["row_files"].items()
    }
    return replace(arrays, **moved)


def _put_in_place(tmp: Path, folder: Path, fingerprint: str) -> None:
    """Rename the build to ``folder``. An entry already there for the same content (another process,
    e.g. a DDP rank, built it meanwhile: byte for byte the same) is kept, so its readers never see it
    vanish; a stale one is moved aside first and then removed."""
    try:
        os.replace(tmp, folder)
        return
    except OSError:
        if not folder.is_dir():
            raise
    try:
        same = json.loads((folder / _META).read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        same = False
    if same:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = folder.with_name(f".old-{folder.name}-{uuid.uuid4().hex[:8]}")
    os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def open_arrays(folder: Path, fingerprint: str, db: Database) -> dict[str, Any] | None:
    """The SessionArrays fields stored in ``folder`` if it was built from this content, else None.

    The spectrograms stay on disk (:class:`RowFile`: read by the rows a batch needs); the other arrays
    (a few hundred bytes per session) are read into memory.
    """
    try:
        meta = json.loads((folder / _META).read_text())
        if meta.get("fingerprint") != fingerprint:
            return None
        out: dict[str, Any] = {}
        for name in meta["arrays"]:
            out[name] = np.load(folder / f"{name}.npy", allow_pickle=False)
        for name, path_name in meta["row_files"].items():
            out[name] = RowFile(folder / path_name, np.load(folder / f"{name}.rows.npy", allow_pickle=False))
        for name, values in meta["objects"].items():
            out[name] = np.array(values, dtype=object)
    except (OSError, ValueError, KeyError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("stored arrays in %s are unreadable (%s): loading from the database", folder, exc)
        return None
    with db.engine.connect() as conn:
        scenarios = load_scenarios(conn, meta["scenarios"]) if meta["has_scenarios"] else None
    if scenarios is not None and set(scenarios) != set(meta["scenarios"]):
        return None  # a scenario row is gone: rebuild rather than run the oracle without it
    out.update(
        session_ids=[uuid.UUID(s) for s in meta["session_ids"]],
        network=ReceiverNetwork.from_dict(meta["network"]),
        datasets=tuple(meta["datasets"]),
        feature_hash=meta["feature_hash"],
        skipped=dict(meta["skipped"]),
        scenarios=scenarios,
    )
    return out


def store_folder(root: Path, options: Mapping[str, Any]) -> Path:
    """``root/{input_key(options)}``; refuses a root that is a file (a one-line UserError)."""
    if root.exists() and not root.is_dir():
        raise UserError(f"the array store {root} is a file, not a folder (under HEIMDALL_DATA_DIR)")
    _sweep_abandoned(root)
    return root / input_key(options)


STALE_BUILD_S = 6 * 3600.0  # a build folder this old belongs to a process that was killed


def _sweep_abandoned(root: Path) -> None:
    """Remove the build folders of killed processes (``kill -9`` skips the clean-up): they can be GBs."""
    if not root.is_dir():
        return
    cutoff = time.time() - STALE_BUILD_S
    for tmp in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        try:
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass  # another process finished or removed it meanwhile
