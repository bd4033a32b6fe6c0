"""``simulate --workers N``: several processes write exactly what one process writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from heimdall.errors import UserError
from heimdall.jobs.simulate import BATCH, SimulateRequest, simulate
from heimdall.settings import Settings


def _objects(data_dir: Path) -> dict[str, str]:
    """Every stored object (path relative to the store) with the sha256 of its bytes."""
    root = data_dir / "objects"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_two_workers_write_the_same_sessions_and_bytes_as_one(tmp_path: Path) -> None:
    n = 2 * BATCH + 5  # three batches, the last one short
    one = Settings(data_dir=tmp_path / "one")
    two = Settings(data_dir=tmp_path / "two")
    seen: list[int] = []
    a = simulate(SimulateRequest(sessions=n, seed=3, duration=0.05), one)
    b = simulate(
        SimulateRequest(sessions=n, seed=3, duration=0.05, workers=2),
        two,
        progress=lambda _s, d, _t: seen.append(d),
    )
    assert (a.written, a.skipped) == (b.written, b.skipped) == (n, 0)
    assert seen[0] == 0 and seen[-1] == n and sorted(seen) == seen
    objects = _objects(one.data_dir)
    assert len(objects) >= n and objects == _objects(two.data_dir)
    again = simulate(SimulateRequest(sessions=n, seed=3, duration=0.05, workers=2), two)
    assert (again.written, again.skipped) == (0, n)  # idempotent across processes too


def test_worker_count_is_checked_first(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--workers"):
        simulate(SimulateRequest(sessions=1, workers=0), Settings(data_dir=tmp_path / "d"))
    assert not (tmp_path / "d").exists()
