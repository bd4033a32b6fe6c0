"""SessionArrays carry the simulation truth from the store: scenario, Doppler and K per receiver."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from factories import make_session_record

from heimdall.data.arrays import load_session_arrays
from heimdall.features import FeatureConfig
from heimdall.jobs.simulate import SimulateRequest, simulate
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.simulate import load_scenario, simulate_sessions
from heimdall.storage.recordings import write_sessions

V2 = Path(__file__).resolve().parents[2] / "src" / "heimdall" / "scenarios" / "nw-italy-v2.yaml"
FOUR_RX = """receivers:
  - {id: 201, name: Ridge North, latitude: 45.10, longitude: 7.60, altitude_asl: 400}
  - {id: 202, name: Ridge East,  latitude: 45.02, longitude: 7.72, altitude_asl: 300}
  - {id: 203, name: Ridge West,  latitude: 45.00, longitude: 7.52, altitude_asl: 350}
  - {id: 204, name: Ridge South, latitude: 44.94, longitude: 7.63, altitude_asl: 280}
"""


def _own_scenario(folder: Path, name: str = "my-ridge", world_seed: int | None = None) -> Path:
    text = re.sub(r"(?ms)^receivers:.*?(?=^# every receiver)", FOUR_RX, V2.read_text(encoding="utf-8"))
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", text)
    if world_seed is not None:
        text = re.sub(r"(?m)^world_seed: .*$", f"world_seed: {world_seed}", text)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _simulate(data_dir: Path, scenario: Path, sessions: int = 6) -> Settings:
    settings = Settings(data_dir=data_dir)
    simulate(SimulateRequest(scenario=str(scenario), sessions=sessions, seed=3, duration=0.1), settings)
    return settings


def test_own_scenario_is_loaded_back_from_the_store_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _own_scenario(tmp_path)
    original = load_scenario(path)
    settings = _simulate(tmp_path / "store", path)
    path.unlink()  # the file is gone and the working directory is another one: the store must suffice
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    services = open_services(settings)
    try:
        a = load_session_arrays(
            services.db,
            services.store,
            ["sim:my-ridge"],
            FeatureConfig(),
            tmp_path / "cache",
            min_receivers=1,
        )
    finally:
        services.close()
    sha = original.content_sha256
    assert a.network.station_ids == (201, 202, 203, 204)
    assert a.scenarios == {sha: original} and list(a.scenario_sha256) == [sha] * len(a.session_ids)
    sims = {s.session_id: s for s in simulate_sessions(original, 6, 3, 0.1)}  # independent re-run
    for i, sid in enumerate(a.session_ids):
        s = sims[sid]
        assert a.sim_doppler_hz[i] == s.doppler_hz
        np.testing.assert_array_equal(a.sim_rician_k_db[i], [r.rician_k_db for r in s.receivers])
    assert a.sim_rician_k_db.dtype == np.float64 and a.sim_rician_k_db.shape == (len(a.session_ids), 4)


def test_sessions_without_truth(tmp_path: Path) -> None:
    path = _own_scenario(tmp_path)
    settings = _simulate(tmp_path / "store", path, sessions=3)
    services = open_services(settings)
    try:
        write_sessions(
            services.db,
            services.store,
            "heimdall-raw-iq",
            [make_session_record(i, n_samples=1250) for i in range(3)],
        )
        plain = load_session_arrays(
            services.db, services.store, ["test:unit"], FeatureConfig(), tmp_path / "c1", min_receivers=1
        )
        mixed = load_session_arrays(
            services.db, services.store, ["test:unit", "sim:my-ridge"], FeatureConfig(), tmp_path / "c2",
            min_receivers=1,
        )  # fmt: skip
    finally:
        services.close()
    assert plain.scenario_sha256 is None and plain.scenarios is None
    assert plain.sim_doppler_hz is None and plain.sim_rician_k_db is None
    simulated = mixed.session_datasets == "sim:my-ridge"
    assert simulated.sum() == 3 and (~simulated).sum() == 3
    assert set(mixed.scenario_sha256[~simulated]) == {""} and np.isnan(mixed.sim_doppler_hz[~simulated]).all()
    assert np.isnan(mixed.sim_rician_k_db[~simulated]).all()
    assert np.isfinite(mixed.sim_doppler_hz[simulated]).all()
    ridge = [mixed.network.index()[k] for k in (201, 202, 203, 204)]
    assert np.isfinite(mixed.sim_rician_k_db[simulated][:, ridge]).all()
    factory_only = [k for k in mixed.network.station_ids if k not in (201, 202, 203, 204)]
    assert np.isnan(
        mixed.sim_rician_k_db[simulated][:, [mixed.network.index()[k] for k in factory_only]]
    ).all()


def test_feature_cache_tells_two_contents_of_one_name_apart(tmp_path: Path) -> None:
    """Same name and seed, so the same session ids, in two stores sharing one feature cache."""
    cache = tmp_path / "shared-cache"
    loaded = []
    for store, seed in (("a", 1), ("b", 2), ("b", 2)):
        folder = tmp_path / f"scenario-{store}"
        folder.mkdir(exist_ok=True)
        settings = _simulate(tmp_path / store, _own_scenario(folder, world_seed=seed), sessions=3)
        services = open_services(settings)
        try:
            for root in (cache, tmp_path / f"fresh-{store}-{len(loaded)}"):
                loaded.append(
                    load_session_arrays(
                        services.db, services.store, ["sim:my-ridge"], FeatureConfig(), root, min_receivers=1
                    )
                )
        finally:
            services.close()
    a_shared, _a_fresh, b_shared, b_fresh, b_again, _ = loaded
    assert a_shared.session_ids == b_shared.session_ids  # the ids collide …
    assert not np.array_equal(a_shared.scalars, b_fresh.scalars)  # … the recordings do not
    np.testing.assert_array_equal(b_shared.scalars, b_fresh.scalars)  # so B never reads A's entries
    np.testing.assert_array_equal(b_again.scalars, b_fresh.scalars)
