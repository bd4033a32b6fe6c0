"""Deterministic train/val/test assignment: by a hash of the session id, or by a test set in the notes.

A hash (not a shuffle) keeps every session in the same split when data is added later, so a
test session can never leak into a later model's training set. That is the default ("hash").

Datasets with a published test set (POWDER: "powder_random", "powder_grid") record each session's
membership in its notes; :func:`notes_split` takes the test set from there and carves validation
out of the rest by whole blocks of consecutive sessions in time. Consecutive POWDER samples are a
few seconds and metres apart along one walk or drive, so validation samples drawn at random would
each have near-duplicate neighbours in train and the validation error (used to tune and to stop)
would be optimistic; whole time blocks keep most validation samples away from training positions.

Sessions of one transmitter site never straddle train/validation/test under the hash split: sessions
with the same known source, or whose truth positions lie within ``site_radius_m`` of each other
(linked in chains: single linkage), form one site, and the hash of the site's earliest session decides
the split of all of them (:func:`site_keys`). Labels held out whole (``test_datasets``,
``val_datasets``) take their sites with them: a session of another label at such a site is "unused".
Recording along a walk or drive (consecutive sessions seconds and metres apart) makes a random split
leak; :func:`walk_recorded_labels` finds such labels so that the choice is warned about.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, Self, TypeVar

import numpy as np

from heimdall.errors import DataError
from heimdall.geo import EARTH_RADIUS_M, haversine_m

log = logging.getLogger("heimdall.data")

SPLITS = ("train", "val", "test")
NOTES_SPLITS = ("powder_random", "powder_grid")  # notes keys written by heimdall.ingest.powder
SPLIT_STRATEGIES = ("hash", *NOTES_SPLITS)
VAL_BLOCK_SESSIONS = 50  # ≈ 3-4 minutes of POWDER samples (one every ~4 s)
DEFAULT_SITE_RADIUS_M = 100.0  # truths closer than this are one transmitter site
# a label is recorded along a walk when its consecutive sessions are typically this close
WALK_MAX_STEP_M = 200.0
WALK_MAX_GAP_S = 120.0
WALK_MIN_SESSIONS = 20


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


class SourceLike(Protocol):
    """The known transmitter of a session (heimdall.storage.recordings.SourceRecord)."""

    @property
    def id(self) -> Any: ...
    @property
    def latitude(self) -> float: ...
    @property
    def longitude(self) -> float: ...


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


def assign_group_splits(
    keys: Sequence[uuid.UUID | str], val_fraction: float = 0.1, test_fraction: float = 0.1
) -> np.ndarray:
    """:func:`assign_splits` over groups: every session takes the split of its group's key.

    With one key per session (each its own id) this is exactly :func:`assign_splits`.
    """
    unique = list(dict.fromkeys(str(k) for k in keys))
    per_group = dict(zip(unique, assign_splits(unique, val_fraction, test_fraction), strict=True))
    return np.array([per_group[str(k)] for k in keys], dtype=object)


def _source(session: Any) -> SourceLike | None:
    return getattr(session, "source", None)  # sessions of tests and importers may carry none


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def site_keys(sessions: Sequence[SessionLike], site_radius_m: float = DEFAULT_SITE_RADIUS_M) -> list[str]:
    """Per session the id of the earliest session of its transmitter site (same source or truth chain).

    Two sessions are one site when they have the same known source id or their truths are at most
    `site_radius_m` apart (haversine), and so is everything linked through such pairs. The earliest
    member (session_start, id) names the site, so adding later sessions keeps existing sites' keys.
    """
    if site_radius_m < 0 or not math.isfinite(site_radius_m):
        raise ValueError(f"site_radius_m must be a distance >= 0 m, got {site_radius_m}")
    n = len(sessions)
    parent = list(range(n))

    def join(i: int, j: int) -> None:
        a, b = _find(parent, i), _find(parent, j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    by_source: dict[str, int] = {}
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    located = [(i, src) for i, s in enumerate(sessions) if (src := _source(s)) is not None]
    if located:
        lat0 = math.radians(float(np.mean([src.latitude for _, src in located])))
        cell = max(site_radius_m, 1e-3)
        for i, src in located:
            first = by_source.setdefault(str(src.id), i)
            if first != i:
                join(first, i)
            x = EARTH_RADIUS_M * math.radians(src.longitude) * math.cos(lat0)
            y = EARTH_RADIUS_M * math.radians(src.latitude)
            cells[(math.floor(x / cell), math.floor(y / cell))].append(i)
        slack = 1.0 + 1e-6  # the local projection is not exact: look one cell further, then haversine
        for (cx, cy), members in cells.items():
            near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), ())]
            a = np.array([(sessions[i].source.latitude, sessions[i].source.longitude) for i in members])  # type: ignore[union-attr]
            b = np.array([(sessions[j].source.latitude, sessions[j].source.longitude) for j in near])  # type: ignore[union-attr]
            d = haversine_m(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])
            for p, q in zip(*np.nonzero(d <= site_radius_m * slack), strict=True):
                join(members[p], near[q])
    order = sorted(
        range(n), key=lambda i: (str(getattr(sessions[i], "session_start", "")), str(sessions[i].id))
    )
    name: dict[int, str] = {}
    for i in order:
        name.setdefault(_find(parent, i), str(sessions[i].id))
    return [name[_find(parent, i)] for i in range(n)]


def walk_recorded_labels(sessions: Sequence[SessionLike]) -> dict[str, tuple[float, float]]:
    """Labels recorded along a walk or drive: {label: (median step m, median gap s)} between sessions
    consecutive in time (at least :data:`WALK_MIN_SESSIONS` sessions with a known source)."""
    by_label: dict[str, list[SessionLike]] = defaultdict(list)
    for s in sessions:
        if _source(s) is not None and getattr(s, "session_start", None) is not None:
            by_label[s.dataset].append(s)
    out = {}
    for label, group in by_label.items():
        if len(group) < WALK_MIN_SESSIONS:
            continue
        group = sorted(group, key=lambda s: (s.session_start, str(s.id)))
        lat = np.array([s.source.latitude for s in group])  # type: ignore[attr-defined]
        lon = np.array([s.source.longitude for s in group])  # type: ignore[attr-defined]
        step = float(np.median(haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])))
        gaps = [(b.session_start - a.session_start).total_seconds() for a, b in itertools.pairwise(group)]
        gap = float(np.median(gaps))
        if step <= WALK_MAX_STEP_M and gap <= WALK_MAX_GAP_S:
            out[label] = (step, gap)
    return out


def _warn_walks(sessions: Sequence[SessionLike]) -> None:
    """One line per walk-recorded label trained with the hash (random) split, naming the better choice."""
    for label, (step, gap) in walk_recorded_labels(sessions).items():
        notes = next((s.notes for s in sessions if s.dataset == label and s.notes), None)
        better = [k.replace("_", "-") for k in NOTES_SPLITS if _note(notes, k) in ("train", "test")]
        choice = f"--split {better[-1]}" if better else "--test-datasets/--val-datasets (another recording)"
        log.warning(
            "dataset %r was recorded along a walk (consecutive sessions a median %.0f m and %.0f s apart): "
            "a random (hash) split puts near-duplicates on both sides; use %s",
            label,
            step,
            gap,
            choice,
        )


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
    val_datasets: Sequence[str] = (),
    site_radius_m: float = DEFAULT_SITE_RADIUS_M,
    warn: bool = True,
) -> np.ndarray:
    """Split names for `sessions` by a named strategy (:data:`SPLIT_STRATEGIES`).

    `warn` False silences the advice about walks and lopsided sites (a caller that replaces this split
    by a recorded one, as ``evaluate`` does, would otherwise warn about a split it does not use).

    "hash" splits whole transmitter sites (:func:`site_keys`). With `test_datasets` / `val_datasets`
    the sessions of those labels are the test / validation split (a held-out campaign, e.g. a simulation
    run with another seed); the remaining sessions fill the other splits by the site hash, and any of
    them at a site of a held-out label is "unused" (it would leak). The notes strategies (POWDER)
    take the published test set as it is, with validation carved from train by time blocks.
    """
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(f"unknown split {strategy!r}; choose one of {list(SPLIT_STRATEGIES)}")
    if set(test_datasets) & set(val_datasets):
        raise ValueError(
            f"labels {sorted(set(test_datasets) & set(val_datasets))} are both test and val datasets"
        )
    if strategy != "hash":
        if test_datasets or val_datasets:
            raise ValueError(f"test_datasets/val_datasets only combine with the hash split, not {strategy!r}")
        return notes_split(sessions, strategy, val_fraction=val_fraction)
    if warn:
        _warn_walks(sessions)
    keys = site_keys(sessions, site_radius_m)
    labels = np.array([s.dataset for s in sessions], dtype=object)
    held = {"test": np.isin(labels, list(test_datasets)), "val": np.isin(labels, list(val_datasets))}
    out = np.full(len(sessions), "train", dtype=object)
    out[held["test"]], out[held["val"]] = "test", "val"
    rest = np.flatnonzero(~held["test"] & ~held["val"])
    out[rest] = assign_group_splits(
        [keys[i] for i in rest],
        val_fraction=0.0 if val_datasets else val_fraction,
        test_fraction=0.0 if test_datasets else 0.1,
    )
    key_arr = np.array(keys, dtype=object)
    for name in ("test", "val"):  # a held-out label's sites belong to it alone
        if held[name].any():
            leak = np.isin(key_arr, list(set(key_arr[held[name]]))) & ~held["test"] & ~held[name]
            if leak.any():
                log.warning(
                    "%d session(s) share a transmitter site with the %s datasets and are left out (unused)",
                    int(leak.sum()),
                    name,
                )
            out[leak] = "unused"
    if warn:
        _warn_big_site(keys, site_radius_m)
    return out


def _warn_big_site(keys: Sequence[str], site_radius_m: float) -> None:
    """A site holding most sessions (a walk chained within the radius) leaves the split lopsided."""
    if len(keys) < WALK_MIN_SESSIONS:
        return
    largest = max(np.unique(np.array(keys, dtype=object), return_counts=True)[1])
    if largest > 0.5 * len(keys):
        log.warning(
            "one transmitter site (positions chained within site_radius_m = %g m) holds %d of %d sessions; "
            "the split cannot balance: choose a smaller site_radius_m or another split",
            site_radius_m,
            largest,
            len(keys),
        )


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
