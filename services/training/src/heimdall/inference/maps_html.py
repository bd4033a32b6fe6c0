"""One self-contained HTML map: Leaflet, its CSS and the layers in a single file that opens from disk.

Leaflet (BSD 2-Clause, vendored unchanged from the npm package under ``assets/leaflet/``, see
``VENDORED.md``) is embedded inline, its images as ``data:`` URIs, and the layers are the GeoJSON of
:func:`heimdall.inference.maps.location_geojson`, so the receivers, ellipses, estimate and truth draw
with no network. Only the OpenStreetMap background tiles come from the internet: offline they fail to
load and the rest of the map still draws.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from heimdall.inference.maps import SNR_COLOUR_RANGE_DB, MapEstimate, location_geojson

__all__ = ["LEAFLET_VERSION", "SNR_COLOUR_RANGE_DB", "TILE_URL", "leaflet_assets", "render_html"]

LEAFLET_VERSION = "1.9.4"
TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
#: viridis at 0, 0.25, 0.5, 0.75, 1 (matplotlib's default colour map, so HTML and PNG agree)
_VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


@cache
def leaflet_assets() -> tuple[str, str, str]:
    """(leaflet.js, leaflet.css with its images inlined, LICENSE) from the package data."""
    root = resources.files("heimdall.inference").joinpath("assets", "leaflet")
    js = root.joinpath("leaflet.js").read_text(encoding="utf-8")
    js = re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE)  # no .map file beside the page
    css = root.joinpath("leaflet.css").read_text(encoding="utf-8")

    def inline(m: re.Match[str]) -> str:
        data = root.joinpath("images", m.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode('ascii')})"

    css = re.sub(r"url\(images/([\w.-]+\.png)\)", inline, css)
    return js, css, root.joinpath("LICENSE").read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no '</script>' or '<!--' can appear)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_APP_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("heimdall-data").textContent);
  var cfg = JSON.parse(document.getElementById("heimdall-config").textContent);
  var map = L.map("map", {zoomSnap: 0.25});
  var tiles = L.tileLayer(cfg.tileUrl, {
    maxZoom: 19, attribution: "&copy; OpenStreetMap contributors"
  }).addTo(map);
  function kind(f) { return f.properties.kind; }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function fmt(v, unit, digits) {
    return v === null || v === undefined ? "n/a" : v.toFixed(digits) + " " + unit;
  }
  function hex(c) { return [1, 3, 5].map(function (i) { return parseInt(c.substr(i, 2), 16); }); }
  function snrColour(snr) {
    var t = (Math.min(Math.max(snr, cfg.snrRange[0]), cfg.snrRange[1]) - cfg.snrRange[0]) /
      (cfg.snrRange[1] - cfg.snrRange[0]);
    var x = t * (cfg.palette.length - 1), i = Math.min(Math.floor(x), cfg.palette.length - 2), u = x - i;
    var a = hex(cfg.palette[i]), b = hex(cfg.palette[i + 1]);
    return "rgb(" + a.map(function (v, k) { return Math.round(v + u * (b[k] - v)); }).join(",") + ")";
  }
  var ELLIPSE = {
    ellipse_95pct: {color: "#1f77b4", weight: 1, dashArray: "5 4", fillOpacity: 0.05},
    ellipse_2sigma: {color: "#1f77b4", weight: 1.5, fillOpacity: 0.08},
    ellipse_1sigma: {color: "#1f77b4", weight: 2, fillOpacity: 0.15}
  };
  var ellipseFeatures = data.features.filter(function (f) { return kind(f).indexOf("ellipse_") === 0; });
  ellipseFeatures.sort(function (a, b) { return b.properties.n_sigma - a.properties.n_sigma; });
  var ellipses = L.geoJSON({type: "FeatureCollection", features: ellipseFeatures}, {
    style: function (f) {
      return Object.assign({className: "heimdall-ellipse heimdall-" + kind(f)}, ELLIPSE[kind(f)]);
    },
    onEachFeature: function (f, layer) {
      var p = f.properties;
      layer.bindTooltip(esc(p.label) + ": " + Math.round(p.confidence * 1000) / 10 + " % ellipse, " +
        fmt(p.semi_major_m, "m", 0) + " × " + fmt(p.semi_minor_m, "m", 0));
    }
  });
  function points(k, style, tip, label) {
    return L.geoJSON({type: "FeatureCollection", features: data.features.filter(function (f) {
      return kind(f) === k;
    })}, {
      pointToLayer: function (f, latlng) { return L.circleMarker(latlng, style(f.properties)); },
      onEachFeature: function (f, layer) {
        if (label) {  // the name always shown, the details on a click
          layer.bindTooltip(esc(label(f.properties)), {permanent: true, direction: "right",
                            className: "heimdall-label", offset: [8, 0]});
          layer.bindPopup(tip(f.properties));
        } else {
          layer.bindTooltip(tip(f.properties));
        }
      }
    });
  }
  var receivers = points("receiver", function (p) {
    var heard = p.heard === true && p.snr_db !== null;
    return {
      className: "heimdall-receiver heimdall-receiver-" + p.status,
      radius: 7, weight: p.status === "used" ? 2 : 1.5,
      color: p.status === "refused" ? "#d62728" : (p.status === "set_aside" ? "#ff7f0e" :
             (p.status === "used" ? "#222222" : "#888888")),
      dashArray: p.status === "used" ? null : "3 2",
      fillColor: heard ? snrColour(p.snr_db) : "#ffffff", fillOpacity: heard ? 0.95 : 0.6
    };
  }, function (p) {
    return "<b>" + esc(p.name) + "</b> (station " + p.station_id + ")<br>" + esc(p.status) +
      (p.heard === null ? "" : (p.heard ? ", heard" : ", not heard")) + "<br>SNR " + fmt(p.snr_db, "dB", 1) +
      ", power " + fmt(p.power_dbm, "dBm", 1) + (p.note ? "<br>" + esc(p.note) : "");
  }, function (p) { return p.name; });
  var positions = points("position", function () {
    return {className: "heimdall-position", radius: 6, weight: 2, color: "#ffffff", fillColor: "#1f77b4",
            fillOpacity: 1};
  }, function (p) { return "<b>estimate</b> " + esc(p.label); });
  var truth = points("truth", function () {
    return {className: "heimdall-truth", radius: 6, weight: 2, color: "#ffffff", fillColor: "#2ca02c",
            fillOpacity: 1};
  }, function (p) { return "<b>truth</b> " + esc(p.label) + "<br>error " + fmt(p.error_m, "m", 0); });
  var errorLines = L.layerGroup();
  data.features.filter(function (f) { return kind(f) === "truth"; }).forEach(function (t) {
    data.features.filter(function (f) {
      return kind(f) === "position" && f.properties.label === t.properties.label;
    }).forEach(function (p) {
      var a = p.geometry.coordinates, b = t.geometry.coordinates;
      L.polyline([[a[1], a[0]], [b[1], b[0]]], {className: "heimdall-error-line", color: "#2ca02c",
        weight: 1.5, dashArray: "2 4"}).addTo(errorLines);
    });
  });
  var overlays = {"ellipses (1σ, 2σ, 95 %)": ellipses, "receivers": receivers, "estimate": positions};
  if (truth.getLayers().length) { overlays["truth"] = truth; overlays["error"] = errorLines; }
  Object.keys(overlays).forEach(function (k) { overlays[k].addTo(map); });
  L.control.layers({"OpenStreetMap": tiles}, overlays, {collapsed: false}).addTo(map);
  L.control.scale({imperial: false}).addTo(map);
  var legend = L.control({position: "bottomright"});
  legend.onAdd = function () {
    var div = L.DomUtil.create("div", "heimdall-legend");
    var stops = cfg.palette.map(function (c, i) {
      return c + " " + (100 * i / (cfg.palette.length - 1)) + "%";
    }).join(",");
    div.innerHTML = "<b>receiver SNR (dB)</b><div class='ramp' style='background:linear-gradient(to right," +
      stops + ")'></div><div class='ticks'><span>≤ " + cfg.snrRange[0] + "</span><span>≥ " + cfg.snrRange[1] +
      "</span></div>white: not heard; dashed: not used; red: refused<br>" +
      "<span style='color:#1f77b4'>●</span> estimate, ellipses 1σ / 2σ / 95 % (dashed)" +
      "<br><span style='color:#2ca02c'>●</span> truth";
    return div;
  };
  legend.addTo(map);
  var all = L.featureGroup([ellipses, receivers, positions, truth]);
  var bounds = all.getBounds();
  if (bounds.isValid()) { map.fitBounds(bounds.pad(0.1)); } else { map.setView([0, 0], 2); }
  window.heimdall = {map: map, tiles: tiles, layers: overlays, featureCount: data.features.length};
})();
"""

_PAGE_CSS = """
html, body { height: 100%; margin: 0; font: 13px/1.35 system-ui, sans-serif; }
#header { padding: 6px 10px; background: #f4f4f4; border-bottom: 1px solid #ccc; }
#header h1 { font-size: 15px; margin: 0 0 2px 0; }
#map { position: absolute; top: var(--header-h, 52px); bottom: 0; left: 0; right: 0; }
.heimdall-label { font-size: 11px; padding: 1px 4px; }
.heimdall-legend { background: rgba(255,255,255,0.92); padding: 6px 8px; border-radius: 4px; width: 190px; }
.heimdall-legend .ramp { height: 10px; margin: 4px 0 1px 0; }
.heimdall-legend .ticks { display: flex; justify-content: space-between; font-size: 11px; }
"""


def _summary(est: MapEstimate) -> str:
    lat, lon = est.latlon
    used = sum(r.status == "used" for r in est.receivers)
    aside = [r.name for r in est.receivers if r.status == "set_aside"]
    text = f"{html.escape(est.label)}: {lat:.5f}, {lon:.5f} ({used} receivers used"
    text += f"; set aside: {html.escape(', '.join(aside))})" if aside else ")"
    if est.error_m is not None:
        text += f", error {est.error_m:,.0f} m"
    return text


def render_html(estimates: Sequence[MapEstimate], title: str = "Heimdall location") -> str:
    """The whole page for one or more estimates, as text; nothing in it needs a network to draw."""
    js, css, licence = leaflet_assets()
    config = {"tileUrl": TILE_URL, "snrRange": list(SNR_COLOUR_RANGE_DB), "palette": list(_VIRIDIS)}
    lines = "<br>".join(_summary(e) for e in estimates[:5])
    if len(estimates) > 5:
        lines += f"<br>… and {len(estimates) - 5} more"
    licence_comment = licence.replace("--", "- -")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<!-- Leaflet {LEAFLET_VERSION}, embedded inline. Its licence:
{licence_comment}
-->
<style>{css}</style>
<style>{_PAGE_CSS}</style>
</head>
<body>
<div id="header"><h1>{html.escape(title)}</h1>{lines}</div>
<div id="map"></div>
<script type="application/json" id="heimdall-data">{_script_json(location_geojson(estimates))}</script>
<script type="application/json" id="heimdall-config">{_script_json(config)}</script>
<script>{js}</script>
<script>
var heimdallHeader = document.getElementById("header").offsetHeight + "px";
document.documentElement.style.setProperty("--header-h", heimdallHeader);
</script>
<script>{_APP_JS}</script>
</body>
</html>
"""
