"""heimdall.data.array_store: a warm start reads back exactly the arrays of the cold load, memory-mapped,
and any change to the stored sessions (or an unreadable entry) sends the next load to the database."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from heimdall.data import arrays as arrays_module
from heimdall.data.arrays import load_session_arrays
from heimdall.data.row_file import RowFile
from heimdall.errors import UserError
from heimdall.features import FeatureConfig
from heimdall.jobs.simulate import SimulateRequest, simulate
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.schema import Measurement, RecordingSession

LABEL = "sim:nw-italy-v2"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("store") / "hd")
    simulate(SimulateRequest(scenario="nw-italy-v2", sessions=40, seed=5, duration=0.05), settings)
    return settings


def _load(settings: Settings, root: Path, **kw: object):
    services = open_services(settings)
    try:
        return load_session_arrays(
            services.db,
            services.store,
            [LABEL],
            FeatureConfig(),
            root / "cache",
            store_root=root / "arrays",
            **kw,
        )
    finally:
        services.close()


def _same(a, b) -> None:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, RowFile) or isinstance(y, RowFile):
            x, y = np.asarray(x), np.asarray(y)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
        elif f.name == "scenarios":
            assert set(x) == set(y)
        else:
            assert x == y, f.name


def test_a_warm_start_reads_the_cold_arrays_back(stored: Settings, tmp_path: Path, monkeypatch) -> None:
    cold = _load(stored, tmp_path)
    calls = []
    monkeypatch.setattr(arrays_module, "_from_database", lambda *a, **k: calls.append(a))
    warm = _load(stored, tmp_path)
    assert calls == []  # nothing read from the database's sessions
    _same(cold, warm)
    assert isinstance(warm.spectrogram, RowFile) and isinstance(cold.spectrogram, RowFile)
    assert warm.spectrogram.shape == (len(warm.session_ids), 7, 64, 3) and warm.has_spectrogram


def test_another_input_is_another_entry(stored: Settings, tmp_path: Path) -> None:
    _load(stored, tmp_path)
    other = _load(stored, tmp_path, val_fraction=0.3)
    assert len(list((tmp_path / "arrays").iterdir())) == 2
    assert other.counts()["val"] > _load(stored, tmp_path).counts()["val"]


@pytest.mark.parametrize("change", ["approval", "power"])
def test_a_changed_store_is_loaded_again(stored: Settings, tmp_path: Path, change: str) -> None:
    settings = Settings(data_dir=tmp_path / "copy")
    simulate(SimulateRequest(scenario="nw-italy-v2", sessions=40, seed=5, duration=0.05), settings)
    before = _load(settings, tmp_path)
    services = open_services(settings)
    try:
        with services.db.sessions() as s, s.begin():
            first = before.session_ids[0]
            if change == "approval":
                s.execute(
                    update(RecordingSession)
                    .where(RecordingSession.id == first)
                    .values(approval_status="rejected")
                )
            else:
                s.execute(
                    update(Measurement)
                    .where(Measurement.recording_session_id == first)
                    .values(signal_strength_db=Measurement.signal_strength_db + 3.0)
                )
    finally:
        services.close()
    after = _load(settings, tmp_path)
    if change == "approval":
        assert first not in after.session_ids and len(after.session_ids) == len(before.session_ids) - 1
    else:
        assert np.nanmax(np.abs(after.row_power_db[0] - before.row_power_db[0])) == pytest.approx(3.0)


def test_an_unreadable_entry_is_rebuilt(stored: Settings, tmp_path: Path) -> None:
    cold = _load(stored, tmp_path)
    (entry,) = (tmp_path / "arrays").iterdir()
    (entry / "arrays.json").write_text("{not json")
    _same(cold, _load(stored, tmp_path))
    _same(cold, _load(stored, tmp_path))  # and written back whole


def test_a_store_root_that_is_a_file_is_refused(stored: Settings, tmp_path: Path) -> None:
    (tmp_path / "arrays").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        _load(stored, tmp_path)


def test_a_concurrent_build_of_the_same_content_keeps_the_first(stored: Settings, tmp_path: Path) -> None:
    """Two processes (DDP ranks) building one entry: the second keeps the first's files in place."""
    from heimdall.data.array_store import _put_in_place

    first = _load(stored, tmp_path)
    (entry,) = (tmp_path / "arrays").iterdir()
    inode = (entry / "arrays.json").stat().st_ino
    meta = (entry / "arrays.json").read_text()
    rival = tmp_path / "arrays" / ".tmp-rival"
    rival.mkdir()
    (rival / "arrays.json").write_text(meta)
    _put_in_place(rival, entry, json.loads(meta)["fingerprint"])
    assert not rival.exists() and (entry / "arrays.json").stat().st_ino == inode
    stale = tmp_path / "arrays" / ".tmp-stale"
    stale.mkdir()
    (stale / "arrays.json").write_text(json.dumps({"fingerprint": "other"}))
    _put_in_place(stale, entry, "other")
    assert json.loads((entry / "arrays.json").read_text())["fingerprint"] == "other"
    assert sorted(p.name for p in (tmp_path / "arrays").iterdir()) == [entry.name]
    _same(first, _load(stored, tmp_path))  # the stale entry is rebuilt


def test_builds_abandoned_by_killed_processes_are_removed(stored: Settings, tmp_path: Path) -> None:
    import os

    from heimdall.data.array_store import STALE_BUILD_S

    root = tmp_path / "arrays"
    old, fresh = root / ".tmp-dead-1", root / ".tmp-running-2"
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / "spectrogram.npy").write_bytes(b"x")
    past = old.stat().st_mtime - STALE_BUILD_S - 60
    os.utime(old, (past, past))
    _load(stored, tmp_path)
    assert not old.exists() and fresh.exists()
