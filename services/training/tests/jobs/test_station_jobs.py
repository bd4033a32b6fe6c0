"""heimdall.jobs.stations and the scenario receivers of heimdall.jobs.simulate: your own network.

Stations files (CSV, YAML) are checked row by row before anything is written; registering is
idempotent and a clash with a stored station (same id or name, another station) is a clear UserError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from heimdall.errors import UserError
from heimdall.jobs.simulate import SimulateRequest, simulate
from heimdall.jobs.stations import AddStationsRequest, add_stations, read_stations_file, stations
from heimdall.settings import Settings
from heimdall.storage.database import open_database
from heimdall.storage.schema import Measurement

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "heimdall" / "scenarios" / "nw-italy-v1.yaml"
HEADER = "id,name,latitude,longitude,altitude_asl,url,frequency_min_hz,frequency_max_hz\n"
GOOD_CSV = HEADER + ",Alpha,45.1,7.1,300,http://alpha.example/,144e6,146e6\n20,Beta,45.2,7.5,,,,\n"
THREE_RX = """receivers:
  - {id: 101, name: Lab North, latitude: 45.10, longitude: 7.60, altitude_asl: 400}
  - {id: 102, name: Lab East,  latitude: 45.02, longitude: 7.72, altitude_asl: 300}
  - {id: 103, name: Lab West,  latitude: 45.00, longitude: 7.52, altitude_asl: 350}
"""


def custom_scenario(folder: Path, receivers: str = THREE_RX, name: str = "my-lab") -> Path:
    """The shipped scenario with other receivers (and name): a user's own network."""
    text = SHIPPED.read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^receivers:.*?(?=^# every receiver)", receivers, text)
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", text)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "heimdall-data")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_add_is_idempotent_and_list_shows_them(settings: Settings, tmp_path: Path) -> None:
    f = _write(tmp_path, "net.csv", GOOD_CSV)
    first = add_stations(AddStationsRequest(file=f), settings)
    assert sorted(first.added) == [20, 21] and first.present == []  # the empty id → next free id
    again = add_stations(AddStationsRequest(file=f), settings)
    assert again.added == [] and sorted(again.present) == [20, 21]
    listed = {s.id: s for s in stations(settings).stations}
    alpha = listed[21]
    assert (alpha.name, alpha.latitude, alpha.longitude, alpha.altitude_asl) == ("Alpha", 45.1, 7.1, 300)
    assert (alpha.url, alpha.frequency_min_hz, alpha.frequency_max_hz) == (
        "http://alpha.example/",
        144e6,
        146e6,
    )
    assert alpha.active and (listed[20].latitude, listed[20].longitude) == (45.2, 7.5)
    assert listed[20].altitude_asl is None and listed[1].name == "Aquila di Giaveno"


def test_yaml_file_and_the_seeded_station_as_is(settings: Settings, tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        "net.yaml",
        "stations:\n  - {id: 3, name: Torino, latitude: 45.044, longitude: 7.672}\n"
        "  - {name: Gamma, latitude: -33.9, longitude: 151.2, altitude_asl: 12}\n",
    )
    out = add_stations(AddStationsRequest(file=f), settings)
    assert out.present == [3] and out.added == [8]
    listed = {s.id: s for s in stations(settings).stations}
    gamma, torino = listed[8], listed[3]
    assert (gamma.name, gamma.latitude, gamma.longitude, gamma.altitude_asl) == ("Gamma", -33.9, 151.2, 12)
    assert (torino.name, torino.latitude, torino.longitude) == ("Torino", 45.044, 7.672)
    assert sorted(listed) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD_CSV.replace("Beta,45.2", "Beta,95.2"), "row 2: latitude"),
        (GOOD_CSV.replace("7.5,", "-181,"), "row 2: longitude"),
        (GOOD_CSV.replace("45.2", "nan"), "row 2: latitude: must be a finite number"),
        (GOOD_CSV.replace("45.2", "north"), "row 2: latitude: must be a number"),
        (GOOD_CSV.replace(",300,", ",inf,"), "row 1: altitude_asl: must be a finite"),
        (GOOD_CSV.replace("Beta", "Alpha"), "row 2: name: 'Alpha' is also the name of row 1"),
        (GOOD_CSV.replace(",Alpha", "20,Alpha"), "row 2: id: 20 is also the id of row 1"),
        (GOOD_CSV.replace("20,Beta", "x,Beta"), "row 2: id"),
        (GOOD_CSV.replace("20,Beta", "0,Beta"), "row 2: id: must be a whole number"),
        (GOOD_CSV.replace("20,Beta", "2.5,Beta"), "row 2: id: must be a whole number"),
        (GOOD_CSV.replace("20,Beta", "20,"), "row 2: name: missing"),
        (GOOD_CSV.replace("45.2,7.5", ",7.5"), "row 2: latitude: missing"),
        (GOOD_CSV.replace("144e6,146e6", "146e6,144e6"), "row 1: frequency_max_hz"),
        (GOOD_CSV.replace("144e6", "-1"), "row 1: frequency_min_hz: must be > 0"),
        (GOOD_CSV + "30,Delta,1,2,3,,,,extra\n", "row 3: (row): more values"),
        (GOOD_CSV + "30,Delta\n", "row 3: (row): fewer values"),
        (HEADER.replace("url", "site") + ",A,1,2,,,,\n", "row 1: site: unknown column"),
        ("id,name,longitude\n1,A,2\n", "header: missing column(s) latitude"),
        ("", "empty file"),
        (HEADER, "no stations in the file"),
    ],
)
def test_bad_csv_names_file_row_and_field(tmp_path: Path, text: str, where: str) -> None:
    f = _write(tmp_path, "net.csv", text)
    with pytest.raises(UserError) as err:
        read_stations_file(f)
    assert str(f) in str(err.value) and where in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("net.yaml", "- {name: A, latitude: 1}\n", "row 1: longitude: missing"),
        ("net.yaml", "- {name: A, latitude: true, longitude: 1}\n", "row 1: latitude: must be a number"),
        ("net.yaml", "- {name: [x], latitude: 1, longitude: 1}\n", "row 1: name: must be text"),
        ("net.yaml", "- just a string\n", "row 1: (row): expected a mapping"),
        ("net.yaml", "name: A\n", "expected a list of stations"),
        ("net.yaml", "- {name: A, latitude: [1\n", "not valid YAML"),
        ("net.yml", "[]\n", "no stations in the file"),
        ("net.txt", "whatever\n", "unknown file type '.txt'"),
    ],
)
def test_bad_yaml_or_file_type(tmp_path: Path, name: str, text: str, where: str) -> None:
    f = _write(tmp_path, name, text)
    with pytest.raises(UserError) as err:
        read_stations_file(f)
    assert str(f) in str(err.value) and where in str(err.value), str(err.value)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such stations file"):
        read_stations_file(tmp_path / "nope.csv")
    f = tmp_path / "latin1.csv"
    f.write_bytes(HEADER.encode() + b",Caf\xe9,1,2,,,,\n")
    with pytest.raises(UserError, match="cannot read"):
        read_stations_file(f)


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ("3,Torino2,45.044,7.672,", "name 'Torino2' ≠ 'Torino'"),
        ("3,Torino,45.5,7.672,", "position 45.500000, 7.672000 is"),
        ("3,Torino,45.044,7.672,900", "altitude 900 m ≠ 250 m"),
        ("99,Torino,45.044,7.672,", "the name 'Torino' already belongs to station 3"),
        (",Torino,45.3,7.672,", "station 3 is already stored as another station (position"),
    ],
)
def test_clash_with_a_stored_station_writes_nothing(
    settings: Settings, tmp_path: Path, row: str, what: str
) -> None:
    f = _write(tmp_path, "net.csv", "id,name,latitude,longitude,altitude_asl\n50,Fresh,1,2,\n" + row + "\n")
    with pytest.raises(UserError) as err:
        add_stations(AddStationsRequest(file=f), settings)
    assert f"{f}: row 2" in str(err.value) and what in str(err.value), str(err.value)
    assert 50 not in {s.id for s in stations(settings).stations}  # all or nothing


def test_list_without_a_database_creates_nothing(settings: Settings) -> None:
    out = stations(settings)
    assert out.stations == [] and out.missing is not None
    assert out.missing.startswith("no database at ") and "nothing imported or simulated yet" in out.missing
    assert not settings.data_dir.exists()


def test_bad_file_is_refused_before_the_database_is_created(settings: Settings, tmp_path: Path) -> None:
    f = _write(tmp_path, "net.csv", GOOD_CSV.replace("45.2", "95"))
    with pytest.raises(UserError):
        add_stations(AddStationsRequest(file=f), settings)
    assert not settings.data_dir.exists()


def test_simulate_a_custom_network_registers_its_receivers(settings: Settings, tmp_path: Path) -> None:
    scenario = custom_scenario(tmp_path)
    out = simulate(SimulateRequest(scenario=str(scenario), sessions=10, seed=1, duration=0.1), settings)
    assert (out.scenario, out.written, out.skipped) == ("my-lab", 10, 0)
    listed = {s.id: s for s in stations(settings).stations}
    assert listed[101].name == "Lab North" and listed[103].altitude_asl == 350
    db = open_database(settings.resolved_database_url)
    try:
        with db.sessions() as q:
            used = set(q.scalars(select(Measurement.websdr_station_id).distinct()))
    finally:
        db.dispose()
    assert used == {101, 102, 103}
    again = simulate(SimulateRequest(scenario=str(scenario), sessions=10, seed=1, duration=0.1), settings)
    assert (again.written, again.skipped) == (0, 10)  # the receivers again: a no-op


def test_scenario_receiver_clashing_with_a_stored_station_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    moved = THREE_RX.replace("id: 101, name: Lab North", "id: 3, name: Lab North")
    scenario = custom_scenario(tmp_path, moved, name="clash")
    with pytest.raises(UserError) as err:
        simulate(SimulateRequest(scenario=str(scenario), sessions=2, seed=1, duration=0.1), settings)
    msg = str(err.value)
    assert "receiver 3 (Lab North)" in msg and "name 'Lab North' ≠ 'Torino'" in msg and "position" in msg
    assert {s.id for s in stations(settings).stations} == set(range(1, 8))  # nothing registered
    db = open_database(settings.resolved_database_url)
    try:
        with db.sessions() as q:
            assert q.scalars(select(Measurement.id)).first() is None
    finally:
        db.dispose()
