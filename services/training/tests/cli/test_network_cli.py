"""`heimdall stations …` and `heimdall sessions …` through the real CLI, on an embedded store under tmp_path.

Read-only commands never create a data store; every bad input is one `error:` line naming the file,
row and field (or the id), exit status 2, nothing written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heimdall.cli import app

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parents[2] / "src" / "heimdall" / "scenarios" / "nw-italy-v1.yaml"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
HEADER = "id,name,latitude,longitude,altitude_asl,url,frequency_min_hz,frequency_max_hz\n"
GOOD_CSV = HEADER + ",Alpha,45.1,7.1,300,http://alpha.example/,144e6,146e6\n20,Beta,45.2,7.5,,,,\n"
THREE_RX = """receivers:
  - {id: 101, name: Lab North, latitude: 45.10, longitude: 7.60, altitude_asl: 400}
  - {id: 102, name: Lab East,  latitude: 45.02, longitude: 7.72, altitude_asl: 300}
  - {id: 103, name: Lab West,  latitude: 45.00, longitude: 7.52, altitude_asl: 350}
"""


def _scenario(folder: Path, receivers: str = THREE_RX, name: str = "my-lab") -> Path:
    text = re.sub(r"(?ms)^receivers:.*?(?=^# every receiver)", receivers, SHIPPED.read_text(encoding="utf-8"))
    path = folder / f"{name}.yaml"
    path.write_text(re.sub(r"(?m)^name: .*$", f"name: {name}", text), encoding="utf-8")
    return path


def _ok(args: list[str]):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def _fails_cleanly(args: list[str], *names: str) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


HELP = {  # what each page must list: the documented commands, options and arguments
    ("stations",): ("add", "list"),
    ("stations", "add"): ("file",),
    ("stations", "list"): ("--json",),
    ("sessions",): ("list", "approve"),
    ("sessions", "list"): ("--dataset", "--status", "--limit", "--json"),
    ("sessions", "approve"): ("ids...", "--reject"),
}


@pytest.mark.parametrize("args", sorted(HELP), ids=" ".join)
def test_help(args: tuple[str, ...]) -> None:
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert re.search(rf"Usage: heimdall {' '.join(args)} \[OPTIONS\]", r.output), r.output
    missing = [n for n in HELP[args] if not re.search(rf"(^|\s){re.escape(n)}\s", r.output, re.M)]
    assert missing == [], (missing, r.output)


@pytest.mark.parametrize(
    "args",
    [
        ["stations", "list"],
        ["stations", "list", "--json"],
        ["sessions", "list"],
        ["sessions", "list", "--json"],
    ],
)
def test_read_only_commands_create_no_data_store(embedded_env: Path, args: list[str]) -> None:
    r = _ok(args)
    assert f"no database at {embedded_env / 'heimdall.db'} (nothing imported or simulated yet)" in r.stderr
    assert r.stdout.strip() in ("", "[]")
    if "--json" in args:
        assert json.loads(r.stdout) == []
    assert not embedded_env.exists()


def test_add_list_and_readd(embedded_env: Path, tmp_path: Path) -> None:
    f = tmp_path / "net.csv"
    f.write_text(GOOD_CSV, encoding="utf-8")
    r = _ok(["stations", "add", str(f)])
    assert f"stations from {f}: 2 added" in r.stdout and "0 already present" in r.stdout
    r = _ok(["stations", "add", str(f)])
    assert "0 added (none), 2 already present" in r.stdout
    r = _ok(["stations", "list"])
    assert f"stations in sqlite:///{embedded_env / 'heimdall.db'}" in r.stderr
    assert re.search(r"^\s+21\s+Alpha\s+45\.10000\s+7\.10000\s+300 m\s+144–146 MHz\s+active$", r.stdout, re.M)
    assert re.search(r"^\s+20\s+Beta .*\? m\s+-\s+active$", r.stdout, re.M)
    rows = json.loads(_ok(["stations", "list", "--json"]).stdout)
    assert [s["id"] for s in rows] == [1, 2, 3, 4, 5, 6, 7, 20, 21]
    assert rows[-1] == {
        "id": 21,
        "name": "Alpha",
        "latitude": 45.1,
        "longitude": 7.1,
        "altitude_asl": 300.0,
        "url": "http://alpha.example/",
        "frequency_min_hz": 144e6,
        "frequency_max_hz": 146e6,
        "active": True,
    }


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("net.csv", GOOD_CSV.replace("Beta,45.2", "Beta,95.2"), "row 2: latitude: must be within -90…90"),
        ("net.csv", GOOD_CSV.replace("7.5,", "200,"), "row 2: longitude: must be within -180…180"),
        ("net.csv", GOOD_CSV.replace("45.2", "nan"), "row 2: latitude: must be a finite number"),
        ("net.csv", GOOD_CSV.replace(",300,", ",abc,"), "row 1: altitude_asl: must be a number"),
        ("net.csv", GOOD_CSV.replace("Beta", "Alpha"), "row 2: name: 'Alpha' is also the name of row 1"),
        ("net.csv", GOOD_CSV.replace(",Alpha", "20,Alpha"), "row 2: id: 20 is also the id of row 1"),
        ("net.csv", GOOD_CSV.replace("20,Beta", "-4,Beta"), "row 2: id: must be a whole number"),
        ("net.csv", GOOD_CSV.replace("20,Beta", "20,"), "row 2: name: missing"),
        ("net.csv", GOOD_CSV.replace("144e6,146e6", "146e6,144e6"), "row 1: frequency_max_hz"),
        ("net.csv", GOOD_CSV + "30,Delta\n", "row 3: (row): fewer values"),
        ("net.csv", HEADER.replace("url", "site") + ",A,1,2,,,,\n", "row 1: site: unknown column"),
        ("net.csv", "", "empty file"),
        ("net.yaml", "- {name: A, latitude: 1}\n", "row 1: longitude: missing"),
        ("net.yaml", "- {name: A, latitude: [1\n", "not valid YAML"),
        ("net.json", "[]", "unknown file type '.json'"),
        (
            "net.csv",
            "id,name,latitude,longitude\n3,Torino,45.5,7.672\n",
            "row 1: station 3 is already stored as another station (position",
        ),
        (
            "net.csv",
            "id,name,latitude,longitude\n9,Genova,44.395,8.956\n",
            "the name 'Genova' already belongs",
        ),
    ],
)
def test_bad_stations_file(embedded_env: Path, tmp_path: Path, name: str, text: str, where: str) -> None:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    _fails_cleanly(["stations", "add", str(f)], str(f), where)
    r = _ok(["stations", "list", "--json"])
    assert [s["id"] for s in json.loads(r.stdout) or []] in ([], [1, 2, 3, 4, 5, 6, 7])  # nothing added


def test_missing_stations_file(embedded_env: Path, tmp_path: Path) -> None:
    _fails_cleanly(["stations", "add", str(tmp_path / "nope.csv")], "nope.csv", "no such stations file")
    assert not embedded_env.exists()


def test_own_network_end_to_end(embedded_env: Path, tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    r = _ok(
        ["simulate", "--scenario", str(scenario), "--sessions", "10", "--duration", "0.1", "--no-progress"]
    )
    assert "simulated 10 sessions of my-lab" in r.stdout
    names = {s["id"]: s["name"] for s in json.loads(_ok(["stations", "list", "--json"]).stdout)}
    assert names[101] == "Lab North" and names[102] == "Lab East" and names[103] == "Lab West"
    rows = json.loads(_ok(["sessions", "list", "--dataset", "sim:my-lab", "--json"]).stdout)
    assert len(rows) == 10 and all(s["receivers_heard"] == 3 and s["has_truth"] for s in rows)
    assert {s["status"] for s in rows} == {"approved"}
    text = _ok(["sessions", "list", "--limit", "2"]).stdout.splitlines()
    assert (
        len(text) == 2 and rows[0]["id"] in text[0] and "sim:my-lab" in text[0] and " 3 rx  truth" in text[0]
    )
    ids = [s["id"] for s in rows[:4]]
    r = _ok(["sessions", "approve", *ids, "--reject"])
    assert "4 session(s) rejected (4 changed)" in r.stdout
    rejected = json.loads(_ok(["sessions", "list", "--status", "rejected", "--json"]).stdout)
    assert sorted(s["id"] for s in rejected) == sorted(ids)
    _fails_cleanly(["sessions", "approve", ids[0], UNKNOWN], UNKNOWN, "nothing changed")
    assert len(json.loads(_ok(["sessions", "list", "--status", "rejected", "--json"]).stdout)) == 4
    assert "4 session(s) approved (4 changed)" in _ok(["sessions", "approve", *ids]).stdout


def test_conflicting_scenario_receiver_is_refused(embedded_env: Path, tmp_path: Path) -> None:
    clash = _scenario(tmp_path, THREE_RX.replace("id: 102, name: Lab East", "id: 6, name: Lab East"), "clash")
    _fails_cleanly(
        ["simulate", "--scenario", str(clash), "--sessions", "2", "--no-progress"],
        "receiver 6 (Lab East)",
        "name 'Lab East' ≠ 'Genova'",
        "position",
    )
    assert json.loads(_ok(["sessions", "list", "--json"]).stdout) == []


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["sessions", "list", "--status", "done"], ("--status", "'done'")),
        (["sessions", "list", "--limit", "0"], ("--limit",)),
        (["sessions", "approve", "xyz"], ("not a session id", "'xyz'")),
        (["sessions", "approve", UNKNOWN], (UNKNOWN, "no database at")),
    ],
)
def test_bad_sessions_input(embedded_env: Path, args: list[str], names: tuple[str, ...]) -> None:
    _fails_cleanly(args, *names)
    assert not embedded_env.exists()
