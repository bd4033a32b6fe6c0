"""``heimdall import rss``: both CSV layouts, moving receivers, empty cell vs value, unknown stations,
duplicates, bad cells naming line and column with nothing written, a no-op re-import, then training.

The dataset is generated here (log-distance powers from known transmitter positions); every stored
row is read back with sqlite3 and compared with what this file wrote."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from heimdall.cli import app

runner = CliRunner()
LAT0, LON0 = 44.5, 8.9
FIXED = {"alpha": (44.53, 8.86), "bravo": (44.47, 8.95), "charlie": (44.52, 8.96), "delta": (44.46, 8.85)}
BUS = "bus-1"
RANGE_M = 7000.0  # beyond this a receiver does not hear (an empty cell)


@dataclass
class Sample:
    key: str
    stamp: str
    tx: tuple[float, float]
    rss: dict[str, float | None]  # None: not received
    bus_pos: tuple[float, float] | None


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    ky = 111_320.0
    kx = ky * math.cos(math.radians(LAT0))
    return math.hypot((a[0] - b[0]) * ky, (a[1] - b[1]) * kx)


def _samples(n: int, seed: int = 1) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tx = (LAT0 + rng.uniform(-0.04, 0.04), LON0 + rng.uniform(-0.06, 0.06))
        bus = (LAT0 + rng.uniform(-0.03, 0.03), LON0 + rng.uniform(-0.03, 0.03))
        rss: dict[str, float | None] = {}
        for name, pos in [*FIXED.items(), (BUS, bus)]:
            d = _distance_m(tx, pos)
            rss[name] = (
                round(-30.0 - 30.0 * math.log10(max(d, 10.0)) + rng.normal(0, 2), 2) if d < RANGE_M else None
            )
        out.append(Sample(f"s{i:03d}", f"2024-05-01T10:{i // 60:02d}:{i % 60:02d}Z", tx, rss, bus))
    return out


def _stations_file(path: Path) -> Path:
    rows = [*[(n, la, lo) for n, (la, lo) in FIXED.items()], (BUS, LAT0, LON0)]
    path.write_text("name,latitude,longitude\n" + "".join(f"{n},{la},{lo}\n" for n, la, lo in rows))
    return path


def _cell(v: float | None) -> str:
    return "" if v is None else repr(v)


def _wide(path: Path, samples: list[Sample]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        names = [*FIXED, BUS]
        w.writerow(
            [
                "session",
                "timestamp",
                "tx_lat",
                "tx_lon",
                *[f"rss_{n}" for n in names],
                f"{BUS}_lat",
                f"{BUS}_lon",
            ]
        )
        for s in samples:
            bus = s.bus_pos or (None, None)
            w.writerow(
                [s.key, s.stamp, s.tx[0], s.tx[1], *[_cell(s.rss[n]) for n in names], *map(_cell, bus)]
            )
    return path


def _long(path: Path, samples: list[Sample]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["session", "station", "rss_dbm", "timestamp", "tx_lat", "tx_lon", "rx_lat", "rx_lon"])
        for s in samples:
            for n in [*FIXED, BUS]:
                pos = s.bus_pos if n == BUS else (None, None)
                w.writerow([s.key, n, _cell(s.rss[n]), s.stamp, s.tx[0], s.tx[1], *map(_cell, pos)])
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HEIMDALL_DATABASE_URL", "HEIMDALL_OBJECT_STORE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(tmp_path / "heimdall-data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "heimdall-data"


def _rss(args: list[str]):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["import", "rss", *args])


def _stored(data_dir: Path, dataset: str) -> dict[tuple[float, float], dict]:
    """{truth (lat, lon): {"rss": {station name: dBm}, "bus": (lat, lon) | None, ...}} read with sqlite3."""
    with closing(sqlite3.connect(data_dir / "heimdall.db")) as conn:
        rows = conn.execute(
            "SELECT k.latitude, k.longitude, k.power_dbm, k.error_margin_meters, r.session_start,"
            " r.approval_status,"
            " w.name, m.signal_strength_db, m.receiver_latitude, m.receiver_longitude, m.frequency_hz"
            " FROM recording_sessions r JOIN known_sources k ON k.id = r.known_source_id"
            " JOIN measurements m ON m.recording_session_id = r.id JOIN websdr_stations w"
            " ON w.id = m.websdr_station_id WHERE r.dataset = ?",
            (dataset,),
        ).fetchall()
    out: dict[tuple[float, float], dict] = {}
    for lat, lon, power, sigma, start, approval, name, rss, rlat, rlon, freq in rows:
        s = out.setdefault((lat, lon), {"rss": {}, "bus": None, "power": power, "sigma": sigma})
        s.update(start=start, approval=approval, freq=freq)
        s["rss"][name] = rss
        if rlat is not None:
            s["bus"] = (rlat, rlon)
    return out


def _counts(data_dir: Path) -> tuple[int, int, int]:
    with closing(sqlite3.connect(data_dir / "heimdall.db")) as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("recording_sessions", "measurements", "websdr_stations")
        )


def _expect(samples: list[Sample]) -> dict[tuple[float, float], dict[str, float]]:
    return {s.tx: {n: v for n, v in s.rss.items() if v is not None} for s in samples if any(s.rss.values())}


def test_wide_then_long_store_the_same_rows_and_a_reimport_is_a_no_op(env: Path, tmp_path: Path) -> None:
    samples = _samples(40)
    expected = _expect(samples)
    assert any(v is None for s in samples for v in s.rss.values())  # the generator leaves cells empty
    stations = _stations_file(tmp_path / "rx.csv")
    wide = _wide(tmp_path / "wide.csv", samples)
    r = _rss(
        [
            str(wide),
            "--dataset",
            "mine",
            "--frequency-hz",
            "868.1e6",
            "--tx-power-dbm",
            "14",
            "--truth-sigma-m",
            "3",
            "--receivers",
            str(stations),
        ]
    )
    assert r.exit_code == 0, r.output
    assert f"{len(expected)} written, 0 already present" in r.output
    got = _stored(env, "mine")
    assert {k: v["rss"] for k, v in got.items()} == expected  # exact values; empty cells stored nothing
    for s in samples:
        if s.tx in got:
            row = got[s.tx]
            assert row["bus"] == (s.bus_pos if s.rss[BUS] is not None else None)
            assert (row["power"], row["sigma"], row["freq"], row["approval"]) == (
                14.0,
                3.0,
                868.1e6,
                "approved",
            )
            assert row["start"].startswith(s.stamp[:19].replace("T", " "))
    counts = _counts(env)
    again = _rss([str(wide), "--dataset", "mine", "--frequency-hz", "868.1e6", "--receivers", str(stations)])
    assert again.exit_code == 0, again.output
    assert f"0 written, {len(expected)} already present" in again.output and _counts(env) == counts
    # the long layout of the same data, under the same label: the same sessions, nothing new
    long = _long(tmp_path / "long.csv", samples)
    r2 = _rss([str(long), "--dataset", "mine", "--frequency-hz", "868.1e6"])
    assert r2.exit_code == 0, r2.output
    assert f"0 written, {len(expected)} already present" in r2.output and _counts(env) == counts
    r3 = _rss([str(long), "--dataset", "mine-long", "--frequency-hz", "868.1e6", "--tx-power-dbm", "unknown"])
    assert r3.exit_code == 0, r3.output
    got_long = _stored(env, "mine-long")
    assert {k: v["rss"] for k, v in got_long.items()} == expected
    assert {k: v["bus"] for k, v in got_long.items()} == {k: v["bus"] for k, v in got.items()}
    assert {v["power"] for v in got_long.values()} == {None} and {v["sigma"] for v in got_long.values()} == {
        0.0
    }


def test_empty_cell_is_not_received_a_value_is_a_reading_and_markers_are_checked(
    env: Path, tmp_path: Path
) -> None:
    stations = _stations_file(tmp_path / "rx.csv")
    f = tmp_path / "m.csv"
    f.write_text(
        "session,tx_lat,tx_lon,rss_alpha,rss_bravo,rss_charlie\n"
        "a,44.5,8.9,-101,-80.5,\n"
        "b,44.51,8.91,-70,-101,-90\n"
    )
    base = [str(f), "--frequency-hz", "4.627e8", "--receivers", str(stations)]
    r = _rss([*base, "--dataset", "as-is"])
    assert r.exit_code == 0, r.output
    assert {k: v["rss"] for k, v in _stored(env, "as-is").items()} == {
        (44.5, 8.9): {"alpha": -101.0, "bravo": -80.5},  # -101 is a reading here; the empty cell is not
        (44.51, 8.91): {"alpha": -70.0, "bravo": -101.0, "charlie": -90.0},
    }
    r = _rss([*base, "--dataset", "marked", "--missing-marker", "-101"])
    assert r.exit_code == 0, r.output
    assert {k: v["rss"] for k, v in _stored(env, "marked").items()} == {
        (44.5, 8.9): {"bravo": -80.5},
        (44.51, 8.91): {"alpha": -70.0, "charlie": -90.0},
    }
    counts = _counts(env)
    r = _rss([*base, "--dataset", "clash", "--missing-marker", "-80.5"])  # inside -101 … -70: could be real
    assert r.exit_code == 2 and "missing marker -80.5 lies inside the range" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and _counts(env) == counts


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "session,tx_lat,tx_lon,rss_alpha,rss_zulu\na,44.5,8.9,-70,-80\n",
            "station 'zulu' is not registered",
        ),
        (
            "session,tx_lat,tx_lon,rss_alpha\na,44.5,8.9,-70\nb,44.6,8.9,-71\na,44.7,8.9,-72\n",
            "line 4: session 'a' repeats line 2",
        ),
        (
            "session,tx_lat,tx_lon,rss_alpha\na,44.5,8.9,-70\nb,44.6,8.9,abc\n",
            "line 3, column rss_alpha: 'abc'",
        ),
        ("session,tx_lat,tx_lon,rss_alpha\na,44.5,,-70\n", "line 2"),
        (
            "session,station,rss_dbm,tx_lat,tx_lon\na,alpha,-70,44.5,8.9\na,alpha,-71,44.5,8.9\n",
            "line 3: station 'alpha' repeats in session 'a'",
        ),
        (
            "session,station,rss_dbm,tx_lat,tx_lon\na,alpha,-70,44.5,8.9\na,bravo,-71,44.6,8.9\n",
            "line 3: session 'a' has another transmitter truth",
        ),
        ("session,tx_lat,tx_lon,rss_alpha,colour\na,44.5,8.9,-70,red\n", "unknown column(s) ['colour']"),
        ("session,tx_lat,tx_lon,rss_alpha,alpha_lat,alpha_lon\na,44.5,8.9,-70,44.5,\n", "not both"),
        ("session,timestamp,tx_lat,tx_lon,rss_alpha\na,yesterday,44.5,8.9,-70\n", "column timestamp"),
    ],
    ids=[
        "unknown-station",
        "duplicate-session",
        "bad-cell",
        "no-truth",
        "duplicate-station",
        "truth-differs",
        "unknown-column",
        "half-a-position",
        "bad-timestamp",
    ],
)
def test_bad_files_name_the_place_and_write_nothing(
    env: Path, tmp_path: Path, text: str, needle: str
) -> None:
    stations = tmp_path / "rx.csv"
    stations.write_text("name,latitude,longitude\nalpha,44.5,8.9\nbravo,44.4,8.8\n")
    f = tmp_path / "bad.csv"
    f.write_text(text)
    r = _rss([str(f), "--frequency-hz", "4.627e8", "--receivers", str(stations)])
    assert r.exit_code == 2, r.output
    assert needle in r.output and str(f) in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    sessions, measurements, _ = _counts(env)
    assert (sessions, measurements) == (0, 0)
    with closing(sqlite3.connect(env / "heimdall.db")) as conn:  # the --receivers were not registered either
        names = {n for (n,) in conn.execute("SELECT name FROM websdr_stations")}
    assert not names & {"alpha", "bravo"}


def test_bad_options_are_one_line(env: Path, tmp_path: Path) -> None:
    f = _wide(tmp_path / "w.csv", _samples(3))
    for args, needle in [
        (["--frequency-hz", "-5"], "--frequency-hz"),
        (["--frequency-hz", "1e8", "--tx-power-dbm", "loud"], "--tx-power-dbm"),
        (["--frequency-hz", "1e8", "--truth-sigma-m", "-1"], "--truth-sigma-m"),
    ]:
        r = _rss([str(f), *args])
        assert r.exit_code == 2 and needle in r.output, r.output


def test_train_on_an_imported_label(env: Path, tmp_path: Path) -> None:
    samples = _samples(60, seed=2)
    stations = _stations_file(tmp_path / "rx.csv")
    r = _rss(
        [
            str(_wide(tmp_path / "w.csv", samples)),
            "--dataset",
            "own-net",
            "--frequency-hz",
            "868e6",
            "--receivers",
            str(stations),
        ]
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "model"
    t = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "own-net",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--no-tracking",
            "--output-dir",
            str(out),
        ],
    )
    assert t.exit_code == 0, t.output
    report = json.loads((out / "report.json").read_text())
    split = json.loads((out / "split.json").read_text())
    usable = [k for k, v in _expect(samples).items() if len(v) >= 3]  # training's min_receivers default
    assert 0 < len(usable) < len(_expect(samples))
    assert sum(len(v) for v in split.values()) == len(usable)
    assert report["datasets"] == ["own-net"]
    network = json.loads((out / "network.json").read_text())
    names = network.get("names") or [s["name"] for s in network.get("stations", [])]
    assert sorted(names) == sorted([*FIXED, BUS])  # the file's receivers, not the shipped network
