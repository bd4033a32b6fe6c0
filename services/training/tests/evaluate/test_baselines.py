"""Classical baselines (`heimdall.evaluate.classical`): tuning sees validation only; exact fingerprints.

Synthetic powers come from a log-distance model written here, independently of the code under test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from heimdall.evaluate.classical import KNNFingerprint, LogDistanceNLS, PowerObservations, WeightedCentroid

RX = np.array([[0, 0], [30e3, 0], [0, 30e3], [30e3, 30e3], [15e3, 8e3], [8e3, 22e3], [24e3, 15e3]], float)
OFFSETS = np.array([1.5, -2.0, 0.5, -1.0, 2.0, 0.0, -1.0])
THRESHOLD_DBM = -120.0


def synthetic(
    n: int, seed: int, exponent: float = 3.5, noise_db: float = 3.0
) -> tuple[PowerObservations, Any]:
    """Unknown power per session, log-distance loss, offsets, shadowing; unheard below a threshold.

    Like the simulator, only sessions heard by at least three receivers are kept (drawn until n are).
    """
    rng = np.random.default_rng(seed)
    tx = rng.uniform([-5e3, -5e3], [35e3, 35e3], size=(3 * n, 2))
    d = np.maximum(np.linalg.norm(tx[:, None, :] - RX[None], axis=2), 100.0)
    p_tx = rng.uniform(30.0, 47.0, size=(3 * n, 1))
    power = p_tx + 5.0 - 10 * exponent * np.log10(d) + OFFSETS + rng.normal(0, noise_db, d.shape)
    heard = power >= THRESHOLD_DBM
    keep = np.flatnonzero(heard.sum(axis=1) >= 3)[:n]
    assert keep.size == n
    power, heard, tx = power[keep], heard[keep], tx[keep]
    rx = np.broadcast_to(RX, (n, *RX.shape)).copy()
    return PowerObservations(rx, np.where(heard, power, -127.0), heard, np.ones_like(heard)), tx


def rmse(pos: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((pos - truth) ** 2, axis=1))))


def _set(method: Any, name: str, value: Any) -> None:
    if isinstance(method, KNNFingerprint):
        method.params = dict(value)
    else:
        setattr(method, name, value)


@pytest.mark.parametrize(
    ("factory", "attr", "a", "b"),
    [
        (WeightedCentroid, "exponent", 0.0, 1.0),
        (LogDistanceNLS, "lam", 0.0, 1.0),
        (
            KNNFingerprint,
            "params",
            {"k": 1, "weighting": "uniform", "offset": "none", "band": "per_band"},
            {"k": 30, "weighting": "uniform", "offset": "fitted", "band": "per_band"},
        ),
    ],
)
def test_tuning_uses_validation_only(factory: type, attr: str, a: Any, b: Any) -> None:
    """Validation truths that favour setting `a` and test truths that favour `b`: `a`'s twin is chosen.

    Truths are the method's own predictions under each setting, so each split has a zero-error setting;
    the tuner, shown validation only, must pick one that reproduces `a` and so loses on test.
    """
    train, train_truth = synthetic(600, 0)
    obs, _ = synthetic(150, 1)
    method = factory()
    method.fit(train, train_truth)
    _set(method, attr, a)
    val_truth = method.predict(obs)[0]
    _set(method, attr, b)
    test_truth = method.predict(obs)[0]
    assert rmse(val_truth, test_truth) > 100.0  # the two settings really disagree

    tuning = method.tune(obs, val_truth)
    chosen = tuning["chosen"]
    for key, values in tuning["grid"].items():
        if key in chosen:
            assert chosen[key] in values
    pos = method.predict(obs)[0]
    assert rmse(pos, val_truth) == pytest.approx(0.0, abs=1e-6)
    assert rmse(pos, test_truth) > 100.0


def test_knn_exact_fingerprints_return_their_positions() -> None:
    """A query equal to a reference fingerprint lands on it (k = 1 or inverse-distance weighting)."""
    train, truth = synthetic(400, 2)
    knn = KNNFingerprint()
    knn.fit(train, truth)
    for params in (
        {"k": 1, "weighting": "uniform", "offset": "none", "band": "per_band"},
        {"k": 8, "weighting": "inverse_distance", "offset": "fitted", "band": "pooled"},
    ):
        knn.params = params
        pos, cov = knn.predict(train)
        assert np.abs(pos - truth).max() < (1.0 if params["k"] == 1 else 50.0)
        assert cov.shape == (400, 2, 2) and np.all(np.linalg.eigvalsh(cov) > 0)


def test_nls_fits_the_path_loss_under_censoring_and_beats_the_centroid() -> None:
    """Exponent and offsets from train positions; localisation better than the tuned centroid."""
    train, train_truth = synthetic(3000, 3)
    val, val_truth = synthetic(300, 4)
    test, test_truth = synthetic(300, 5)
    assert 0.85 < train.heard.mean() < 0.98  # ~8 % unheard: the fit sees (mildly) censored data
    nls = LogDistanceNLS()
    nls.fit(train, train_truth)
    assert nls.exponent == pytest.approx(3.5, abs=0.1)
    assert np.allclose(nls.offsets - nls.offsets.mean(), OFFSETS - OFFSETS.mean(), atol=0.5)
    nls.tune(val, val_truth)
    wc = WeightedCentroid()
    wc.tune(val, val_truth)
    assert rmse(nls.predict(test)[0], test_truth) < rmse(wc.predict(test)[0], test_truth)
