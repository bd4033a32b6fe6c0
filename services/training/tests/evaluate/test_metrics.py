"""Metrics and the weighted-centroid baseline against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from heimdall.evaluate.metrics import error_summary, errors_m, uncertainty_summary


def test_error_summary() -> None:
    s = error_summary(np.array([3.0, 4.0]))
    assert (
        s["rmse_m"] == pytest.approx(math.sqrt(12.5))
        and s["median_error_m"] == 3.5
        and s["mean_error_m"] == 3.5
    )
    with pytest.raises(ValueError, match="empty"):
        error_summary(np.array([]))


def test_haversine_errors() -> None:
    e = errors_m(np.array([[45.0, 7.0]]), np.array([[45.0 + 1 / 60, 7.0]]))  # one arc-minute of latitude
    assert e[0] == pytest.approx(1853.2, rel=2e-3)


def test_calibrated_gaussian_coverage_and_nll() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    cov = np.array([[4e6, 1.5e6], [1.5e6, 1e6]])
    truth = rng.multivariate_normal([0, 0], cov, size=n)
    pred = np.zeros((n, 2))
    s = uncertainty_summary(pred, np.broadcast_to(cov, (n, 2, 2)), truth)
    assert s["coverage_1sigma"] == pytest.approx(0.393, abs=0.01)
    assert s["coverage_2sigma"] == pytest.approx(0.865, abs=0.01)
    assert s["coverage_95"] == pytest.approx(0.95, abs=0.01)
    expected_nll = -multivariate_normal(mean=[0, 0], cov=cov).logpdf(truth).mean()
    assert s["nll"] == pytest.approx(expected_nll, rel=1e-9)
    assert s["mean_ellipse_area_km2"] == pytest.approx(
        math.pi * 5.991464547 * math.sqrt(np.linalg.det(cov)) / 1e6
    )


def test_plots_are_written(tmp_path) -> None:
    from heimdall.evaluate.plots import (
        plot_calibration,
        plot_error_cdf,
        plot_loss_curves,
        plot_prediction_map,
    )

    rng = np.random.default_rng(1)
    d2 = rng.chisquare(2, 500)
    assert plot_calibration({"calibrated": d2}, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_error_cdf({"a": rng.random(50)}, tmp_path / "e.png").is_file()
    hist = [{"epoch": 0.0, "train_loss": 2.0, "val_loss": 2.1, "val_median_error_m": 900.0}]
    assert plot_loss_curves(hist, tmp_path / "l.png").is_file()
    cov = np.broadcast_to(np.eye(2) * 1e6, (5, 2, 2))
    pts = rng.normal(size=(5, 2)) * 1e4
    assert plot_prediction_map(pts, pts + 100, cov, pts[:3], ["a", "b", "c"], tmp_path / "m.png").is_file()
