"""``heimdall predict --format json|geojson|html --output FILE`` on a stored session of the pipeline.

Known answers: the receivers' power is ``10·log10(mean |x|²)`` of the stored IQ computed here, their
positions are the model's receivers, the ellipse vertices lie at Mahalanobis distance n of the printed
covariance, and the GeoJSON/HTML carry the very figures the JSON prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.data.recordings import stored_recordings
from heimdall.geo import LocalFrame
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.services import open_services

runner = CliRunner()
N_95 = math.sqrt(-2.0 * math.log(0.05))


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def sid(cli_env) -> str:
    return json.loads((cli_env.root / "model" / "split.json").read_text())["test"][0]


def test_json_geojson_and_file_output_agree(cli_env, sid: str, tmp_path: Path) -> None:
    model = str(cli_env.root / "model" / "model.onnx")
    r = run("predict", "--session", sid, "--model", model)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    # every receiver of the model, with the power of its stored recording computed independently
    services = open_services(cli_env.settings)
    try:
        stored = stored_recordings(services.db, services.store, sid)
    finally:
        services.close()
    loc = OnnxLocalizer(model)
    stations = {s["station_id"]: s for s in out["stations"]}
    assert sorted(stations) == sorted(loc.station_ids)
    for meta in loc.receivers:
        s = stations[meta["station_id"]]
        assert (s["latitude"], s["longitude"]) == (meta["latitude"], meta["longitude"])
        iq = stored.recordings.get(meta["station_id"])
        if iq is None:
            assert s["status"] == "absent" and s["power_dbm"] is None
            continue
        expected = 10 * math.log10(float(np.mean(np.abs(iq.astype(np.complex128)) ** 2)))
        assert s["status"] == "used" and s["power_dbm"] == pytest.approx(expected, abs=1e-3)
        assert isinstance(s["heard"], bool) and math.isfinite(s["snr_db"])
    cov = np.array(out["covariance_enu_m2"])
    assert out["ellipses"]["95pct"]["semi_major_m"] == pytest.approx(
        N_95 * math.sqrt(np.linalg.eigvalsh(cov)[1]), rel=1e-9
    )

    g = run("predict", "--session", sid, "--model", model, "--format", "geojson")
    assert g.exit_code == 0, g.output
    geo = json.loads(g.stdout)
    first = geo["features"][0]
    assert first["properties"]["kind"] == "position"
    assert first["geometry"]["coordinates"] == [out["position"]["longitude"], out["position"]["latitude"]]
    kinds = [f["properties"]["kind"] for f in geo["features"]]
    assert kinds.count("receiver") == len(loc.station_ids) and kinds.count("truth") == 1
    frame = LocalFrame(out["frame"]["origin_latitude"], out["frame"]["origin_longitude"])
    centre = np.array([out["position"]["east_m"], out["position"]["north_m"]])
    for name, n in (("1sigma", 1.0), ("2sigma", 2.0), ("95pct", N_95)):
        (ring,) = next(f for f in geo["features"] if f["properties"]["kind"] == f"ellipse_{name}")[
            "geometry"
        ]["coordinates"]
        d = frame.to_enu(np.array(ring)[:, 1], np.array(ring)[:, 0]) - centre
        np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d), n * n, rtol=1e-5)
    truth = next(f for f in geo["features"] if f["properties"]["kind"] == "truth")
    assert truth["properties"]["error_m"] == pytest.approx(out["truth"]["error_m"], rel=1e-12)

    dst = tmp_path / "estimate.geojson"
    f = run("predict", "--session", sid, "--model", model, "--format", "geojson", "--output", str(dst))
    assert f.exit_code == 0, f.output
    assert f.stdout == "" and f"wrote geojson to {dst}" in f.stderr
    assert json.loads(dst.read_text()) == geo


def test_html_goes_to_a_default_file_named_after_the_session(
    cli_env, sid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = str(cli_env.root / "model" / "model.onnx")
    r = run("predict", "--session", sid, "--model", model, "--format", "html")
    assert r.exit_code == 0, r.output
    page = tmp_path / f"heimdall-map-{sid}.html"
    assert page.is_file() and f"wrote html to {page.name}" in r.stderr
    text = page.read_text()
    assert "Leaflet 1.9.4" in text and "<script src" not in text
    data = json.loads(text.split('id="heimdall-data">', 1)[1].split("</script>", 1)[0])
    out = json.loads(run("predict", "--session", sid, "--model", model).stdout)
    assert data["features"][0]["geometry"]["coordinates"] == [
        out["position"]["longitude"],
        out["position"]["latitude"],
    ]


def test_bad_format_or_output_is_one_line_and_writes_nothing(cli_env, sid: str, tmp_path: Path) -> None:
    model = str(cli_env.root / "model" / "model.onnx")
    cases = [
        (["--format", "kml"], "--format must be one of json, geojson, html"),
        (["--output", str(tmp_path / "missing" / "x.json")], "does not exist"),
        (["--format", "html", "--output", str(tmp_path)], "is a directory"),
    ]
    for extra, words in cases:
        r = run("predict", "--session", sid, "--model", model, *extra)
        assert r.exit_code == 2 and words in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
