"""A stored session's recordings as :mod:`heimdall.inference.inputs` reads them (rows + IQ via storage).

This is the only database/object-store side of building model inputs: it reads; turning what it read
into model inputs is :func:`heimdall.inference.inputs.model_inputs` / ``batch_inputs``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from heimdall.data.arrays import SessionArrays
from heimdall.storage.database import Database
from heimdall.storage.iq import load_iq
from heimdall.storage.objectstore import ObjectStore
from heimdall.storage.queries import get_session

__all__ = ["StoredRecordings", "arrays_frequencies", "arrays_power", "arrays_recordings", "stored_recordings"]


@dataclass(frozen=True)
class StoredRecordings:
    """One stored session: IQ per station, power rows of stations without IQ, who measured, the truth."""

    session_id: str
    recordings: dict[int, np.ndarray]  # station id → complex IQ (T,), √mW
    power: dict[int, tuple[float, float, float, float]]  # [power_dbm, noise_floor_dbm, snr_db, heard]
    measured: tuple[int, ...]  # every station with a row, read or not
    truth_latlon: tuple[float, float] | None
    frequency_hz: float | None = None  # the session's carrier (median of its rows); None = no row


def stored_recordings(
    db: Database, store: ObjectStore, session_id: str, stations: Collection[int] | None = None
) -> StoredRecordings:
    """Read a stored session; IQ is loaded only for ``stations`` (all when None), e.g. a model's receivers."""
    session = get_session(db, session_id)
    recordings: dict[int, np.ndarray] = {}
    power: dict[int, tuple[float, float, float, float]] = {}
    for m in session.measurements:
        if stations is not None and m.station_id not in stations:
            continue
        key = m.iq_bucket_key
        if key is not None:
            where = f"session {session.id}, station {m.station_id}"
            recordings[m.station_id] = load_iq(store, *key, m.iq_samples_count, context=where)
        elif m.signal_strength_db is not None:
            snr = m.snr_db if m.snr_db is not None else math.nan
            power[m.station_id] = (float(m.signal_strength_db), math.nan, float(snr), 1.0)
    truth = (session.source.latitude, session.source.longitude) if session.source is not None else None
    return StoredRecordings(
        session_id=str(session.id),
        recordings=recordings,
        power=power,
        measured=tuple(m.station_id for m in session.measurements),
        truth_latlon=truth,
        frequency_hz=float(np.median([m.frequency_hz for m in session.measurements]))
        if session.measurements
        else None,
    )


def arrays_recordings(
    db: Database, store: ObjectStore, arrays: SessionArrays, indices: np.ndarray
) -> list[dict[int, np.ndarray]]:
    """The stored IQ of sessions ``indices`` of ``arrays``, of the receivers ``arrays.mask`` keeps."""
    ids = arrays.network.station_ids
    out = []
    for i in indices:
        keep = {sid for k, sid in enumerate(ids) if arrays.mask[i, k]}
        out.append(stored_recordings(db, store, arrays.session_ids[i], keep).recordings)
    return out


def arrays_power(arrays: SessionArrays, indices: np.ndarray) -> list[dict[int, np.ndarray]]:
    """The raw scalar rows (R, S) of sessions ``indices`` of ``arrays``, as station id → row, present only."""
    ids = arrays.network.station_ids
    return [{sid: arrays.scalars[i, k] for k, sid in enumerate(ids) if arrays.mask[i, k]} for i in indices]


def arrays_frequencies(arrays: SessionArrays, indices: np.ndarray) -> np.ndarray:
    """(len(indices),) float32 carriers in Hz of sessions ``indices``: the model's ``frequency_hz`` input.

    NaN where unknown (or when the arrays carry no carrier at all), passed on as it is: the network reads
    an unknown carrier as its training set's median one (:func:`heimdall.model.band_constants`).
    """
    if arrays.frequency_hz is None:
        return np.full(len(indices), np.nan, np.float32)
    return np.asarray(arrays.frequency_hz, np.float64)[indices].astype(np.float32)
