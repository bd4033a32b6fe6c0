"""GeoJSON of an estimate against answers computed independently: a covariance built from known axes and
orientation, Monte Carlo coverage of the 95 % ring, the great-circle error, RFC 7946 structure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from heimdall.errors import UserError
from heimdall.geo import LocalFrame
from heimdall.inference.maps import (
    ELLIPSE_LEVELS,
    MapEstimate,
    MapReceiver,
    ellipse_ring,
    location_geojson,
    write_output,
)

FRAME = LocalFrame(59.91, 10.75)
SIGMA_MAJOR, SIGMA_MINOR, AZIMUTH_DEG = 1200.0, 400.0, 30.0  # metres, clockwise from north
CENTER = np.array([2000.0, -3000.0])


def known_covariance() -> np.ndarray:
    """R·diag(a², b²)·Rᵀ with the major axis at AZIMUTH_DEG clockwise from north."""
    az = math.radians(AZIMUTH_DEG)
    major = np.array([math.sin(az), math.cos(az)])  # (east, north)
    minor = np.array([math.cos(az), -math.sin(az)])
    return SIGMA_MAJOR**2 * np.outer(major, major) + SIGMA_MINOR**2 * np.outer(minor, minor)


def estimate(truth: tuple[float, float] | None = (59.90, 10.80)) -> MapEstimate:
    cov = known_covariance()
    receivers = (
        MapReceiver(3, "alpha", 59.95, 10.60, "used", heard=True, snr_db=21.5, power_dbm=-101.2),
        MapReceiver(5, "bravo", 59.87, 10.90, "used", heard=False, snr_db=1.0, power_dbm=-129.0),
        MapReceiver(8, "charlie", 60.02, 10.70, "absent"),
        MapReceiver(99, "unknown", None, None, "ignored", note="not a receiver of this model"),
    )
    return MapEstimate(
        label="s-1",
        frame=FRAME,
        position_enu_m=(float(CENTER[0]), float(CENTER[1])),
        covariance_enu_m2=((cov[0, 0], cov[0, 1]), (cov[1, 0], cov[1, 1])),
        receivers=receivers,
        truth_latlon=truth,
        properties={"session_id": "s-1", "model": {"model_id": "m"}},
    )


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6_371_008.8 * math.acos(min(1.0, c))


@pytest.mark.parametrize("name", list(ELLIPSE_LEVELS))
def test_ring_has_the_covariance_axes_orientation_and_closure(name: str) -> None:
    n = ELLIPSE_LEVELS[name]
    ring = np.array(ellipse_ring(FRAME, CENTER, known_covariance(), n))
    assert ring.shape[0] >= 65 and (ring[0] == ring[-1]).all()  # ≥ 64 distinct vertices, closed
    x, y = ring[:, 0], ring[:, 1]
    assert 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0  # counter-clockwise in lon/lat (RFC 7946)
    assert 10.0 < x.mean() < 11.0 and 59.5 < y.mean() < 60.5  # [longitude, latitude] order
    d = FRAME.to_enu(ring[:, 1], ring[:, 0]) - CENTER  # back in metres through the forward map only
    r = np.hypot(d[:, 0], d[:, 1])
    assert r.max() == pytest.approx(n * SIGMA_MAJOR, rel=5e-3)
    assert r.min() == pytest.approx(n * SIGMA_MINOR, rel=5e-3)
    far = d[np.argmax(r)]
    assert math.degrees(math.atan2(far[0], far[1])) % 180.0 == pytest.approx(AZIMUTH_DEG, abs=0.5)
    inv = np.linalg.inv(known_covariance())
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, inv, d), n * n, rtol=1e-6)


def test_95_percent_ring_holds_95_percent_of_gaussian_samples() -> None:
    rng = np.random.default_rng(4)
    cov = known_covariance()
    samples = rng.multivariate_normal(CENTER, cov, size=40_000)
    ring = np.array(ellipse_ring(FRAME, CENTER, cov, ELLIPSE_LEVELS["95pct"]))
    polygon = PolygonPath(FRAME.to_enu(ring[:, 1], ring[:, 0]))
    inside = polygon.contains_points(samples).mean()
    assert inside == pytest.approx(0.95, abs=0.005)  # binomial sd 0.0011; a 72-gon loses ~0.1 %


def test_geojson_features_receivers_estimate_truth() -> None:
    est = estimate()
    geo = json.loads(json.dumps(location_geojson([est]), allow_nan=False))  # plain JSON, no NaN
    assert geo["type"] == "FeatureCollection"
    for f in geo["features"]:
        assert f["type"] == "Feature" and set(f) == {"type", "geometry", "properties"}
    kinds = [f["properties"]["kind"] for f in geo["features"]]
    assert kinds[0] == "position"
    assert sorted(kinds) == sorted(
        [
            "position",
            "ellipse_1sigma",
            "ellipse_2sigma",
            "ellipse_95pct",
            "receiver",
            "receiver",
            "receiver",
            "truth",
        ]
    )
    pos = geo["features"][0]
    lat, lon = FRAME.to_latlon(CENTER)
    assert pos["geometry"] == {"type": "Point", "coordinates": [float(lon), float(lat)]}
    assert pos["properties"]["model"] == {"model_id": "m"} and pos["properties"]["east_m"] == CENTER[0]
    by_id = {
        f["properties"]["station_id"]: f for f in geo["features"] if f["properties"]["kind"] == "receiver"
    }
    assert set(by_id) == {3, 5, 8}  # the ignored station has no position: listed nowhere on the map
    assert by_id[3]["geometry"]["coordinates"] == [10.60, 59.95]
    assert by_id[3]["properties"]["heard"] is True and by_id[3]["properties"]["snr_db"] == 21.5
    assert by_id[5]["properties"]["heard"] is False and by_id[5]["properties"]["power_dbm"] == -129.0
    assert by_id[8]["properties"]["status"] == "absent" and by_id[8]["properties"]["snr_db"] is None
    ellipses = {
        f["properties"]["kind"]: f["properties"]
        for f in geo["features"]
        if "ellipse" in f["properties"]["kind"]
    }
    assert ellipses["ellipse_95pct"]["confidence"] == 0.95
    assert ellipses["ellipse_1sigma"]["semi_major_m"] == pytest.approx(SIGMA_MAJOR, rel=1e-9)
    assert ellipses["ellipse_2sigma"]["semi_minor_m"] == pytest.approx(2 * SIGMA_MINOR, rel=1e-9)
    assert ellipses["ellipse_1sigma"]["orientation_deg"] == pytest.approx(AZIMUTH_DEG, abs=1e-9)
    truth = next(f for f in geo["features"] if f["properties"]["kind"] == "truth")
    assert truth["geometry"]["coordinates"] == [10.80, 59.90]
    assert truth["properties"]["error_m"] == pytest.approx(great_circle_m(lat, lon, 59.90, 10.80), rel=1e-6)


def test_geojson_without_truth_and_with_several_estimates() -> None:
    one, two = estimate(truth=None), estimate(truth=None)
    geo = location_geojson([one, two])
    assert not [f for f in geo["features"] if f["properties"]["kind"] == "truth"]
    assert sum(f["properties"]["kind"] == "position" for f in geo["features"]) == 2


def test_write_output_is_atomic_and_bad_paths_are_one_line(tmp_path: Path) -> None:
    out = write_output(tmp_path / "map.geojson", '{"a": 1}\n')
    assert out.read_text() == '{"a": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["map.geojson"]
    for bad, words in ((tmp_path / "nope" / "x.json", "does not exist"), (tmp_path, "is a directory")):
        with pytest.raises(UserError, match=words) as err:
            write_output(bad, "x")
        assert "\n" not in str(err.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is not a directory"):
        write_output(tmp_path / "file" / "x.json", "x")
