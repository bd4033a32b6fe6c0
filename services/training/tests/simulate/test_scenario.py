"""Scenario loading: the shipped nw-italy-v1 matches docs/SIMULATOR.md; bad files fail with clear errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from heimdall.simulate import Scenario, ScenarioError, available_scenarios, load_scenario
from heimdall.stations import NW_ITALY_STATIONS


def _shipped_dict() -> dict:
    return load_scenario("nw-italy-v1").model_dump(mode="json")


def _write(tmp_path: Path, data: dict | str, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_shipped_network_matches_the_station_table(scenario: Scenario) -> None:
    assert scenario.name == "nw-italy-v1"
    assert scenario.dataset_label == "sim:nw-italy-v1"
    assert [r.id for r in scenario.receivers] == list(range(1, 8))
    for rx, st in zip(scenario.receivers, NW_ITALY_STATIONS, strict=True):
        assert (rx.id, rx.name, rx.latitude, rx.longitude, rx.altitude_asl) == (
            st.id, st.name, st.latitude, st.longitude, st.altitude_asl,
        )  # fmt: skip
        assert (rx.antenna_gain_dbi, rx.antenna_height_m, rx.noise_figure_db) == (2.0, 10.0, 6.0)


def test_shipped_parameters_are_the_pinned_ones(scenario: Scenario) -> None:
    sc = scenario
    assert [(b.frequency_hz, b.probability) for b in sc.bands] == [(145.5e6, 0.8), (433.5e6, 0.2)]
    assert (sc.sample_rate_hz, sc.default_duration_s, sc.detection_snr_db, sc.min_receivers_heard) == (
        12_500.0, 0.5, 6.0, 3,
    )  # fmt: skip
    assert (sc.gain_offset_max_db, sc.frequency_offset_max_hz, sc.area_margin_m) == (2.0, 50.0, 20_000.0)
    tx = sc.transmitter
    assert (tx.power_w_min, tx.power_w_max, tx.antenna_height_m, tx.gain_dbi, tx.fm_deviation_hz) == (
        1.0, 50.0, 1.5, 0.0, 2500.0,
    )  # fmt: skip
    assert math.isclose(tx.power_dbm_min, 30.0) and math.isclose(tx.power_dbm_max, 10 * math.log10(50e3))
    assert set(tx.content) == {"voice", "ctcss_tone", "afsk1200"}
    assert math.isclose(sum(tx.content.values()), 1.0)
    p = sc.propagation
    assert (p.breakpoint_m, p.slope_db_per_decade, p.clutter_db) == (1000.0, 35.0, 10.0)
    assert (p.static_shadowing_sigma_db, p.decorrelation_m, p.band_correlation) == (7.0, 4000.0, 0.7)
    assert (p.grid_spacing_m, p.dynamic_shadowing_sigma_db) == (250.0, 3.0)
    f = sc.fading
    assert (f.k_db_min, f.k_db_max, f.doppler_hz_min, f.doppler_hz_max) == (0.0, 10.0, 0.0, 5.0)


def test_content_hash_is_stable_and_sensitive(scenario: Scenario, tmp_path: Path) -> None:
    h = scenario.content_hash()
    assert len(h) == 64 and int(h, 16) >= 0
    assert load_scenario("nw-italy-v1").content_hash() == h
    assert load_scenario(_write(tmp_path, _shipped_dict())).content_hash() == h
    changed = scenario.model_copy(update={"world_seed": scenario.world_seed + 1})
    assert changed.content_hash() != h


def test_available_and_load_by_path(tmp_path: Path) -> None:
    assert "nw-italy-v1" in available_scenarios()
    data = _shipped_dict() | {"name": "my-net"}
    path = _write(tmp_path, data)
    assert load_scenario(path).name == "my-net"
    assert load_scenario(str(path)).name == "my-net"


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario 'atlantis'.*nw-italy-v1"):
        load_scenario("atlantis")
    assert issubclass(ScenarioError, ValueError)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError, match=r"nope\.yaml.*not found"):
        load_scenario(missing)


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: [unclosed\nworld_seed: 1\n", "broken.yaml")
    with pytest.raises(ScenarioError, match=r"broken\.yaml.*malformed YAML"):
        load_scenario(path)
    not_a_mapping = _write(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ScenarioError, match=r"list\.yaml.*mapping"):
        load_scenario(not_a_mapping)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["propagation"].update(static_shadowing_sigma_db=-1),
            "propagation.static_shadowing_sigma_db",
        ),
        (lambda d: d["propagation"].update(decorrelation_m=0.0), "propagation.decorrelation_m"),
        (lambda d: d.update(sample_rate_hz=-5.0), "sample_rate_hz"),
        (lambda d: d["bands"][0].update(probability=0.5), "bands"),
        (lambda d: d["receivers"][1].update(id=1), "receivers"),
        (lambda d: d.update(receivers=d["receivers"][:2]), "receivers"),
        (lambda d: d["receivers"][0].update(latitude=123.0), "receivers.0.latitude"),
        (lambda d: d["transmitter"].update(content={"voice": 0.5, "morse": 0.5}), "transmitter.content"),
        (lambda d: d["transmitter"].update(power_w_max=0.5), "power_w_max"),
        (lambda d: d.update(min_receivers_heard=9), "min_receivers_heard"),
        (lambda d: d.update(sample_rate_hz=8000.0), "sample_rate_hz"),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d.pop("world_seed"), "world_seed"),
    ],
)
def test_invalid_field_names_file_and_field(tmp_path: Path, mutate, field: str) -> None:
    data = _shipped_dict()
    mutate(data)
    path = _write(tmp_path, data, "bad.yaml")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert "bad.yaml" in str(err.value)
    assert field in str(err.value)


def _v2_dict() -> dict:
    return load_scenario("nw-italy-v2").model_dump(mode="json", exclude_none=True)


@pytest.mark.parametrize(
    ("fading", "message"),
    [
        ({"doppler_hz_min": 0.0, "doppler_hz_max": 5.0}, "not both"),
        ({"speed_kmh_max": None}, "give both speed_kmh_min and speed_kmh_max"),
        ({"speed_kmh_min": 20.0}, "speed_kmh_max must be >= speed_kmh_min"),
        ({"speed_kmh_max": 5e9}, "must be below half the sample rate"),
    ],
)
def test_inconsistent_fading_is_one_line(tmp_path: Path, fading: dict, message: str) -> None:
    data = _v2_dict()
    data["fading"] = {k: v for k, v in (data["fading"] | fading).items() if v is not None}
    with pytest.raises(ScenarioError, match=message) as exc:
        load_scenario(_write(tmp_path, data))
    assert "\n" not in str(exc.value)


def test_blind_snr_uses_the_one_heard_threshold(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="detection_snr_db must be 6"):
        load_scenario(_write(tmp_path, _v2_dict() | {"detection_snr_db": 7.0}))


def test_content_sha256_ignores_layout_comments_and_stated_defaults(tmp_path: Path) -> None:
    v2 = load_scenario("nw-italy-v2")
    text = "# my copy\n" + yaml.safe_dump(_v2_dict(), default_flow_style=True, width=60)
    assert load_scenario(_write(tmp_path, text, "a.yaml")).content_sha256 == v2.content_sha256
    without_defaults = _v2_dict()
    del without_defaults["transmitter"]["gain_dbi"], without_defaults["fading"]["k_db_min"]
    assert load_scenario(_write(tmp_path, without_defaults, "b.yaml")).content_sha256 == v2.content_sha256
    assert v2.content_sha256 == hashlib.sha256(v2.canonical_json().encode()).hexdigest()
    assert Scenario.model_validate(json.loads(v2.canonical_json())) == v2
    # a scenario naming no Doppler or speed range draws the Doppler 0-5 Hz, as before
    plain = _shipped_dict()
    del plain["fading"]["doppler_hz_min"], plain["fading"]["doppler_hz_max"]
    assert (
        load_scenario(_write(tmp_path, plain, "c.yaml")).content_sha256
        == load_scenario("nw-italy-v1").content_sha256
    )
