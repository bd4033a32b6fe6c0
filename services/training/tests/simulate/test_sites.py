"""heimdall.simulate.sites: CSV and YAML sites files parse to the same sites; every bad input is one line
naming the file, the row and the field."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from heimdall.errors import UserError
from heimdall.simulate.sites import (
    MAX_SITES,
    MAX_SITES_FILE_BYTES,
    SitesError,
    load_sites,
    parse_sites_csv,
    parse_sites_yaml,
)

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "heimdall" / "scenarios" / "nw-italy-sites.csv"

CSV = """\ufefflatitude, Longitude ,power_w,name

45.08,7.767,25,Superga
44.9,8.207,,
"45.446","8.622","","Novara, centre"
"""

YAML = """
sites:
  - {latitude: 45.08, longitude: 7.767, power_w: 25, name: Superga}
  - {latitude: 44.9, longitude: 8.207}
  - latitude: 45.446
    longitude: 8.622
    power_w: null
    name: Novara, centre
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_fields_defaults_and_layout(tmp_path: Path) -> None:
    sites = load_sites(_write(tmp_path, "s.csv", CSV))  # BOM, spaces and case in the header, blank line
    assert [(s.latitude, s.longitude, s.power_w, s.name) for s in sites.sites] == [
        (45.08, 7.767, 25.0, "Superga"),
        (44.9, 8.207, None, "site 2"),  # no power: the scenario's draw; no name: its ordinal
        (45.446, 8.622, None, "Novara, centre"),
    ]
    assert [s.where for s in sites.sites] == ["line 3", "line 4", "line 5"]
    assert math.isclose(sites.sites[0].power_dbm, 10 * math.log10(25_000))
    assert sites.sites[1].power_dbm is None
    assert sites.describe(0) == f"{tmp_path / 's.csv'}: site 'Superga' (line 3, 45.08000, 7.76700)"


def test_yaml_list_mapping_and_csv_are_the_same_sites(tmp_path: Path) -> None:
    csv_sites = load_sites(_write(tmp_path, "s.csv", CSV))
    mapping = load_sites(_write(tmp_path, "s.yaml", YAML))
    as_list = parse_sites_yaml(YAML.replace("sites:\n", "").replace("\n  ", "\n"), "list.yml")
    assert len(mapping) == len(as_list) == 3
    assert mapping.sha256 == as_list.sha256 == csv_sites.sha256  # content, not format or layout
    assert [s.where for s in mapping.sites] == ["entry 1", "entry 2", "entry 3"]
    moved = parse_sites_csv(CSV.replace("44.9,", "44.91,"), "s.csv")
    assert moved.sha256 != csv_sites.sha256
    renamed = parse_sites_csv(CSV.replace("Superga", "Superga 2"), "s.csv")
    assert renamed.sha256 != csv_sites.sha256  # names are stored with the sessions: part of the identity


def test_the_shipped_example_parses() -> None:
    sites = load_sites(SHIPPED)
    assert len(sites) == 15 and len({s.name for s in sites.sites}) == 15
    assert {s.power_w is None for s in sites.sites} == {True, False}  # both kinds of site


HEADER = "latitude,longitude,power_w,name\n"

BAD_CSV = [
    ("", "the file is empty; the first line must be the header latitude,longitude"),
    ("\n\n", "the file is empty"),
    (HEADER, "no sites (the list is empty)"),
    ("latitude,power_w\n45,1\n", "line 1: the header lacks longitude"),
    ("lat,lon\n45,8\n", "line 1: unknown header column 'lat'"),
    ("45.1,7.2\n45.2,7.3\n", "line 1: unknown header column '45.1'; the first line must be the header"),
    ("latitude,longitude,latitude\n45,8,45\n", "line 1: header column 'latitude' appears twice"),
    ("latitude,,longitude\n45,,8\n", "line 1: header column 2 is empty"),
    (HEADER + "45,8,1\n", "line 2: 3 values for the 4 columns latitude,longitude,power_w,name"),
    (HEADER + "45,8,1,a\nabc,8,1,b\n", "line 3: latitude 'abc' is not a number"),
    (HEADER + ",8,1,a\n", "line 2: latitude is empty"),
    (HEADER + "45,eight,1,a\n", "line 2: longitude 'eight' is not a number"),
    (HEADER + "45,nan,1,a\n", "line 2: longitude must be finite, got 'nan'"),
    (HEADER + "91,8,1,a\n", "line 2: latitude 91 is outside -90..90"),
    (HEADER + "-90.5,8,1,a\n", "line 2: latitude -90.5 is outside -90..90"),
    (HEADER + "45,180.5,1,a\n", "line 2: longitude 180.5 is outside -180..180"),
    (HEADER + "45,8,0,a\n", "line 2: power_w must be > 0 W, got 0"),
    (HEADER + "45,8,-5,a\n", "line 2: power_w must be > 0 W, got -5"),
    (HEADER + "45,8,inf,a\n", "line 2: power_w must be finite"),
    (HEADER + "45,8,lots,a\n", "line 2: power_w 'lots' is not a number"),
    (HEADER + "45,8,1,a\n46,8,1,a\n", "line 3: name 'a' is already used (line 2)"),
    (HEADER + '45,8,1,"a"b\n', "line 2: malformed CSV"),
]


@pytest.mark.parametrize(("text", "match"), BAD_CSV)
def test_bad_csv_is_one_line_naming_file_row_and_field(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(SitesError) as info:
        load_sites(path)
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith(f"{path}: ") and match in message, message


BAD_YAML = [
    ("sites: [1, 2", "malformed YAML"),
    ("", "no sites (the list is empty)"),
    ("sites: []", "no sites (the list is empty)"),
    ("sites:", "no sites (the list is empty)"),
    ("42", "sites must be a YAML list of mappings, got int"),
    ("sites: {latitude: 45, longitude: 8}", "sites must be a YAML list of mappings, got dict"),
    ("beacons: []", "a mapping must have the one key 'sites' (a list), got keys beacons"),
    ("sites: []\nextra: 1", "got keys extra, sites"),
    ("- [45, 8]", "entry 1: a site must be a mapping of latitude,longitude[,power_w][,name], got list"),
    ("- {latitude: 45, longitude: 8, height: 3}", "entry 1: unknown key 'height'"),
    ("- {latitude: 45, longitude: 8}\n- {longitude: 8}", "entry 2: latitude missing"),
    ("- {latitude: 45, longitude: null}", "entry 1: longitude missing"),
    ("- {latitude: true, longitude: 8}", "entry 1: latitude must be a number, got bool"),
    ("- {latitude: [45], longitude: 8}", "entry 1: latitude must be a number, got list"),
    ("- {latitude: 45, longitude: 8, power_w: 0}", "entry 1: power_w must be > 0 W, got 0"),
    ("- {latitude: 45, longitude: 200}", "entry 1: longitude 200 is outside -180..180"),
    ("- {latitude: 45, longitude: 8, name: [a]}", "entry 1: name must be text, got list"),
    ("- {latitude: 45, longitude: 8, latitude: 46}", "key 'latitude' appears twice"),
    ("- {latitude: 45, longitude: 8, name: a}\n- {latitude: 46, longitude: 8, name: a}", "entry 2: name 'a'"),
]


@pytest.mark.parametrize(("text", "match"), BAD_YAML)
def test_bad_yaml_is_one_line_naming_file_entry_and_field(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(SitesError) as info:
        load_sites(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and match in message, message


def test_missing_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(SitesError, match=r"nowhere\.csv: sites file not found$"):
        load_sites(tmp_path / "nowhere.csv")
    with pytest.raises(SitesError, match=r"must end in \.csv, \.yaml or \.yml"):
        load_sites(_write(tmp_path, "sites.txt", CSV))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "45,8,1,Sant\xe9\n".encode("latin-1"))
    with pytest.raises(SitesError, match="cannot read the sites file"):
        load_sites(latin)
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_SITES_FILE_BYTES + 1)
    with pytest.raises(SitesError, match=f"at most {MAX_SITES_FILE_BYTES:,}"):
        load_sites(huge)


def test_too_many_sites() -> None:
    text = "latitude,longitude\n" + "45,8\n" * (MAX_SITES + 1)
    with pytest.raises(SitesError, match=f"{MAX_SITES + 1:,} sites; at most {MAX_SITES:,}"):
        parse_sites_csv(text, "many.csv")
