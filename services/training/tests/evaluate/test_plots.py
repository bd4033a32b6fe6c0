"""The report figures: one colour per method everywhere, session counts in titles, and per-session maps
whose ellipses, SNR colours and truth are checked against independently computed values."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from simdata import simulate_into

from heimdall.data.arrays import load_session_arrays
from heimdall.evaluate import plots
from heimdall.features import SCALAR_NAMES, FeatureConfig
from heimdall.geo import LocalFrame
from heimdall.ingest.simulated import dataset_label
from heimdall.services import open_services
from heimdall.settings import Settings

FRAME = LocalFrame(45.0, 9.0)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the plot functions build, kept open (each is still saved to its file)."""
    kept: list = []
    real_save = plots._save

    def save(fig, path):
        kept.append(fig)
        fig.savefig(path, dpi=40)
        return path

    monkeypatch.setattr(plots, "_save", save)
    yield kept
    for fig in kept:
        plots.plt.close(fig)
    assert real_save is not None


def test_one_colour_per_method_in_every_plot(figures: list, tmp_path: Path) -> None:
    assert plots.method_colour("weighted centroid") == plots.method_colour("weighted_centroid")
    assert len(set(plots.METHOD_COLOURS.values())) == len(plots.METHOD_COLOURS)
    assert plots.method_colour("my_new_method") == plots.method_colour("My New Method")
    rng = np.random.default_rng(0)
    errors = {"model": rng.gamma(2, 500, 7), "knn_fingerprint": rng.gamma(2, 900, 7)}
    plots.plot_error_cdf(errors, tmp_path / "cdf.png")
    plots.plot_calibration(
        {"knn_fingerprint": rng.chisquare(2, 7), "model": rng.chisquare(2, 7)}, tmp_path / "c.png"
    )
    (cdf_ax,), (cal_ax,) = (f.axes for f in figures)
    for ax in (cdf_ax, cal_ax):
        lines = {ln.get_label(): ln.get_color() for ln in ax.get_lines()}
        assert lines["model"] == "tab:blue" and lines["knn_fingerprint"] == "tab:brown"
    assert cdf_ax.get_title() == "error CDF (7 sessions)"
    assert cal_ax.get_title() == "ellipse calibration (7 sessions)"
    assert (tmp_path / "cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_session_map_in_latitude_longitude(figures: list, tmp_path: Path) -> None:
    receivers = np.array([[45.05, 8.95], [44.97, 9.08], [45.02, 9.12], [44.93, 8.90]])
    snr = np.array([25.0, 3.0, np.nan, 55.0])  # 55 dB lies beyond the colour scale: clipped to its top
    cov = np.array([[4e6, 1.5e6], [1.5e6, 1e6]])
    pos = np.array([1500.0, -800.0])
    plots.plot_session_map(
        tmp_path / "s.png",
        frame=FRAME,
        session_label="abc",
        receivers_latlon=receivers,
        receiver_names=["a", "b", "c", "d"],
        snr_db=snr,
        heard=np.array([True, False, False, True]),
        estimates={"model": (pos, cov), "weighted_centroid": (np.zeros(2), None)},
        truth_latlon=(45.01, 9.02),
    )
    (fig,) = figures
    ax, bar = fig.axes  # the map and its colour bar
    assert "SNR" in bar.get_ylabel()
    assert ax.get_title().startswith("1 session: abc")
    assert ax.get_aspect() == pytest.approx(1 / math.cos(math.radians(45.0)))
    # receivers with a reading, coloured by viridis on the fixed SNR scale
    heard_pts = next(c for c in ax.collections if isinstance(c, PathCollection))
    np.testing.assert_allclose(heard_pts.get_offsets(), receivers[[0, 1, 3]][:, ::-1])  # (lon, lat)
    lo, hi = plots.SNR_COLOUR_RANGE_DB
    expected = matplotlib.colormaps["viridis"]((np.clip(snr[[0, 1, 3]], lo, hi) - lo) / (hi - lo))
    np.testing.assert_allclose(heard_pts.get_facecolors(), expected, atol=1e-6)
    # the model's 1σ and 95 % rings: every vertex at Mahalanobis distance n from the estimate
    model_rings = [ln for ln in ax.get_lines() if ln.get_color() == "tab:blue" and len(ln.get_xdata()) > 10]
    assert [ln.get_linestyle() for ln in model_rings] == ["-", "--"]
    for ln, n in zip(model_rings, (1.0, math.sqrt(-2 * math.log(0.05))), strict=True):
        d = FRAME.to_enu(ln.get_ydata(), ln.get_xdata()) - pos
        np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d), n * n, rtol=1e-6)
    truth = next(ln for ln in ax.get_lines() if ln.get_label() == "truth")
    assert (truth.get_xdata()[0], truth.get_ydata()[0]) == (9.02, 45.01)
    centroid = next(ln for ln in ax.get_lines() if ln.get_label() == "weighted_centroid")
    assert centroid.get_color() == "tab:orange"
    assert (centroid.get_xdata()[0], centroid.get_ydata()[0]) == pytest.approx((9.0, 45.0))


def test_session_maps_of_stored_sessions(figures: list, tmp_path: Path) -> None:
    services = open_services(Settings(data_dir=tmp_path / "heimdall-data"))
    try:
        simulate_into(services, 5, seed=3)
        datasets = [dataset_label("nw-italy-v1")]
        arrays = load_session_arrays(services.db, services.store, datasets, FeatureConfig(), tmp_path / "c")
    finally:
        services.close()
    idx = np.arange(len(arrays.session_ids))
    names = plots.plot_session_maps(tmp_path, arrays, idx, {"model": (arrays.target_enu_m[idx], None)}, 3)
    assert names == ["session_map_1.png", "session_map_2.png", "session_map_3.png"]
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)
    ax = figures[1].axes[0]
    assert ax.get_title().startswith(f"1 session: {arrays.session_ids[1]}")
    # the model here sits on the truth: its marker and the star coincide at the stored truth
    truth = next(ln for ln in ax.get_lines() if ln.get_label() == "truth")
    model = next(ln for ln in ax.get_lines() if ln.get_label() == "model")
    assert (truth.get_ydata()[0], truth.get_xdata()[0]) == tuple(arrays.truth_latlon[1])
    assert model.get_xdata()[0] == pytest.approx(arrays.truth_latlon[1, 1], abs=1e-6)
    # receivers with a reading carry the session's SNR scalars
    pts = next(c for c in ax.collections if isinstance(c, PathCollection))
    assert len(pts.get_offsets()) == int(arrays.mask[1].sum())
    snr = arrays.scalars[1, arrays.mask[1], SCALAR_NAMES.index("snr_db")]
    lo, hi = plots.SNR_COLOUR_RANGE_DB
    expected = matplotlib.colormaps["viridis"]((np.clip(snr, lo, hi) - lo) / (hi - lo))
    np.testing.assert_allclose(pts.get_facecolors(), expected, atol=1e-6)
