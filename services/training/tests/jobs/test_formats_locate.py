"""``heimdall locate --format geojson|html --output FILE`` on the SigMF export of a stored session.

The GeoJSON must carry the figures ``locate``'s own JSON prints (position, each receiver's check with
its power, the excluded receiver), and the HTML map written for it must draw in headless Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import chromium, layer_counts, open_page, problems
from typer.testing import CliRunner

from heimdall.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def exported(cli_env, tmp_path: Path) -> Path:
    sid = json.loads((cli_env.root / "model" / "split.json").read_text())["test"][0]
    r = run("export", "sigmf", sid, str(tmp_path / "rec"))
    assert r.exit_code == 0, r.output
    return tmp_path / "rec"


def test_locate_geojson_and_html_map(cli_env, exported: Path, tmp_path: Path) -> None:
    model = str(cli_env.root / "model")
    base = ["locate", str(exported), "--model", model]
    j = run(*base)
    assert j.exit_code == 0, j.output
    (est,) = json.loads(j.stdout)["estimates"]
    used = [c for c in est["receivers"]["checks"] if c["status"] == "used"]
    excluded = used[0]["station_id"]
    g = run(*base, "--exclude", str(excluded), "--format", "geojson")
    assert g.exit_code == 0, g.output
    geo = json.loads(g.stdout)
    pos = geo["features"][0]
    assert pos["properties"]["kind"] == "position"
    receivers = {
        f["properties"]["station_id"]: f["properties"]
        for f in geo["features"]
        if f["properties"]["kind"] == "receiver"
    }
    assert receivers[excluded]["status"] == "excluded"
    for c in used[1:]:  # the same checks as the JSON run: status and measured power
        assert receivers[c["station_id"]]["status"] == "used"
        assert receivers[c["station_id"]]["power_dbm"] == pytest.approx(c["power_dbm"], abs=1e-9)
    assert sum(f["properties"]["kind"].startswith("ellipse_") for f in geo["features"]) == 3

    page_file = tmp_path / "map.html"
    h = run(*base, "--exclude", str(excluded), "--format", "html", "--output", str(page_file))
    assert h.exit_code == 0, h.output
    assert h.stdout == "" and f"wrote html to {page_file}" in h.stderr
    with chromium(tmp_path / "profile") as endpoint:
        page = open_page(endpoint, page_file)
        counts = layer_counts(page)
        page.ws.close()
        assert problems(page) == []
    n_receivers = len(receivers)
    assert counts["ellipse"] == 3 and counts["position"] == 1 and counts["receiver"] == n_receivers
    assert counts["receiver-excluded"] == 1 and counts["receiver-used"] == len(used) - 1
    assert counts["truth"] == (1 if "truth" in est else 0)


def test_locate_bad_output_refused_before_reading_anything(cli_env, exported: Path, tmp_path: Path) -> None:
    r = run(
        "locate",
        str(exported),
        "--model",
        str(cli_env.root / "model"),
        "--output",
        str(tmp_path / "no" / "m.json"),
    )
    assert r.exit_code == 2 and "does not exist" in r.output and len(r.output.strip().splitlines()) == 1
