"""The HTML map opens from disk in headless Chromium (:mod:`browser`): Leaflet is there, every layer
draws, and nothing fails but the OpenStreetMap tiles, which cannot load offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import TILE_HOST, chromium, layer_counts, open_page, problems
from test_maps import estimate  # the known estimate of the GeoJSON tests

from heimdall.inference.maps import MapEstimate, MapReceiver
from heimdall.inference.maps_html import render_html


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as endpoint:
        yield endpoint


def test_page_is_self_contained() -> None:
    page = render_html([estimate()], title="a <test> & map")
    assert "<script src" not in page and "<link" not in page  # no CDN: everything inline
    assert "Leaflet 1.9.4" in page and "BSD 2-Clause License" in page  # the licence travels with the code
    assert "url(images/" not in page and "data:image/png;base64," in page
    assert "sourceMappingURL" not in page
    assert "<title>a &lt;test&gt; &amp; map</title>" in page


def test_map_renders_every_layer_in_headless_chromium(browser: str, tmp_path: Path) -> None:
    html_file = tmp_path / "map.html"
    html_file.write_text(render_html([estimate()], title="test map"))
    page = open_page(browser, html_file)
    assert page.evaluate("typeof L") == "object" and page.evaluate("L.version") == "1.9.4"
    assert page.evaluate("window.heimdall.map instanceof L.Map") is True
    # 3 ellipses, the 3 receivers with a position (2 used, 1 absent), estimate, truth, the error line
    assert layer_counts(page) == {
        "ellipse": 3,
        "receiver": 3,
        "receiver-used": 2,
        "receiver-absent": 1,
        "receiver-refused": 0,
        "receiver-excluded": 0,
        "position": 1,
        "truth": 1,
        "error-line": 1,
    }
    # the view holds every receiver, the estimate and the truth
    inside = page.evaluate(
        "(function(){var b = window.heimdall.map.getBounds();"
        "return [[59.95,10.60],[59.87,10.90],[60.02,10.70],[59.90,10.80]].every(function(p){"
        "return b.contains(L.latLng(p[0], p[1]));});})()"
    )
    assert inside is True
    # a heard receiver is filled with its SNR colour, an unheard one is white
    fills = page.evaluate(
        "Array.from(document.querySelectorAll('path.heimdall-receiver')).map(function(p){"
        "return p.getAttribute('fill');})"
    )
    assert "#ffffff" in fills and any(f.startswith("rgb(") for f in fills)
    assert problems(page) == []
    tiles = [
        ev
        for ev in page.events
        if ev.get("method") == "Log.entryAdded" and TILE_HOST in ev["params"]["entry"].get("url", "")
    ]
    assert tiles, "the tile layer did not even try to load (offline tiles must fail, not be absent)"
    page.ws.close()


def test_several_estimates_and_unpositioned_receivers(browser: str, tmp_path: Path) -> None:
    other = MapEstimate(
        label="s-2",
        frame=estimate().frame,
        position_enu_m=(-5000.0, 4000.0),
        covariance_enu_m2=((4e6, 0.0), (0.0, 1e6)),
        receivers=(MapReceiver(3, "alpha", 59.95, 10.60, "refused", note="sample rate 11 kHz"),),
    )
    html_file = tmp_path / "two.html"
    html_file.write_text(render_html([estimate(), other]))
    page = open_page(browser, html_file)
    c = layer_counts(page)
    assert c["ellipse"] == 6 and c["position"] == 2 and c["receiver"] == 4 and c["truth"] == 1
    assert c["receiver-refused"] == 1
    assert problems(page) == []
    page.ws.close()
