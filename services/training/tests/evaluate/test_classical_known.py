"""Each classical baseline on a case whose answer is known independently of the method.

Powers come from a log-distance model written here; the answers (a transmitter's position, a twin
session's position, the centre of a symmetric network) follow from the construction, never from the
method's own output.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from heimdall.detection import HEARD_SNR_DB
from heimdall.evaluate.baseline_common import observations_from_arrays, tuning_report
from heimdall.evaluate.classical import KNNFingerprint, LogDistanceNLS, PowerObservations, WeightedCentroid
from heimdall.evaluate.localizers import BaselineLocalizer
from heimdall.features import SCALAR_NAMES

RX = np.array([[0, 0], [30e3, 0], [0, 30e3], [30e3, 30e3], [15e3, 8e3], [8e3, 22e3], [24e3, 15e3]], float)


def log_distance(tx: np.ndarray, rx: np.ndarray, p_tx: np.ndarray, exponent: float) -> np.ndarray:
    d = np.maximum(np.linalg.norm(tx[:, None, :] - rx[None], axis=2), 100.0)
    return p_tx[:, None] - 10.0 * exponent * np.log10(d)


def all_heard(
    tx: np.ndarray, power: np.ndarray, rx: np.ndarray = RX, freq: float = 145.5e6
) -> PowerObservations:
    n = len(tx)
    heard = np.ones(power.shape, bool)
    return PowerObservations(
        np.broadcast_to(rx, (n, *rx.shape)).copy(), power, heard, heard.copy(), frequency_hz=np.full(n, freq)
    )


def train_set(n: int, seed: int, exponent: float = 3.5, noise_db: float = 0.0, freq: float = 145.5e6):
    rng = np.random.default_rng(seed)
    tx = rng.uniform([-3e3, -3e3], [33e3, 33e3], size=(n, 2))
    p = rng.uniform(-10.0, 10.0, n)
    power = log_distance(tx, RX, p, exponent) + rng.normal(0, noise_db, (n, len(RX)))
    return all_heard(tx, power, freq=freq), tx


def without(obs: PowerObservations, r: int) -> PowerObservations:
    """The same sessions as if receiver r had never been part of the network."""
    present = obs.present.copy()
    present[:, r] = False
    return PowerObservations(
        obs.receivers_enu,
        np.where(present, obs.power_dbm, np.nan),
        obs.heard & present,
        present,
        obs.signal,
        obs.threshold,
        obs.frequency_hz,
    )


def test_nls_recovers_a_noiseless_position_and_power_within_metres() -> None:
    train, truth = train_set(400, 0)
    nls = LogDistanceNLS()
    nls.fit(train, truth)
    assert nls.exponent == pytest.approx(3.5, abs=1e-6)
    tx = np.array([[12_345.0, 17_890.0], [3_000.0, 25_000.0]])
    query = all_heard(tx, log_distance(tx, RX, np.array([4.0, -7.0]), 3.5))
    pos, cov = nls.predict(query)
    assert np.abs(pos - tx).max() < 5.0
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_a_non_detection_moves_nls_away_from_the_silent_receiver() -> None:
    """Three collinear receivers hear: truth and its mirror image fit equally; a fourth receiver close to
    the mirror image stays silent, so only the truth side remains."""
    rx = np.array([[-10e3, 0.0], [0.0, 0.0], [10e3, 0.0], [2e3, -7e3]])
    rng = np.random.default_rng(1)
    tx_train = rng.uniform([-12e3, -12e3], [12e3, 12e3], size=(300, 2))
    train = all_heard(tx_train, log_distance(tx_train, rx, rng.uniform(-5, 5, 300), 3.0), rx)
    nls = LogDistanceNLS()
    nls.fit(train, tx_train)
    truth, mirror = np.array([[2e3, 6e3]]), np.array([[2e3, -6e3]])
    power = log_distance(truth, rx, np.array([0.0]), 3.0)
    at_mirror = log_distance(mirror, rx, np.array([0.0]), 3.0)[0, 3]
    at_truth = power[0, 3]
    threshold = at_mirror - 10.0  # the silent receiver would have heard a transmitter at the mirror image
    assert at_truth < threshold - 10.0
    heard = np.array([[True, True, True, False]])
    rxs = rx[None].copy()
    silent = PowerObservations(
        rxs, power, heard, np.ones_like(heard), threshold_dbm=np.array([[np.nan] * 3 + [threshold]])
    )
    absent = PowerObservations(rxs, np.where(heard, power, np.nan), heard, heard.copy())
    band = np.zeros(1, np.int64)
    dev = nls._deviance(np.stack([truth, mirror], axis=1), absent, band)
    assert dev[0, 0] == pytest.approx(dev[0, 1], abs=1e-6)  # without the silent receiver: ambiguous
    pos, _ = nls.predict(silent)
    assert np.linalg.norm(pos[0] - truth[0]) < 20.0


def test_a_silent_receiver_pushes_the_estimate_out_of_its_hearing_range() -> None:
    """Heard powers come from T exactly (heard-only answer: T); a receiver 1 km from T that would have
    heard T 15 dB above its threshold stayed silent, so the estimate leaves its range: the path loss
    with the profiled power must put its signal no more than ~2σ above the threshold there."""
    rx = np.array([[0.0, 0.0], [20e3, 0.0], [10e3, 18e3], [11e3, 6e3]])
    rng = np.random.default_rng(2)
    tx_train = rng.uniform([-2e3, -2e3], [22e3, 20e3], size=(400, 2))
    power_train = log_distance(tx_train, rx, rng.uniform(-5, 5, 400), 3.0)
    nls = LogDistanceNLS()
    nls.fit(all_heard(tx_train, power_train, rx), tx_train)
    t = np.array([[10e3, 6e3]])
    power = log_distance(t, rx, np.array([0.0]), 3.0)
    heard = np.array([[True, True, True, False]])
    threshold = power[0, 3] - 15.0
    absent = PowerObservations(rx[None].copy(), np.where(heard, power, np.nan), heard, heard.copy())
    thresholds = np.array([[np.nan, np.nan, np.nan, threshold]])
    silent = PowerObservations(rx[None].copy(), power, heard, np.ones_like(heard), threshold_dbm=thresholds)
    assert np.linalg.norm(nls.predict(absent)[0][0] - t[0]) < 50.0
    pos = nls.predict(silent)[0][0]
    d_silent = np.linalg.norm(pos - rx[3])
    assert d_silent > 2.0 * np.linalg.norm(t[0] - rx[3])
    at_pos = log_distance(pos[None], rx, np.array([0.0]), 3.0)[0]
    p_hat = np.mean(power[0, :3] - at_pos[:3])  # the transmit power that best explains the heard rows there
    assert p_hat + at_pos[3] < threshold + 2.0 * float(nls.sigmas[0]) + 3.0


def test_nls_removes_noise_power_before_fitting() -> None:
    """Rows carry total power and SNR; the fit on the signal recovers the true exponent exactly."""
    train, truth = train_set(300, 2, exponent=3.0)
    noise = -140.0
    snr = train.signal - noise
    total = 10 * np.log10(10 ** (train.signal / 10) + 10 ** (noise / 10))
    n = len(truth)
    arrays = _arrays(total, snr, truth, np.full(n, 145.5e6))
    obs = observations_from_arrays(arrays, np.arange(n))
    heard = snr >= HEARD_SNR_DB
    assert np.array_equal(obs.heard, heard) and 0.05 < 1 - heard.mean() < 0.9
    assert np.allclose(obs.signal[heard], train.signal[heard])
    assert np.allclose(obs.threshold[~heard], noise + HEARD_SNR_DB)
    nls = LogDistanceNLS()
    nls.fit(obs, truth)
    assert nls.exponent == pytest.approx(3.0, abs=1e-6)
    raw = LogDistanceNLS()  # the same fit on total power (noise left in) is biased
    raw.fit(PowerObservations(obs.receivers_enu, total, obs.heard, obs.present), truth)
    assert abs(raw.exponent - 3.0) > 0.05


def test_nls_fits_each_band_its_own_path_loss() -> None:
    vhf, vhf_truth = train_set(300, 3, exponent=3.0, freq=145.5e6)
    uhf, uhf_truth = train_set(300, 4, exponent=4.0, freq=433.5e6)
    both = PowerObservations(
        np.concatenate([vhf.receivers_enu, uhf.receivers_enu]),
        np.concatenate([vhf.power_dbm, uhf.power_dbm]),
        np.concatenate([vhf.heard, uhf.heard]),
        np.concatenate([vhf.present, uhf.present]),
        frequency_hz=np.concatenate([vhf.frequency_hz, uhf.frequency_hz + 20e3]),
    )
    nls = LogDistanceNLS()
    nls.fit(both, np.concatenate([vhf_truth, uhf_truth]))
    assert np.allclose(nls.exponents, [3.0, 4.0], atol=1e-6)


def _arrays(power: np.ndarray, snr: np.ndarray, truth: np.ndarray, freq: np.ndarray) -> SimpleNamespace:
    n = len(truth)
    return SimpleNamespace(
        row_power_db=power,
        row_snr_db=snr,
        scalars=np.full((n, len(RX), len(SCALAR_NAMES)), np.nan),
        mask=np.ones((n, len(RX)), bool),
        receiver_enu_m=np.broadcast_to(RX, (n, *RX.shape)).copy(),
        target_enu_m=truth,
        frequency_hz=freq,
        has_spectrogram=True,
    )


def test_knn_finds_the_twin_despite_a_constant_power_offset() -> None:
    train, truth = train_set(500, 5, noise_db=3.0)
    knn = KNNFingerprint()
    knn.fit(train, truth)
    twins = np.array([3, 77, 250, 499])
    query = all_heard(truth[twins], train.signal[twins] + 7.5)  # an unknown +7.5 dB on every receiver
    knn.params = {"k": 1, "weighting": "uniform", "offset": "fitted", "band": "per_band"}
    pos, _ = knn.predict(query)
    assert np.array_equal(pos, truth[twins])
    knn.params = {**knn.params, "offset": "none"}  # without the offset the twins are not found
    assert not np.allclose(knn.predict(query)[0], truth[twins])


def test_knn_under_outage_equals_knn_without_that_receiver() -> None:
    train, truth = train_set(600, 6, noise_db=4.0)
    val, val_truth = train_set(150, 7, noise_db=4.0)
    full = KNNFingerprint()
    full.fit(train, truth)
    full.tune(val, val_truth)
    for r in (0, 4):
        gone = KNNFingerprint()
        gone.fit(without(train, r), truth)
        gone.params, gone.cov_scale, gone.floor_m = full.params, full.cov_scale, full.floor_m
        pos, cov = full.predict(without(val, r))
        want_pos, want_cov = gone.predict(without(val, r))
        assert np.allclose(pos, want_pos) and np.allclose(cov, want_cov)
        assert not np.allclose(pos, full.predict(val)[0])  # the receiver mattered


def test_knn_matches_within_the_carrier_band() -> None:
    """Band-B references are exact signal copies of band-A ones at other positions: per band ignores them."""
    a, a_truth = train_set(200, 8, noise_db=2.0, freq=145.5e6)
    b_truth = a_truth[::-1].copy()
    b = all_heard(b_truth, a.signal.copy(), freq=433.5e6)
    ref = PowerObservations(
        np.concatenate([a.receivers_enu, b.receivers_enu]),
        np.concatenate([a.power_dbm, b.power_dbm]),
        np.concatenate([a.heard, b.heard]),
        np.concatenate([a.present, b.present]),
        frequency_hz=np.concatenate([a.frequency_hz, b.frequency_hz]),
    )
    knn = KNNFingerprint()
    knn.fit(ref, np.concatenate([a_truth, b_truth]))
    knn.params = {"k": 1, "weighting": "uniform", "offset": "none", "band": "per_band"}
    query = all_heard(b_truth[:20], a.signal[:20], freq=433.5e6)
    assert np.array_equal(knn.predict(query)[0], b_truth[:20])


def test_centroid_of_symmetric_equal_powers_is_the_centre() -> None:
    rx = np.array([[0.0, 0.0], [10e3, 0.0], [0.0, 10e3], [10e3, 10e3]]) + np.array([3e3, -2e3])
    obs = all_heard(np.zeros((1, 2)), np.full((1, 4), -90.0), rx)
    wc = WeightedCentroid()
    for exponent in (0.0, 0.5, 3.0):
        wc.exponent = exponent
        assert np.allclose(wc.predict(obs)[0], [[8e3, 3e3]])


def test_grid_edges_are_reported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Truth at the loudest receiver: the largest exponent wins, on the grid's open edge."""
    rng = np.random.default_rng(9)
    power = rng.uniform(-100, -60, (50, len(RX)))
    truth = RX[np.argmax(power, axis=1)]
    tuning = WeightedCentroid().tune(all_heard(truth, power), truth)
    assert tuning["chosen"]["power_weight_exponent"] == tuning["grid"]["power_weight_exponent"][-1]
    assert tuning["on_grid_edge"] == ["power_weight_exponent = 5 is on grid edge (grid 0 … 5)"]
    # a choice at the end of the parameter's domain (exponent 0: the plain centroid) is not an edge
    report = tuning_report({"g": (0.0, 1.0, 2.0)}, {"g": 0.0}, {"g": (0.0, None)})
    assert report["on_grid_edge"] == []
    n = len(truth)
    scalars = np.full((n, len(RX), len(SCALAR_NAMES)), np.nan)
    arrays = SimpleNamespace(
        row_power_db=power,
        scalars=scalars,
        mask=np.ones((n, len(RX)), bool),
        receiver_enu_m=np.broadcast_to(RX, (n, *RX.shape)).copy(),
        target_enu_m=truth,
    )
    with caplog.at_level(logging.WARNING, logger="heimdall.evaluate.baselines"):
        BaselineLocalizer("weighted_centroid", WeightedCentroid()).tune(arrays, np.arange(n))
    assert "weighted_centroid: power_weight_exponent = 5 is on grid edge" in caplog.text
