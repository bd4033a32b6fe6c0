"""Splits that do not leak: transmitter sites stay whole, held-out labels take their sites, walks warn.

Sessions are generated here around known sites (the answer: which sessions belong together), so the
tests never take the code's own grouping as the truth.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from heimdall.data.splits import assign_splits, site_keys, split_sessions, walk_recorded_labels
from heimdall.geo import LocalFrame

FRAME = LocalFrame(45.0, 8.0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _session(i: int, east_m: float, north_m: float, *, dataset: str = "a", source: object = None, **kw):
    lat, lon = FRAME.to_latlon(np.array([east_m, north_m]))
    src = SimpleNamespace(
        id=source if source is not None else uuid.UUID(int=10**6 + i),
        latitude=float(lat),
        longitude=float(lon),
    )
    return SimpleNamespace(
        id=uuid.UUID(int=i + 1),
        dataset=dataset,
        session_start=kw.get("start", T0 + timedelta(hours=i)),
        notes=kw.get("notes"),
        source=src,
    )


def generated_sites(n_sites: int, per_site: int, seed: int, jitter_m: float = 20.0):
    """Sessions at `n_sites` sites 5–60 km apart, each with `per_site` GPS-jittered truths."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-60e3, 60e3, size=(n_sites, 2))
    sessions, site = [], []
    for k, c in enumerate(centres):
        for _ in range(per_site):
            e, n = c + rng.normal(0, jitter_m / 3, 2)
            sessions.append(_session(len(sessions), e, n))
            site.append(k)
    order = rng.permutation(len(sessions))
    return [sessions[i] for i in order], np.array(site)[order]


def test_sessions_of_one_site_never_straddle_splits() -> None:
    sessions, site = generated_sites(40, 25, seed=0)
    out = split_sessions(sessions, "hash", val_fraction=0.2, site_radius_m=100.0)
    for k in range(40):
        assert len(set(out[site == k])) == 1, f"site {k} straddles {set(out[site == k])}"
    counts = {s: int((out == s).sum()) for s in ("train", "val", "test")}
    assert all(c > 0 for c in counts.values()), counts
    # a radius below the GPS jitter splits the sites apart again (what the grouping prevents)
    loose = split_sessions(sessions, "hash", val_fraction=0.2, site_radius_m=0.0)
    assert any(len(set(loose[site == k])) > 1 for k in range(40))


def test_same_known_source_is_one_site_wherever_its_truths_are() -> None:
    shared = uuid.UUID(int=42)
    sessions = [_session(i, 10e3 * i, 0.0, source=shared if i % 3 == 0 else None) for i in range(30)]
    keys = site_keys(sessions, 100.0)
    assert len({keys[i] for i in range(0, 30, 3)}) == 1
    assert keys[0] == str(sessions[0].id)  # named by its earliest session
    assert len(set(keys)) == 1 + 20


def test_sites_chain_within_the_radius_and_keep_their_key_when_data_arrive() -> None:
    chain = [_session(i, 80.0 * i, 0.0) for i in range(5)]  # neighbours 80 m apart: one site at 100 m
    far = [_session(10, 50e3, 0.0)]
    keys = site_keys(chain + far, 100.0)
    assert len(set(keys[:5])) == 1 and keys[5] != keys[0]
    assert len(set(site_keys(chain, 50.0))) == 5
    later = [_session(20 + i, 40.0 + 80.0 * i, 30.0) for i in range(3)]
    assert site_keys(chain + far + later, 100.0)[:6] == keys


def test_singleton_sites_split_exactly_as_the_session_hash() -> None:
    sessions = [_session(i, 1e3 * i, 0.0) for i in range(300)]  # 1 km apart: every session its own site
    out = split_sessions(sessions, "hash", val_fraction=0.1, site_radius_m=100.0)
    assert np.array_equal(out, assign_splits([s.id for s in sessions], val_fraction=0.1))


def test_validation_labels_and_their_sites() -> None:
    train_sessions, _ = generated_sites(20, 10, seed=1)
    val_sessions = [_session(1000 + i, 1e3 * i, 5e3, dataset="v") for i in range(30)]
    # one training-label session at the site of validation session 0: it would leak into validation
    stray = _session(2000, 10.0, 5e3 + 10.0, dataset="a")
    sessions = [*train_sessions, *val_sessions, stray]
    out = split_sessions(sessions, "hash", val_datasets=["v"], val_fraction=0.2)
    labels = np.array([s.dataset for s in sessions])
    assert (out[labels == "v"] == "val").all()
    assert out[-1] == "unused"
    assert set(out[:-31]) <= {"train", "test"} and (out[:-31] == "test").any()
    both = split_sessions(sessions, "hash", test_datasets=["a"], val_datasets=["v"])
    assert (both[labels == "a"] == "test").all()
    # the test label keeps its sites: validation session 0 shares one with the stray session
    assert both[len(train_sessions)] == "unused" and (both[labels == "v"][1:] == "val").all()
    with pytest.raises(ValueError, match="both test and val"):
        split_sessions(sessions, "hash", test_datasets=["v"], val_datasets=["v"])
    with pytest.raises(ValueError, match="only combine with the hash split"):
        split_sessions(sessions, "powder_grid", val_datasets=["v"])


def _walk(n: int, dataset: str = "powder", notes: dict | None = None):
    """A handheld walked at 1.4 m/s, one sample every 4 s (POWDER-like)."""
    return [
        _session(
            i,
            5.6 * i,
            0.5 * i,
            dataset=dataset,
            start=T0 + timedelta(seconds=4 * i),
            notes=json.dumps(notes) if notes else None,
        )
        for i in range(n)
    ]


def test_a_walk_recorded_label_with_a_random_split_warns(caplog: pytest.LogCaptureFixture) -> None:
    walk = _walk(60, notes={"powder_grid": "train", "powder_random": "test"})
    spread, _ = generated_sites(30, 1, seed=2)
    assert set(walk_recorded_labels([*walk, *spread])) == {"powder"}
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        split_sessions(walk, "hash", site_radius_m=0.0)
    lines = [r.getMessage() for r in caplog.records if "walk" in r.getMessage()]
    assert len(lines) == 1 and "'powder'" in lines[0] and "--split powder-grid" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        split_sessions(spread, "hash")
    assert not caplog.records
    # a caller that replaces the split by a recorded one (evaluate) asks for no advice about it
    with caplog.at_level(logging.WARNING, logger="heimdall.data"):
        quiet = split_sessions(walk, "hash", warn=False)
        split_sessions(walk, "hash")  # the default radius chains the whole walk into one site
    assert [r.getMessage() for r in caplog.records if "walk" in r.getMessage()] == lines
    assert sum("holds" in r.getMessage() for r in caplog.records) == 1
    assert list(quiet) == list(split_sessions(walk, "hash"))  # silence changes no split


def test_site_radius_is_checked() -> None:
    with pytest.raises(ValueError, match="site_radius_m"):
        site_keys([_session(0, 0.0, 0.0)], -1.0)
