"""``heimdall locate`` names a receiver the model set aside: one recording scaled ×1000 (+60 dB power and
noise floor, the SNR unchanged) passes every check, and only the radio map sees its power fits no position.

The model is the radio map of ``tests/radio_map_model.py``, fitted on a synthetic world and exported
from IQ; the recordings are that world's, as ``.npy`` files with sidecars.
"""

from __future__ import annotations

import json
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

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

runner = CliRunner()
LINE = (
    f"set aside: station {BAD_ID} ({BAD_NAME}) in {BAD_NAME}.npy: "
    "its power fits no position; check its calibration"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_radio_map(tmp_path_factory.mktemp("radio-map"))[1]


def _capture(folder: Path, bad: bool) -> Path:
    """One clearly heard session of the world as .npy recordings with sidecars (carrier and truth)."""
    world = shifted(draw(100, seed=6))
    k = int(clearly_heard(world)[1])
    iq = recordings(world.scalars[k], np.random.default_rng(2), bad=bad)
    lat, lon = NETWORK.frame.to_latlon(world.truth[k])
    folder.mkdir()
    for j, (sid, name) in enumerate(zip(NETWORK.station_ids, NETWORK.names, strict=True)):
        np.save(folder / f"{name}.npy", iq[j])
        side = {
            "station_id": sid,
            "sample_rate_hz": CFG.sample_rate,
            "capture_start": "2025-05-01T12:00:00Z",
            "frequency_hz": CARRIER_HZ,
            "truth": {"latitude": float(lat), "longitude": float(lon)},
        }
        (folder / f"{name}.json").write_text(json.dumps(side))
    return folder


def _locate(*args: str) -> tuple[dict, str]:
    r = runner.invoke(app, ["locate", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), r.stderr


def test_locate_names_the_uncalibrated_receiver(model: Path, tmp_path: Path) -> None:
    got, err = _locate(str(_capture(tmp_path / "bad", bad=True)), "--model", str(model))
    (est,) = got["estimates"]
    assert est["set_aside"] == [
        {"station_id": BAD_ID, "name": BAD_NAME, "reason": "reading implausible for every position"}
    ]
    assert err.strip().splitlines() == [LINE]
    checks = {c["station_id"]: c for c in est["receivers"]["checks"]}
    assert checks[BAD_ID]["status"] == "set_aside"  # it passed the checks: 58 dB above thermal noise
    assert (
        checks[BAD_ID]["noise_floor_dbm"] > -80.0
        and checks[BAD_ID]["reason"] == est["set_aside"][0]["reason"]
    )
    assert est["receivers"]["used"] == [s for s in NETWORK.station_ids if s != BAD_ID]
    assert est["receivers"]["refused"] == [] and est["receivers"]["excluded"] == []
    # set aside, its reading has no weight: the estimate is the one made without the receiver
    (without,) = _locate(str(tmp_path / "bad"), "--model", str(model), "--exclude", str(BAD_ID))[0][
        "estimates"
    ]
    assert without["set_aside"] == []
    east, north = est["position"]["east_m"], est["position"]["north_m"]
    assert np.hypot(east - without["position"]["east_m"], north - without["position"]["north_m"]) < 1.0


def test_a_calibrated_capture_sets_nobody_aside(model: Path, tmp_path: Path) -> None:
    got, err = _locate(str(_capture(tmp_path / "clean", bad=False)), "--model", str(model))
    (est,) = got["estimates"]
    assert est["set_aside"] == [] and err == ""
    assert est["receivers"]["used"] == list(NETWORK.station_ids)
    # an excluded receiver is not "set aside" either
    excluded, err = _locate(str(tmp_path / "clean"), "--model", str(model), "--exclude", str(BAD_ID))
    assert excluded["estimates"][0]["set_aside"] == [] and "set aside" not in err


def test_the_map_shows_the_receiver_set_aside(model: Path, tmp_path: Path) -> None:
    folder = _capture(tmp_path / "bad", bad=True)
    r = runner.invoke(app, ["locate", str(folder), "--model", str(model), "--format", "geojson"])
    assert r.exit_code == 0, r.output
    status = {
        f["properties"]["station_id"]: f["properties"]["status"]
        for f in json.loads(r.stdout)["features"]
        if f["properties"]["kind"] == "receiver"
    }
    assert status == {sid: "set_aside" if sid == BAD_ID else "used" for sid in NETWORK.station_ids}
    page = tmp_path / "map.html"
    r = runner.invoke(
        app, ["locate", str(folder), "--model", str(model), "--format", "html", "--output", str(page)]
    )
    assert r.exit_code == 0, r.output
    assert f"4 receivers used; set aside: {BAD_NAME})" in page.read_text()
