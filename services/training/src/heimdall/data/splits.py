"""Deterministic train/val/test assignment: by a hash of the session id, or by a test set in the notes.

A hash (not a shuffle) keeps every session in the same split when data is added later, so a
test session can never leak into a later model's training set. That is the default ("hash").

Datasets with a published test set (POWDER: "powder_random", "powder_grid") record each session's
membership in its notes; :func:`notes_split` takes the test set from there and carves validation
out of the rest by whole blocks of consecutive sessions in time. Consecutive POWDER samples are a
few seconds and metres apart along one walk or drive, so validation samples drawn at random would
each have near-duplicate neighbours in train and the validation error (used to tune and to stop)
would be optimistic; whole time blocks keep most validation samples away from training positions.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, Self, TypeVar

import numpy as np

from heimdall.errors import DataError

SPLITS = ("train", "val", "test")
NOTES_SPLITS = ("powder_random", "powder_grid")  # notes keys written by heimdall.ingest.powder
SPLIT_STRATEGIES = ("hash", *NOTES_SPLITS)
VAL_BLOCK_SESSIONS = 50  # ≈ 3-4 minutes of POWDER samples (one every ~4 s)


class DatasetError(DataError):
    """The selected data cannot be used for training (empty, inconsistent, non-finite)."""


class SessionLike(Protocol):
    """What a split needs of a stored session (e.g. heimdall.storage.queries.StoredSession)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def notes(self) -> str | None: ...
    @property
    def session_start(self) -> datetime: ...
    @property
    def dataset(self) -> str: ...


def split_score(session_id: uuid.UUID | str) -> float:
    """A uniform number in [0, 1) fixed by the session id alone."""
    digest = hashlib.sha256(str(session_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    session_ids: Sequence[uuid.UUID | str], val_fraction: float = 0.1, test_fraction: float = 0.1
) -> np.ndarray:
    """Split name per session. Tiny sets still get one val and one test session when ≥ 3 exist.

    The guarantee moves the train sessions with the highest scores (deterministic), so the
    assignment of everything else is unchanged.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"invalid split fractions val={val_fraction}, test={test_fraction}")
    scores = np.array([split_score(s) for s in session_ids], dtype=float)
    out = np.full(len(scores), "train", dtype=object)
    out[scores >= 1.0 - test_fraction - val_fraction] = "val"
    out[scores >= 1.0 - test_fraction] = "test"
    if len(scores) >= 3:
        for name, frac in (("test", test_fraction), ("val", val_fraction)):
            if frac > 0 and not (out == name).any():
                train = np.flatnonzero(out == "train")
                out[train[np.argmax(scores[train])]] = name
    return out


def _note(notes: str | None, key: str) -> object:
    try:
        data = json.loads(notes) if notes else None
    except json.JSONDecodeError:
        return None
    return data.get(key) if isinstance(data, dict) else None


def notes_split(
    sessions: Sequence[SessionLike],
    key: str,
    val_fraction: float = 0.1,
    block: int = VAL_BLOCK_SESSIONS,
) -> np.ndarray:
    """Split per session: test where ``notes[key] == "test"``; val = whole time blocks of the train part.

    The train sessions (``notes[key] == "train"``) are ordered by (session_start, id) and cut into
    consecutive blocks of ``block`` sessions; block b goes to validation when
    ``floor((b + 1)·f) > floor(b·f)`` (f = val_fraction), i.e. every 1/f-th block, spread evenly over
    the recording period, so ≈ f of train becomes val. Deterministic: the same sessions always give
    the same split. Train sets shorter than 1/f blocks use smaller blocks (down to single sessions);
    at least one block goes to val (when f > 0 and ≥ 2 train sessions) and at least one stays train.
    A session without a "train"/"test" entry for ``key`` is an error (the notes define the split).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if block < 1:
        raise ValueError(f"block must be ≥ 1 session, got {block}")
    labels = [_note(s.notes, key) for s in sessions]
    bad = [s.id for s, v in zip(sessions, labels, strict=True) if v not in ("train", "test")]
    if bad:
        raise ValueError(
            f"split {key!r} comes from each session's notes, but {len(bad)} of {len(sessions)} session(s) "
            f'have no \'{key}\': "train"|"test" entry (e.g. {bad[0]}); import them with their test set '
            "(heimdall import powder) or use split 'hash'"
        )
    out = np.array(labels, dtype=object)
    train = sorted(
        np.flatnonzero(out == "train"), key=lambda i: (sessions[i].session_start, str(sessions[i].id))
    )
    if val_fraction > 0:  # short train sets: smaller blocks, so that ≈ 1/f of them exist
        block = max(1, min(block, len(train) // max(2, round(1 / val_fraction))))
    n_blocks = math.ceil(len(train) / block)
    chosen = [b for b in range(n_blocks) if math.floor((b + 1) * val_fraction) > math.floor(b * val_fraction)]
    if val_fraction > 0 and not chosen and n_blocks >= 2:
        chosen = [n_blocks // 2]
    if n_blocks >= 1 and len(chosen) == n_blocks:  # keep something to train on
        chosen = chosen[:-1]
    for b in chosen:
        out[train[b * block : (b + 1) * block]] = "val"
    return out


def split_sessions(
    sessions: Sequence[SessionLike],
    strategy: str = "hash",
    test_datasets: Sequence[str] = (),
    val_fraction: float = 0.1,
) -> np.ndarray:
    """Split names for `sessions` by a named strategy (:data:`SPLIT_STRATEGIES`).

    With `test_datasets`, sessions of those labels are the test split (a held-out campaign, e.g. a
    simulation run with another seed) and the others are split train/val by the hash alone.
    """
    if test_datasets:
        if strategy != "hash":
            raise ValueError(f"test_datasets only combine with the hash split, not {strategy!r}")
        held = np.array([s.dataset in set(test_datasets) for s in sessions], dtype=bool)
        out = np.full(len(sessions), "test", dtype=object)
        rest = np.flatnonzero(~held)
        out[rest] = assign_splits(
            [sessions[i].id for i in rest], val_fraction=val_fraction, test_fraction=0.0
        )
        return out
    if strategy == "hash":
        return assign_splits([s.id for s in sessions], val_fraction=val_fraction)
    if strategy in NOTES_SPLITS:
        return notes_split(sessions, strategy, val_fraction=val_fraction)
    raise ValueError(f"unknown split {strategy!r}; choose one of {list(SPLIT_STRATEGIES)}")


def limit_train(
    splits: np.ndarray, session_ids: Sequence[uuid.UUID | str], max_train: int | None
) -> np.ndarray:
    """Keep the `max_train` training sessions with the lowest hash scores; the rest become "unused".

    Nested and deterministic: a smaller limit is a subset of a larger one, and val/test never change,
    so learning curves compare models on the same held-out sessions.
    """
    out = splits.copy()
    train = np.flatnonzero(out == "train")
    if max_train is None or train.size <= max_train:
        return out
    scores = np.array([split_score(session_ids[i]) for i in train])
    out[train[np.argsort(scores, kind="stable")[max_train:]]] = "unused"
    return out


def ids_digest(session_ids: Sequence[uuid.UUID | str]) -> str:
    """A short hash of a set of session ids: the data snapshot a run trained or tested on."""
    h = hashlib.sha256()
    for s in sorted(str(x) for x in session_ids):
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class Splittable(Protocol):
    """What a split override needs of the loaded sessions (e.g. heimdall.data.arrays.SessionArrays)."""

    @property
    def session_ids(self) -> Any: ...
    @property
    def datasets(self) -> Any: ...
    def subset(self, sel: np.ndarray, splits: np.ndarray) -> Self: ...


A = TypeVar("A", bound=Splittable)


def apply_split_override(arrays: A, split_override: Mapping[str, Sequence[str]]) -> A:
    """Keep exactly the sessions named in ``{"train"|"val"|"test": [session ids]}``, in those splits.

    Used to re-run a recorded data snapshot (``heimdall train --from-run``) and to evaluate a model on
    the split it recorded; sessions loaded but not named are left out, and a named session that is not
    available is an error naming it.
    """
    wanted: dict[str, str] = {}
    for split, ids in split_override.items():
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r} in the split override (expected train/val/test)")
        for sid in ids:
            wanted[str(sid)] = split
    have = [str(s) for s in arrays.session_ids]
    missing = sorted(set(wanted) - set(have))
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise DatasetError(
            f"{len(missing)} session(s) of the requested split are not among the {len(have)} usable approved "
            f"sessions of {list(arrays.datasets)} (deleted, unapproved or skipped?): {shown}"
        )
    sel = np.array([i for i, sid in enumerate(have) if sid in wanted], dtype=np.int64)
    return arrays.subset(sel, np.array([wanted[have[i]] for i in sel], dtype=object))
