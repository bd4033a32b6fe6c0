"""Paired bootstrap intervals (`heimdall.evaluate.intervals`) against distributions with known statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heimdall.evaluate.intervals import paired_bootstrap

SIGMA = 100.0
# 2-D Gaussian position errors of σ per axis have Rayleigh(σ) norms, whose statistics are closed-form
TRUE = {
    "rmse_m": SIGMA * math.sqrt(2.0),
    "mean_error_m": SIGMA * math.sqrt(math.pi / 2.0),
    "median_error_m": SIGMA * math.sqrt(2.0 * math.log(2.0)),
    "p90_error_m": SIGMA * math.sqrt(-2.0 * math.log(0.1)),
}


def test_intervals_cover_the_true_statistics() -> None:
    """Over repeated samples the 95 % percentile intervals hold the true value about 95 % of the time."""
    repeats, hits = 200, dict.fromkeys(TRUE, 0)
    for rep in range(repeats):
        errors = np.random.default_rng(1000 + rep).rayleigh(SIGMA, 400)
        out = paired_bootstrap({"x": errors}, reference="x", n_boot=400, seed=rep)["x"]
        for stat, true in TRUE.items():
            hits[stat] += out[stat]["ci95_low"] <= true <= out[stat]["ci95_high"]
    for stat, h in hits.items():
        assert 0.89 <= h / repeats <= 0.99, (stat, h / repeats)


def test_values_are_the_full_sample_statistics() -> None:
    e = np.random.default_rng(0).rayleigh(SIGMA, 501)
    out = paired_bootstrap({"a": e}, reference="a", n_boot=50)["a"]
    assert out["rmse_m"]["value"] == pytest.approx(np.sqrt(np.mean(e**2)))
    assert out["median_error_m"]["value"] == pytest.approx(np.median(e))
    assert out["mean_error_m"]["value"] == pytest.approx(np.mean(e))
    for q in (68, 90, 95):
        assert out[f"p{q}_error_m"]["value"] == pytest.approx(np.percentile(e, q))
        assert out[f"p{q}_error_m"]["ci95_low"] <= out[f"p{q}_error_m"]["ci95_high"]


def test_paired_differences() -> None:
    """Identical methods differ by exactly 0; pairing makes a small real difference resolvable."""
    rng = np.random.default_rng(1)
    a = rng.rayleigh(SIGMA, 600)
    b = a * 1.03 + rng.normal(0, 1.0, a.size)  # 3 % worse on every session
    out = paired_bootstrap({"a": a, "same": a.copy(), "b": b}, reference="a", n_boot=1000, seed=3)
    for stat, s in out["same"].items():
        assert s["diff_vs_reference"]["value"] == 0.0, stat
        assert s["diff_vs_reference"]["ci95_low"] == 0.0 and s["diff_vs_reference"]["ci95_high"] == 0.0
        assert s["value"] == out["a"][stat]["value"]
    d = out["b"]["rmse_m"]["diff_vs_reference"]
    assert 0 < d["ci95_low"] < d["value"] < d["ci95_high"]
    # the unpaired intervals overlap, the paired one does not contain 0: pairing is what resolves it
    assert out["b"]["rmse_m"]["ci95_low"] < out["a"]["rmse_m"]["ci95_high"]
    assert out["a"]["rmse_m"]["diff_vs_reference"]["value"] == 0.0


def test_seeded_and_validated() -> None:
    e = np.random.default_rng(2).rayleigh(SIGMA, 100)
    one = paired_bootstrap({"a": e, "b": e * 2}, "a", n_boot=200, seed=5)
    assert one == paired_bootstrap({"a": e, "b": e * 2}, "a", n_boot=200, seed=5)
    assert one != paired_bootstrap({"a": e, "b": e * 2}, "a", n_boot=200, seed=6)
    with pytest.raises(ValueError, match="reference"):
        paired_bootstrap({"a": e}, reference="model")
    with pytest.raises(ValueError, match="no sessions"):
        paired_bootstrap({"a": np.zeros(0)}, reference="a")
