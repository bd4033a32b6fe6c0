"""``heimdall predict`` names a receiver the model set aside, for a session stored in the database.

Two sessions of the synthetic world of ``tests/radio_map_model.py`` are stored on a fresh embedded
database and object store — the same recordings, once with one receiver's IQ scaled ×1000 (+60 dB power
and noise floor) — and predicted with the radio map exported from that world.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from radio_map_model import (
    BAD_ID,
    BAD_NAME,
    CARRIER_HZ,
    CFG,
    NETWORK,
    clearly_heard,
    export_radio_map,
    recordings,
    shifted,
)
from radiomap.synthetic import draw
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.recordings import MeasurementRecord, SessionRecord, SourceRecord, write_sessions
from heimdall.storage.stations import NewStation, ensure_stations

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

runner = CliRunner()
START = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def _session(bad: bool) -> SessionRecord:
    world = shifted(draw(100, seed=6))
    k = int(clearly_heard(world)[2])
    iq = recordings(world.scalars[k], np.random.default_rng(3), bad=bad)
    sid = uuid.uuid5(uuid.NAMESPACE_URL, f"heimdall-test/set-aside/{bad}")
    lat, lon = NETWORK.frame.to_latlon(world.truth[k])
    return SessionRecord(
        id=sid,
        acquisition_task_id=str(sid),
        dataset="test:set-aside",
        session_start=START,
        duration_seconds=iq.shape[1] / CFG.sample_rate,
        measurements=[
            MeasurementRecord(
                id=uuid.uuid5(sid, str(station)),
                timestamp=START,
                station_id=station,
                frequency_hz=CARRIER_HZ,
                signal_strength_db=None,
                snr_db=None,
                iq=iq[j],
                iq_sample_rate=CFG.sample_rate,
            )
            for j, station in enumerate(NETWORK.station_ids)
        ],
        source=SourceRecord(uuid.uuid5(sid, "source"), "test transmitter", float(lat), float(lon)),
    )


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[bool, str]]:
    """(data dir, model, {bad: session id}): both sessions written to a fresh embedded default."""
    root = tmp_path_factory.mktemp("set-aside")
    _, model = export_radio_map(root)
    data_dir = root / "heimdall-data"
    services = open_services(Settings(data_dir=data_dir))
    try:
        ensure_stations(
            services.db,
            [
                NewStation(sid, name, lat, lon)
                for sid, name, lat, lon in zip(
                    NETWORK.station_ids, NETWORK.names, NETWORK.latitudes, NETWORK.longitudes, strict=True
                )
            ],
        )
        records = {bad: _session(bad) for bad in (False, True)}
        write_sessions(services.db, services.store, services.settings.raw_iq_bucket, records.values())
    finally:
        services.close()
    return data_dir, model, {bad: str(r.id) for bad, r in records.items()}


@pytest.fixture
def env(stored: tuple[Path, Path, dict[bool, str]], monkeypatch: pytest.MonkeyPatch):
    for var in ("HEIMDALL_DATABASE_URL", "HEIMDALL_OBJECT_STORE", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(stored[0]))
    return stored


def _predict(model: Path, session: str, *extra: str):
    r = runner.invoke(app, ["predict", "--session", session, "--model", str(model), *extra])
    assert r.exit_code == 0, r.output
    return r


def test_predict_names_the_uncalibrated_receiver(env) -> None:
    _, model, sessions = env
    r = _predict(model, sessions[True])
    out = json.loads(r.stdout)
    assert out["set_aside"] == [
        {"station_id": BAD_ID, "name": BAD_NAME, "reason": "reading implausible for every position"}
    ]
    assert r.stderr.strip().splitlines() == [
        f"set aside: station {BAD_ID} ({BAD_NAME}): its power fits no position; check its calibration"
    ]
    assert out["receivers"]["used"] == [s for s in NETWORK.station_ids if s != BAD_ID]
    stations = {s["station_id"]: s for s in out["stations"]}
    assert stations[BAD_ID]["status"] == "set_aside"
    assert stations[BAD_ID]["power_dbm"] > stations[NETWORK.station_ids[0]]["power_dbm"] + 30.0  # as read
    # the GeoJSON carries it too, and the line goes to stderr whatever the format
    g = _predict(model, sessions[True], "--format", "geojson")
    props = [f["properties"] for f in json.loads(g.stdout)["features"]]
    assert props[0]["set_aside"] == out["set_aside"]
    assert {p["station_id"]: p["status"] for p in props if p["kind"] == "receiver"}[BAD_ID] == "set_aside"
    assert "set aside: station" in g.stderr


def test_predict_of_a_calibrated_session_sets_nobody_aside(env) -> None:
    _, model, sessions = env
    r = _predict(model, sessions[False])
    out = json.loads(r.stdout)
    assert out["set_aside"] == [] and r.stderr == ""
    assert out["receivers"]["used"] == list(NETWORK.station_ids)
    assert out["truth"]["error_m"] < 10_000.0  # the model locates this world: a check that can fail
