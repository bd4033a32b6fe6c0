"""Classical baselines and paired bootstrap intervals against independent synthetic truths."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.evaluate.classical import KNNFingerprint, LogDistanceNLS, PowerObservations, WeightedCentroid
from heimdall.evaluate.intervals import paired_bootstrap

RX = np.array([[0, 0], [20e3, 0], [0, 20e3], [20e3, 20e3], [10e3, 5e3], [5e3, 15e3]], float)
OFFSETS = np.array([2.0, -1.5, 0.5, -2.0, 1.0, 0.0])


def synthetic(n: int, seed: int, exponent: float = 3.2, noise_db: float = 2.0):
    """Log-distance powers written here independently of the code under test."""
    rng = np.random.default_rng(seed)
    tx = rng.uniform([-2e3, -2e3], [22e3, 22e3], size=(n, 2))
    d = np.maximum(np.linalg.norm(tx[:, None, :] - RX[None], axis=2), 100.0)
    a = rng.uniform(-40, -20, size=(n, 1))  # unknown transmit power per session
    p = a - 10 * exponent * np.log10(d) + OFFSETS + rng.normal(0, noise_db, size=d.shape)
    heard = np.ones_like(p, bool)
    obs = PowerObservations(np.broadcast_to(RX, (n, *RX.shape)).copy(), p, heard, heard.copy())
    return obs, tx


def test_nls_recovers_the_model_and_beats_the_centroid() -> None:
    train, train_truth = synthetic(3000, 0)
    val, val_truth = synthetic(300, 1)
    test, test_truth = synthetic(300, 2)
    nls = LogDistanceNLS()
    nls.fit(train, train_truth)
    assert nls.exponent == pytest.approx(3.2, abs=0.1)
    assert np.allclose(nls.offsets - nls.offsets.mean(), OFFSETS - OFFSETS.mean(), atol=0.5)
    tuning = nls.tune(val, val_truth)
    assert tuning["chosen"]["prior_weight"] in tuning["grid"]["prior_weight"]
    pos, cov = nls.predict(test)
    wc = WeightedCentroid()
    wc.tune(val, val_truth)
    wc_pos, _ = wc.predict(test)
    rmse = lambda p: np.sqrt(np.mean(np.sum((p - test_truth) ** 2, axis=1)))  # noqa: E731
    assert rmse(pos) < 0.7 * rmse(wc_pos)
    assert cov.shape == (300, 2, 2) and np.all(np.linalg.eigvalsh(cov) > 0)


def test_knn_exact_duplicates_return_exact_positions() -> None:
    train, truth = synthetic(500, 3)
    knn = KNNFingerprint()
    knn.fit(train, truth)
    chosen = knn.tune(train, truth)["chosen"]
    assert chosen["k"] == 1
    pos, cov = knn.predict(train)
    assert np.allclose(pos, truth) and cov.shape == (500, 2, 2)


def test_tuning_sees_validation_only() -> None:
    rx = np.array([[0.0, 0.0], [10.0, 0.0]])
    power = np.array([[-80.0, -90.0]] * 4)
    heard = np.ones_like(power, bool)
    obs = PowerObservations(np.broadcast_to(rx, (4, 2, 2)).copy(), power, heard, heard.copy())
    plain = np.array([[5.0, 0.0]] * 4)  # validation truth = the plain centroid
    wc = WeightedCentroid()
    assert wc.tune(obs, plain)["chosen"]["power_weight_exponent"] == 0.0
    # a test split whose truth would prefer exponent 1 does not change the choice made on validation
    pos, _ = wc.predict(obs)
    assert np.allclose(pos, plain)


def test_observation_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="inconsistent observation shapes"):
        PowerObservations(
            np.zeros((2, 3, 2)), np.zeros((2, 4)), np.zeros((2, 4), bool), np.zeros((2, 4), bool)
        )


def test_nls_needs_fitting_and_two_receivers() -> None:
    obs, truth = synthetic(5, 4)
    with pytest.raises(RuntimeError, match="fit"):
        LogDistanceNLS().predict(obs)
    single = PowerObservations(obs.receivers_enu, obs.power_dbm, np.eye(5, 6, dtype=bool), obs.present)
    with pytest.raises(ValueError, match="at least two receivers"):
        LogDistanceNLS().fit(single, truth)


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    e = np.abs(rng.normal(0, 100, 400))
    out = paired_bootstrap({"a": e, "b": e.copy(), "c": e * 2}, reference="a", n_boot=500)
    assert out["b"]["rmse_m"]["diff_vs_reference"]["ci95_low"] == 0.0
    assert out["b"]["rmse_m"]["diff_vs_reference"]["ci95_high"] == 0.0
    assert out["c"]["rmse_m"]["diff_vs_reference"]["ci95_low"] > 0
    assert out["a"]["median_error_m"]["ci95_low"] < np.median(e) < out["a"]["median_error_m"]["ci95_high"]
    hits = 0
    for seed in range(40):  # the mean of |N(0, 100)| is 100·sqrt(2/π): the 95 % interval holds it ~95 %
        sample = np.abs(np.random.default_rng(100 + seed).normal(0, 100, 200))
        ci = paired_bootstrap({"x": sample}, "x", n_boot=400, seed=seed)["x"]["mean_error_m"]
        hits += ci["ci95_low"] <= 100 * np.sqrt(2 / np.pi) <= ci["ci95_high"]
    assert hits >= 33
    with pytest.raises(ValueError, match="reference"):
        paired_bootstrap({"a": e}, reference="z")
