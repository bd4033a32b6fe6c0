"""``simulate --sites FILE`` in the job: sessions stored at the sites (truth, power, notes), a dataset
label of their own, ids apart from a uniform run's, the same bytes with --workers 2, and bad sites
refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from heimdall.errors import UserError
from heimdall.jobs.simulate import BATCH, SimulateRequest, simulate
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.simulate.sites import SitesError, load_sites
from heimdall.storage.queries import list_sessions
from heimdall.storage.scenarios import read_simulation_truth

SITES = """latitude,longitude,power_w,name
45.080,7.767,25,Superga
44.900,8.207,,Asti
45.446,8.622,,Novara
"""


def _sites(tmp_path: Path, text: str = SITES) -> Path:
    path = tmp_path / "sites.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _request(sites: Path | None, **kw: object) -> SimulateRequest:
    args: dict = {"scenario": "nw-italy-v2", "sessions": 12, "seed": 4, "duration": 0.05}
    return SimulateRequest(**{**args, "sites": None if sites is None else str(sites), **kw})


def _objects(data_dir: Path) -> dict[str, str]:
    root = data_dir / "objects"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sessions_are_stored_at_the_sites_with_truth_power_and_notes(tmp_path: Path) -> None:
    path = _sites(tmp_path)
    sites = load_sites(path)
    settings = Settings(data_dir=tmp_path / "hd")
    out = simulate(_request(path), settings)
    label = f"sim:nw-italy-v2:sites-{sites.sha256[:8]}"
    assert (out.written, out.skipped, out.sites, out.dataset) == (12, 0, 3, label)
    services = open_services(settings)
    try:
        stored = list_sessions(services.db, [label])
        with services.db.engine.connect() as conn:
            truth = read_simulation_truth(conn, [s.id for s in stored])
    finally:
        services.close()
    assert len(stored) == 12 and set(truth) == {s.id for s in stored}
    by_name = {s.name: s for s in sites.sites}
    seen = set()
    for s in stored:
        notes = json.loads(s.notes)
        site = by_name[notes["site"]]
        seen.add(site.name)
        assert notes["sites_sha256"] == sites.sha256 and notes["scenario"] == "nw-italy-v2"
        assert (s.source.latitude, s.source.longitude) == (site.latitude, site.longitude)  # the truth
        if site.power_w is not None:
            assert math.isclose(s.source.power_dbm, 10 * math.log10(site.power_w * 1000))
    assert seen == set(by_name)
    again = simulate(_request(path), settings)
    assert (again.written, again.skipped) == (0, 12)  # idempotent


def test_a_uniform_run_and_a_sites_run_of_one_seed_do_not_collide(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "hd")
    uniform = simulate(_request(None), settings)
    placed = simulate(_request(_sites(tmp_path)), settings)
    assert (uniform.written, placed.written, placed.skipped) == (12, 12, 0)
    assert uniform.dataset == "sim:nw-italy-v2" and placed.dataset.startswith("sim:nw-italy-v2:sites-")
    labelled = simulate(_request(_sites(tmp_path), dataset="beacons", start=12, sessions=3), settings)
    assert (labelled.dataset, labelled.written) == ("beacons", 3)  # --dataset still wins


def test_two_workers_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    path = _sites(tmp_path)
    n = BATCH + 5  # two batches, the second short
    one, two = Settings(data_dir=tmp_path / "one"), Settings(data_dir=tmp_path / "two")
    a = simulate(_request(path, sessions=n), one)
    b = simulate(_request(path, sessions=n, workers=2), two)
    assert (a.written, b.written) == (n, n)
    objects = _objects(one.data_dir)
    assert len(objects) >= n and objects == _objects(two.data_dir)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "sites file not found"),
        ("lat,lon\n45,8\n", "line 1: unknown header column 'lat'"),
        (SITES + "41.9,12.5,,Roma\n", "site 'Roma' (line 5, 41.90000, 12.50000) lies outside the area"),
        (
            SITES + "44.30,9.30,0.000001,Dead end\n",
            "site 'Dead end' (line 5, 44.30000, 9.30000): no candidate",
        ),
    ],
)
def test_bad_sites_are_refused_before_any_io(tmp_path: Path, text: str | None, match: str) -> None:
    path = tmp_path / "sites.csv" if text is None else _sites(tmp_path, text)
    settings = Settings(data_dir=tmp_path / "hd")
    with pytest.raises(SitesError) as info:
        simulate(_request(path), settings)
    assert isinstance(info.value, UserError) and match in str(info.value), str(info.value)
    assert not (tmp_path / "hd").exists()
