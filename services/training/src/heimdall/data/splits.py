"""Deterministic train/val/test assignment by a hash of the session id.

A hash (not a shuffle) keeps every session in the same split when data is added later, so a
test session can never leak into a later model's training set.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


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


def ids_digest(session_ids: Sequence[uuid.UUID | str]) -> str:
    """A short hash of a set of session ids: the data snapshot a run trained or tested on."""
    h = hashlib.sha256()
    for s in sorted(str(x) for x in session_ids):
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
