"""POWDER 462.7 MHz import (the real file): splits, moving-receiver channels, bad input, a training run."""

from __future__ import annotations

import csv
import dataclasses
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.data.arrays import MOVING_SCALAR_NAMES, DatasetError, load_session_arrays
from heimdall.data.network import ReceiverNetwork
from heimdall.data.normalization import NormStats
from heimdall.data.splits import VAL_BLOCK_SESSIONS, notes_split, split_sessions
from heimdall.errors import UserError
from heimdall.features import SCALAR_NAMES, FeatureConfig
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.onnx_export import export_onnx
from heimdall.ingest import powder as powder_module
from heimdall.ingest.powder import (
    ABSENT_RSS,
    GPS_ERROR_M,
    STATION_PREFIX,
    PowderImportError,
    import_powder,
)
from heimdall.model import LocalizationNet
from heimdall.services import Services, open_services
from heimdall.settings import Settings
from heimdall.stations import NW_ITALY_STATIONS
from heimdall.storage.queries import list_sessions
from heimdall.storage.schema import Measurement, RecordingSession, WebSDRStation
from heimdall.training.config import load_config
from heimdall.training.runner import run_training

POWDER_DIR = Path(__file__).resolve().parents[2] / "datasets" / "powder-462.7"  # vendored (MIT)
CSV_PATH = POWDER_DIR / "single_tx.csv"
runner = CliRunner()


def _services(data_dir: Path) -> Services:
    return open_services(Settings(data_dir=data_dir, database_url="", object_store=""))


def _counts(services: Services) -> tuple[int, int, int]:
    with services.db.sessions() as q:
        return (
            q.scalar(select(func.count()).select_from(RecordingSession)),
            q.scalar(select(func.count()).select_from(Measurement)),
            q.scalar(select(func.count()).select_from(WebSDRStation)),
        )


# ------------------------------------------------------------------------------------------ the real file


@pytest.fixture(scope="module")
def powder(tmp_path_factory: pytest.TempPathFactory):
    if not CSV_PATH.is_file():
        pytest.skip(f"POWDER dataset not present at {POWDER_DIR}")
    services = _services(tmp_path_factory.mktemp("powder") / "heimdall-data")
    t0 = time.perf_counter()
    result = import_powder(services.db, services.store, services.settings.raw_iq_bucket, CSV_PATH)
    seconds = time.perf_counter() - t0
    yield SimpleNamespace(services=services, result=result, seconds=seconds)
    services.close()


@pytest.fixture(scope="module")
def raw() -> dict:
    """The CSV and the test sets read independently of heimdall.ingest.powder."""
    with CSV_PATH.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rss_cols = [
        c
        for c in rows[0]
        if c not in ("timestamp", "tx_x_coord", "tx_y_coord") and not c.endswith(("_x", "_y"))
    ]
    return {
        "rows": rows,
        "rss_cols": rss_cols,
        "random": set(json.loads((POWDER_DIR / "random_test.json").read_text())),
        "grid": set(json.loads((POWDER_DIR / "grid_test.json").read_text())),
    }


@pytest.fixture(scope="module")
def stored(powder) -> list:
    return list_sessions(powder.services.db, ["powder"])


@pytest.fixture(scope="module")
def arrays_random(powder):
    s = powder.services
    return load_session_arrays(
        s.db, s.store, ["powder"], FeatureConfig(), s.settings.data_dir / "fc", split="powder_random"
    )


def test_real_import_counts(powder, raw) -> None:
    r = powder.result
    assert (r.rows, r.sessions, r.written, r.already_present) == (5006, 5006, 5006, 0)
    assert r.skipped == {}  # every row has a present receiver
    expected = 0
    dropped = 0
    for row in raw["rows"]:
        for c in raw["rss_cols"]:
            if float(row[c]) == ABSENT_RSS:
                continue
            if c.endswith("_rss") and (
                float(row[c[:-4] + "_x"]) in (-1.0, 0.0) or float(row[c[:-4] + "_y"]) in (-1, 0)
            ):
                dropped += 1
                continue
            expected += 1
    assert r.measurements == expected and r.dropped_readings == {"bus_reading_without_position": dropped}
    assert abs(r.absent_fraction - 0.468) < 0.002  # the README's 46.8 %
    assert len(r.receivers_created) == len(r.receivers) == 37 and r.bus_receivers == 8
    sessions, measurements, stations = _counts(powder.services)
    assert (sessions, measurements, stations) == (5006, expected, 7 + 37)
    with powder.services.db.sessions() as q:
        assert q.scalar(select(func.count()).where(Measurement.signal_strength_db == ABSENT_RSS)) == 0
        rows = list(q.scalars(select(WebSDRStation).where(WebSDRStation.name.like(f"{STATION_PREFIX}%"))))
    seeded = {s.id for s in NW_ITALY_STATIONS}
    assert len(rows) == 37 and min(s.id for s in rows) > max(seeded)
    assert sum(s.name.startswith(f"{STATION_PREFIX}bus-") for s in rows) == 8
    assert powder.seconds < 30, f"import took {powder.seconds:.1f} s"


def test_real_import_positions_and_notes(powder, raw, stored) -> None:
    by_stamp = {json.loads(s.notes)["powder_timestamp"]: s for s in stored}
    assert len(by_stamp) == 5006
    row = next(
        r for r in raw["rows"] if float(r["bus-4603_rss"]) != ABSENT_RSS and float(r["bus-4603_x"]) > 1
    )
    s = by_stamp[row["timestamp"]]
    assert s.session_start == datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
    assert (s.source.latitude, s.source.longitude) == (float(row["tx_x_coord"]), float(row["tx_y_coord"]))
    assert s.source.error_margin_meters == GPS_ERROR_M
    bus = next(m for m in s.measurements if m.station_name == f"{STATION_PREFIX}bus-4603")
    assert bus.moving_receiver and bus.signal_strength_db == float(row["bus-4603_rss"])
    assert (bus.receiver_latitude, bus.receiver_longitude) == (
        float(row["bus-4603_x"]),
        float(row["bus-4603_y"]),
    )
    fixed = [m for m in s.measurements if "bus-" not in m.station_name]
    assert fixed and not any(m.moving_receiver for m in fixed)
    heard = {m.station_name.removeprefix(STATION_PREFIX) for m in s.measurements}
    assert heard == {
        c.removesuffix("_rss")
        for c in raw["rss_cols"]
        if float(row[c]) != ABSENT_RSS and not (c.endswith("_rss") and float(row[c[:-4] + "_x"]) in (-1, 0))
    }
    # split membership equals the JSON test sets
    for key, stamps, n in (("powder_random", raw["random"], 826), ("powder_grid", raw["grid"], 666)):
        test = {t for t, x in by_stamp.items() if json.loads(x.notes)[key] == "test"}
        assert test == stamps and len(test) == n == powder.result.test_sizes[key]


def test_real_reimport_is_idempotent(powder) -> None:
    before = _counts(powder.services)
    s = powder.services
    again = import_powder(s.db, s.store, s.settings.raw_iq_bucket, CSV_PATH)
    assert (again.written, again.already_present, again.receivers_created) == (0, 5006, ())
    assert _counts(powder.services) == before


def test_real_arrays_random_split_and_time_blocks(raw, stored, arrays_random) -> None:
    a = arrays_random
    sessions = {s.id: s for s in stored}
    stamp = {sid: json.loads(s.notes)["powder_timestamp"] for sid, s in sessions.items()}
    assert a.counts()["test"] == 826
    assert {stamp[a.session_ids[i]] for i in a.indices("test")} == raw["random"]
    # validation: whole blocks of consecutive (in time) training sessions, never a test sample
    val_ids = {a.session_ids[i] for i in a.indices("val")}
    assert not {stamp[i] for i in val_ids} & raw["random"]
    order = sorted(
        (i for i in a.session_ids if stamp[i] not in raw["random"]),
        key=lambda i: (sessions[i].session_start, str(i)),
    )
    flags = np.array([i in val_ids for i in order])
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(int), 0]))
    runs = edges[1::2] - edges[::2]
    assert len(runs) >= 5 and (runs == VAL_BLOCK_SESSIONS).all(), runs
    assert 0.08 <= flags.mean() <= 0.12
    assert np.array_equal(a.splits, split_sessions([sessions[i] for i in a.session_ids], "powder_random"))


def test_real_arrays_carry_bus_offsets(arrays_random) -> None:
    a = arrays_random
    assert a.scalars.shape == (5006, 37, 6) and a.scalar_names == (*SCALAR_NAMES, *MOVING_SCALAR_NAMES)
    bus = np.array(["bus-" in n for n in a.network.names])
    off = a.scalars[..., 4:]
    assert np.isnan(off[~a.mask]).all()
    assert (off[:, ~bus][a.mask[:, ~bus]] == 0).all()  # fixed receivers sit at their nominal position
    moving = off[:, bus][a.mask[:, bus]]
    assert np.isfinite(moving).all() and np.abs(moving).max() > 0.5  # buses drive around (km)
    # the bus's nominal position is its mean, so its offsets average to ~0
    for k in np.flatnonzero(bus):
        assert np.abs(off[a.mask[:, k], k].mean(axis=0)).max() < 0.05


# ------------------------------------------------------------------------------------------ notes_split


def _fake(n: int, test_every: int = 7, key: str = "k") -> list[SimpleNamespace]:
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    return [
        SimpleNamespace(
            id=uuid.UUID(int=i + 1),
            notes=json.dumps({key: "test" if i % test_every == 3 else "train"}),
            session_start=t0 + timedelta(seconds=4 * ((i * 37) % n)),  # not in time order
        )
        for i in range(n)
    ]


def test_notes_split_blocks_are_deterministic_and_contiguous() -> None:
    sessions = _fake(1000)
    out = notes_split(sessions, "k", val_fraction=0.1, block=20)
    assert np.array_equal(out, notes_split(list(sessions), "k", val_fraction=0.1, block=20))
    is_test = np.array([json.loads(s.notes)["k"] == "test" for s in sessions])
    assert ((out == "test") == is_test).all()
    order = sorted(np.flatnonzero(~is_test), key=lambda i: sessions[i].session_start)
    flags = (out[order] == "val").astype(int)
    edges = np.flatnonzero(np.diff(np.r_[0, flags, 0]))
    assert ((edges[1::2] - edges[::2]) == 20).all() and abs(flags.mean() - 0.1) < 0.03
    # a short train set still gets a validation block and keeps training data
    small = notes_split(_fake(12), "k")
    assert (small == "val").any() and (small == "train").any()
    assert not (notes_split(sessions, "k", val_fraction=0.0) == "val").any()


def test_notes_split_needs_the_key() -> None:
    sessions = _fake(30)
    sessions[5].notes = json.dumps({"other": "test"})
    sessions[6].notes = None
    with pytest.raises(ValueError, match=r"2 of 30 session\(s\) have no 'k'"):
        notes_split(sessions, "k")
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        split_sessions(sessions, "nope")
    with pytest.raises(ValueError, match="val_fraction"):
        notes_split(sessions, "k", val_fraction=1.0)


def test_split_config_values() -> None:
    assert load_config(None, {}).split == "hash"
    assert load_config(None, {"split": "powder_grid"}).split == "powder_grid"
    with pytest.raises(ValueError, match="split"):
        load_config(None, {"split": "random"})


# ------------------------------------------------------------------------------------------ synthetic files

COORDS = (
    "{\n 'rx-a': (40.760, -111.840),\n 'rx-b': (40.770, -111.830),\n 'rx-c': (40.750, -111.850),\n"
    " 'bus-1': None,\n}\n"
)
HEADER = ["timestamp", "bus-1_rss", "bus-1_x", "bus-1_y", "rx-a", "rx-b", "rx-c", "tx_x_coord", "tx_y_coord"]
ROWS = [
    ["2022-01-01 10:00:00", "-80.5", "40.765", "-111.845", "-70", "-101", "-90", "40.761", "-111.841"],
    ["2022-01-01 10:00:04", "-101", "-1", "-1", "-71", "-85", "-92", "40.762", "-111.842"],
    ["2022-01-01 10:00:08", "-75", "0.0", "0.0", "-101", "-101", "-101", "40.763", "-111.843"],
    ["2022-01-01 10:00:12", "-101", "-1", "-1", "-101", "-101", "-101", "40.764", "-111.844"],
    ["2022-01-01 10:00:16", "-60", "40.766", "-111.846", "-72", "-86", "-101", "40.765", "-111.845"],
]


def _write(folder: Path, rows=ROWS, header=HEADER, coords: str = COORDS, tests: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "single_tx.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    (folder / "location_coordinates.json").write_text(coords)
    for name, stamps in (tests or {}).items():
        (folder / name).write_text(json.dumps({s: {"rx_data": []} for s in stamps}))
    return path


@pytest.fixture
def empty(tmp_path: Path):
    services = _services(tmp_path / "heimdall-data")
    yield services
    services.close()


def _import(services: Services, path: Path, **kw):
    return import_powder(services.db, services.store, services.settings.raw_iq_bucket, path, **kw)


def test_synthetic_import_counts_skips_and_station_ids(empty: Services, tmp_path: Path) -> None:
    with empty.db.sessions.begin() as q:  # a station added earlier (e.g. by a SigMF import) keeps its id
        q.execute(insert(WebSDRStation), [{"id": 8, "name": "other", "latitude": 1.0, "longitude": 2.0}])
    path = _write(tmp_path / "in", tests={"random_test.json": ["2022-01-01 10:00:04"]})
    r = _import(empty, path)
    assert (r.rows, r.written, r.already_present) == (5, 3, 0)
    assert r.skipped == {"no_receiver_present": 2} and r.dropped_readings == {
        "bus_reading_without_position": 1
    }
    assert r.measurements == 3 + 3 + 3 and r.bus_receivers == 1 and r.test_sizes == {"powder_random": 1}
    with empty.db.sessions() as q:
        ids = dict(q.execute(select(WebSDRStation.name, WebSDRStation.id)).all())
        bus_row = q.scalars(select(WebSDRStation).where(WebSDRStation.name == "powder:bus-1")).one()
    assert [ids[f"powder:{n}"] for n in ("rx-a", "rx-b", "rx-c", "bus-1")] == [9, 10, 11, 12]
    assert (bus_row.latitude, bus_row.longitude) == pytest.approx((40.7655, -111.8455))
    notes = {
        json.loads(s.notes)["powder_timestamp"]: json.loads(s.notes)
        for s in list_sessions(empty.db, ["powder"])
    }
    assert notes["2022-01-01 10:00:04"]["powder_random"] == "test"
    assert (
        notes["2022-01-01 10:00:00"]["powder_random"] == "train"
        and "powder_grid" not in notes["2022-01-01 10:00:00"]
    )
    # arrays: bus offsets present; split by notes without the key for grid is a clear error
    a = load_session_arrays(
        empty.db, empty.store, ["powder"], FeatureConfig(), tmp_path / "fc", min_receivers=1
    )
    assert a.scalars.shape == (3, 4, 6)
    with pytest.raises(DatasetError, match="powder_grid"):
        load_session_arrays(
            empty.db, empty.store, ["powder"], FeatureConfig(), tmp_path / "fc", split="powder_grid"
        )
    with pytest.raises(DatasetError, match="unknown split"):
        load_session_arrays(empty.db, empty.store, ["powder"], FeatureConfig(), tmp_path / "fc", split="x")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda h, r, c: ([*h[:4], "rx-zzz", *h[5:]], r, c), r"RSS column\(s\) \['rx-zzz'\]"),
        (lambda h, r, c: (h[:-1], [x[:-1] for x in r], c), r"missing required column\(s\) \['tx_y_coord'\]"),
        (lambda h, r, c: ([x for x in h if x != "bus-1_y"], [x[:3] + x[4:] for x in r], c), "bus-1_y"),
        (lambda h, r, c: (h, [[*r[0][:4], "loud", *r[0][5:]], *r[1:]], c), r"line 2, column rx-a: 'loud'"),
        (lambda h, r, c: (h, [*r, r[1]], c), "repeats line 3"),
        (lambda h, r, c: (h, [[*r[0][:-2], "", ""], *r[1:]], c), "tx_x_coord"),
        (lambda h, r, c: (h, [r[0][:-1], *r[1:]], c), "line 2: 8 fields"),
        (
            lambda h, r, c: (h, [[x if x != "-70" else "-101" for x in row] for row in r[2:4]], c),
            "none of the 2 rows",
        ),
        (lambda h, r, c: (h, r, "{'rx-a': (1.0,"), "coordinates"),
        (lambda h, r, c: (h, [["2022-13-01 10:00:00", *r[0][1:]], *r[1:]], c), "timestamp"),
    ],
    ids=[
        "unknown-rss-column",
        "missing-tx",
        "bus-column",
        "not-a-number",
        "duplicate-ts",
        "empty-tx",
        "short-row",
        "all-absent",
        "bad-coordinates",
        "bad-timestamp",
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    empty: Services, tmp_path: Path, mutate, match
) -> None:
    header, rows, coords = mutate(list(HEADER), [list(r) for r in ROWS], COORDS)
    path = _write(tmp_path / "in", rows, header, coords)
    before = _counts(empty)
    with pytest.raises(PowderImportError, match=match):
        _import(empty, path)
    assert _counts(empty) == before == (0, 0, 7)


def _raw_csv(folder: Path, content: bytes) -> Path:
    path = _write(folder)
    path.write_bytes(content)
    return path


def _csv_bytes(rows=ROWS) -> bytes:
    return "\n".join(",".join(r) for r in [HEADER, *rows]).encode() + b"\n"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda d: _raw_csv(d, _csv_bytes()[:40] + b"\xff\xfe" + _csv_bytes()[40:]),
            r"line 1: not UTF-8 text",
        ),
        (
            lambda d: _raw_csv(d, _csv_bytes() + b'"' + b"x" * 200_000 + b'"\n'),
            r"line 7: not a readable CSV row",
        ),
        (lambda d: _raw_csv(d, _csv_bytes() + b"\0\0,\0\n"), r"line 7: 2 fields, the header has 9"),
        (
            lambda d: _write(d, [["0001-01-01 00:00:00+01:00", *ROWS[0][1:]]]),
            r"line 2: timestamp '0001-01-01 00:00:00\+01:00' is not",
        ),
        (
            lambda d: (
                _write(d, tests={"random_test.json": []})
                .parent.joinpath("random_test.json")
                .write_text(json.dumps({ROWS[0][0]: {"tx_coords": [["north", None]]}}))
                and d / "single_tx.csv"
            ),
            r"random_test.json: sample '2022-01-01 10:00:00', tx_coords: 'north' is not a number",
        ),
        (
            lambda d: (
                _write(d, tests={"grid_test.json": []})
                .parent.joinpath("grid_test.json")
                .write_text("[" * 100_000)
                and d / "single_tx.csv"
            ),
            r"grid_test.json: not valid JSON",
        ),
        (
            lambda d: _write(d, coords="{[1]: (1, 2)}"),
            r"location_coordinates.json: not a Python/JSON mapping",
        ),
        (lambda d: _write(d, coords="{'rx-a': (1,"), r"location_coordinates.json: not a Python/JSON mapping"),
        (
            lambda d: (_write(d).unlink(), (d / "single_tx.csv").mkdir(), d / "single_tx.csv")[-1],
            "cannot read",
        ),
    ],
    ids=[
        "not-utf8",
        "huge-field",
        "nul-bytes",
        "timestamp-overflow",
        "test-set-coords",
        "deep-json",
        "coords-key",
        "coords-syntax",
        "csv-is-a-folder",
    ],
)
def test_unreadable_files_are_a_clear_error(empty: Services, tmp_path: Path, make, match: str) -> None:
    path = make(tmp_path / "in")
    with pytest.raises(PowderImportError, match=match) as err:
        _import(empty, path)
    assert "\n" not in str(err.value) and str(tmp_path / "in") in str(err.value)
    assert _counts(empty) == (0, 0, 7)


@pytest.mark.parametrize("name", ["single_tx.csv", "location_coordinates.json", "random_test.json"])
def test_files_over_the_size_cap_are_refused_before_reading(
    empty: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = _write(tmp_path / "in", tests={"random_test.json": [ROWS[0][0]]})
    big = path.parent / name
    cap = max(f.stat().st_size for f in path.parent.iterdir() if f != big) + 1
    big.write_bytes(big.read_bytes() + b" " * cap)
    with pytest.raises(
        PowderImportError, match=rf"{name}: \d+ bytes, over the import size cap of {cap} bytes"
    ):
        _import(empty, path, max_bytes=cap)
    monkeypatch.setenv("HEIMDALL_MAX_IMPORT_BYTES", str(cap))  # the setting is the default cap
    with pytest.raises(PowderImportError, match=f"over the import size cap of {cap} bytes"):
        _import(empty, path)
    assert _counts(empty) == (0, 0, 7)


def test_cli_refuses_oversized_and_garbled_files_in_one_line(
    embedded_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEIMDALL_MAX_IMPORT_BYTES", "300")
    for path, message in [
        (_write(tmp_path / "big"), "single_tx.csv: 403 bytes, over the import size cap of 300 bytes"),
        (_raw_csv(tmp_path / "bin", b"\x89PNG\r\n\x1a\n\xff"), "line 1: not UTF-8 text"),
    ]:
        r = runner.invoke(app, ["import", "powder", str(path)])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert "PowderImportError" in r.output and message in r.output


def test_test_set_must_belong_to_the_file(empty: Services, tmp_path: Path) -> None:
    path = _write(tmp_path / "in", tests={"grid_test.json": ["2022-01-01 10:00:04", "2023-01-01 00:00:00"]})
    with pytest.raises(PowderImportError, match=r"1 test sample\(s\) are not rows"):
        _import(empty, path)
    assert _counts(empty) == (0, 0, 7)


def _import_concurrently(data_dir: Path, jobs: list[dict], monkeypatch: pytest.MonkeyPatch) -> list:
    """Run the imports in threads that all resolve stations before any inserts them (a real race)."""
    barrier = threading.Barrier(len(jobs), timeout=30)
    resolve, state, calls = powder_module._resolve_stations, threading.local(), []

    def stalled(db, data):
        calls.append(1)
        out = resolve(db, data)
        if not getattr(state, "waited", False):
            state.waited = True
            barrier.wait()
        return out

    monkeypatch.setattr(powder_module, "_resolve_stations", stalled)
    handles = [_services(data_dir) for _ in jobs]  # opened (migrated) before the threads start
    results: list = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = _import(handles[i], **jobs[i])
        except Exception as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for h in handles:
        h.close()
    assert not [r for r in results if isinstance(r, BaseException)], results
    return [*results, len(calls)]


def _station_ids(services: Services) -> dict[str, int]:
    with services.db.sessions() as q:
        return dict(q.execute(select(WebSDRStation.name, WebSDRStation.id)).all())


def test_concurrent_imports_of_the_same_receivers_share_their_stations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "in")
    jobs = [{"path": path, "dataset": "powder-a"}, {"path": path, "dataset": "powder-b"}]
    a, b, resolves = _import_concurrently(tmp_path / "hd", jobs, monkeypatch)
    assert resolves == 2  # the identical stations the other import inserted were simply tolerated
    assert (a.written, b.written) == (3, 3)
    assert len(a.receivers_created) + len(b.receivers_created) >= 4  # both chose them; one inserted them
    services = _services(tmp_path / "hd")
    ids = _station_ids(services)
    assert [ids[f"powder:{n}"] for n in ("rx-a", "rx-b", "rx-c", "bus-1")] == [8, 9, 10, 11]
    assert _counts(services) == (6, 18, 11)
    services.close()


def test_concurrent_imports_of_different_receivers_do_not_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _write(tmp_path / "one")
    renamed = {"rx-a": "rx-d", "rx-b": "rx-e", "rx-c": "rx-f"}
    coords = COORDS
    for old, new in renamed.items():
        coords = coords.replace(old, new)
    second = _write(tmp_path / "two", header=[renamed.get(h, h) for h in HEADER], coords=coords)
    jobs = [{"path": first, "dataset": "one"}, {"path": second, "dataset": "two"}]
    _, _, resolves = _import_concurrently(tmp_path / "hd", jobs, monkeypatch)
    assert resolves == 3  # both chose ids 8-10; the one that lost them resolved again
    services = _services(tmp_path / "hd")
    ids = _station_ids(services)
    new = sorted(v for k, v in ids.items() if k.startswith(STATION_PREFIX))
    assert new == list(range(8, 15)) and _counts(services) == (6, 18, 14)  # bus-1 is shared
    for label, names in (("one", ("rx-a", "rx-b", "rx-c")), ("two", tuple(renamed.values()))):
        stations = {m.station_id for s in list_sessions(services.db, [label]) for m in s.measurements}
        assert stations == {ids[f"{STATION_PREFIX}{n}"] for n in (*names, "bus-1")}
    services.close()


def test_failed_import_keeps_stations_other_writers_use(
    empty: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "in")
    real_write = powder_module.write_sessions

    def other_writer_commits_first(db, store, bucket, records):
        # a concurrent import (same receivers) committed its sessions on the stations this one added
        real_write(
            db,
            store,
            bucket,
            [dataclasses.replace(r, id=uuid.uuid4(), acquisition_task_id="x") for r in records[:1]],
        )
        raise RuntimeError("simulated failure of this import")

    monkeypatch.setattr(powder_module, "write_sessions", other_writer_commits_first)
    with pytest.raises(RuntimeError, match="simulated"):
        _import(empty, path)
    used = {m.station_id for s in list_sessions(empty.db, ["powder"]) for m in s.measurements}
    ids = set(_station_ids(empty).values())
    assert used and used <= ids  # the stations the committed session uses are still there
    assert len(ids) == 7 + len(used)  # the unused new ones were removed


def test_cli_import_powder(embedded_env: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "in")
    r = runner.invoke(app, ["import", "powder", str(path), "--dataset", "powder-mini"])
    assert r.exit_code == 0, r.output
    assert "3 written, 0 already present" in r.output and "no_receiver_present: 2" in r.output
    assert "new station(s): powder:rx-a" in r.output
    r = runner.invoke(app, ["import", "powder", str(path), "--dataset", "powder-mini"])
    assert r.exit_code == 0 and "0 written, 3 already present" in r.output
    bad = _write(tmp_path / "bad", [ROWS[0]], [*HEADER[:4], "rx-q", *HEADER[5:]])
    r = runner.invoke(app, ["import", "powder", str(bad)])
    assert r.exit_code == 2 and "rx-q" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        app,
        [
            "import",
            "powder",
            str(tmp_path / "nope.csv"),
            "--coordinates",
            str(bad.parent / "location_coordinates.json"),
        ],
    )
    assert r.exit_code == 2 and "not found" in r.output


# ------------------------------------------------------------------------------------------ export, training


def test_power_only_graph_takes_six_scalars(tmp_path: Path) -> None:
    net_ = ReceiverNetwork((8, 9, 10), ("a", "b", "c"), (40.76, 40.77, 40.75), (-111.84, -111.83, -111.85))
    torch.manual_seed(0)
    net = LocalizationNet(
        3, net_.positions_enu_m() / 1000.0, 6, use_spectrogram=False, embed_dim=8, pooling="mean"
    )
    rng = np.random.default_rng(0)
    sc = rng.normal(size=(50, 3, 6)).astype(np.float32)
    stats = NormStats.fit(np.zeros((50, 3, 0, 0), np.float32), sc, np.ones((50, 3), bool))
    graph = InferenceGraph(net.eval(), stats, from_iq=False)
    mask = np.ones((4, 3), np.float32)
    freq = torch.full((4,), 462.7e6)
    pos, *_ = graph(torch.from_numpy(sc[:4]), torch.from_numpy(mask), freq)
    assert pos.shape == (4, 2)
    with pytest.raises(ValueError, match=r"\(B, 3, 6\)"):
        graph(torch.from_numpy(sc[:4, :, :4]), torch.from_numpy(mask), freq)
    path = export_onnx(
        graph,
        (torch.from_numpy(sc[:2]), torch.ones(2, 3), torch.full((2,), 462.7e6)),
        tmp_path / "m.onnx",
        model_metadata(net_, FeatureConfig(), "six"),
    )
    loc = OnnxLocalizer(path)
    p, c = loc.predict(sc[:4], mask, 462.7e6)
    want = pos.detach().numpy()
    # an untrained net: make sure its outputs differ per session far beyond the tolerance, or the parity
    # below would hold for an export that ignores its inputs
    assert np.ptp(want, axis=0).min() > 1000 * 1e-2
    assert np.allclose(p, want, atol=1e-2)
    want_cov = graph(torch.from_numpy(sc[:4]), torch.from_numpy(mask), freq)[1].detach().numpy()
    np.testing.assert_allclose(c, want_cov, rtol=1e-4)
    # the mask reaches the graph: one receiver off moves every estimate, the same way in both runtimes
    off = mask.copy()
    off[:, 1] = 0
    moved = graph(torch.from_numpy(sc[:4]), torch.from_numpy(off), freq)[0].detach().numpy()
    assert np.linalg.norm(moved - want, axis=1).min() > 1.0
    assert np.allclose(loc.predict(sc[:4], off, 462.7e6)[0], moved, atol=1e-2)
    with pytest.raises(ValueError, match="scalars"):  # the IQ path computes exactly four
        InferenceGraph(
            LocalizationNet(3, net_.positions_enu_m() / 1000.0, 6, n_bands=64), stats, from_iq=True
        )


def test_training_smoke_on_powder(powder, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        {
            "epochs": 1,
            "datasets": ["powder"],
            "split": "powder_random",
            "output_dir": tmp_path / "run",
            "max_sessions": 600,
            "batch_size": 64,
            "model": {"embed_dim": 16, "cnn_channels": 4, "position_scale_m": 2000.0},
        },
    )
    result = run_training(cfg, powder.services, progress=False)
    rep = result.report
    sessions = list_sessions(powder.services.db, ["powder"], limit=600)
    n_test = sum(json.loads(s.notes)["powder_random"] == "test" for s in sessions)
    assert rep.n_test == n_test > 0 and rep.n_val > 0
    assert rep.n_train + rep.n_val + rep.n_test == 600
    assert np.isfinite(rep.test.median_error_m) and rep.onnx.max_position_diff_m < 1.0
    split = json.loads((result.output_dir / "split.json").read_text())
    by_id = {str(s.id): json.loads(s.notes)["powder_random"] for s in sessions}
    assert all(by_id[i] == "test" for i in split["test"]) and all(by_id[i] == "train" for i in split["val"])


def test_a_path_that_cannot_be_examined_is_a_user_error(
    empty: Services, embedded_env: Path, tmp_path: Path
) -> None:
    """stat() failing with any OSError (here: a file where a folder should be) names the path, exit 2."""
    (tmp_path / "a-file").write_text("not a folder")
    path = tmp_path / "a-file" / "single_tx.csv"
    with pytest.raises(UserError, match="cannot read its size") as err:
        _import(empty, path)
    assert str(tmp_path / "a-file") in str(err.value) and "\n" not in str(err.value)
    assert _counts(empty) == (0, 0, 7)
    r = runner.invoke(app, ["import", "powder", str(path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert "cannot read its size" in r.output and "a-file" in r.output
