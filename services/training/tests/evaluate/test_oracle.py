"""The Bayes oracle: its likelihood against the simulator, its calibration, and that nothing beats it.

Truths here come from the simulator's own draws (positions, transmit powers, session-mean powers)
and from independent numerics (adaptive quadrature, exhaustive grids), never from the oracle itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import log_ndtr

from heimdall.evaluate import oracle, oracle_grid
from heimdall.evaluate.classical import KNNFingerprint, LogDistanceNLS, PowerObservations, WeightedCentroid
from heimdall.evaluate.intervals import paired_bootstrap
from heimdall.evaluate.oracle import GridPosterior, bayes_oracle, bayes_posterior
from heimdall.simulate.propagation import MeasurementModel, measurement_model
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import SimulatedSession, simulate_sessions
from heimdall.simulate.world import build_world

DURATION_S = 0.1
N_CALIBRATION = 300
SURE_MARGIN_DB = 12.0  # 4σ above the threshold: heard with probability 1 − Φ(−4) = 1 − 3e-5


@dataclass(frozen=True)
class Batch:
    """Simulated sessions as the arrays the oracle and the baselines read."""

    truth_enu: np.ndarray  # (N, 2)
    tx_power_dbm: np.ndarray  # (N,)
    band: np.ndarray  # (N,)
    signal_strength_db: np.ndarray  # (N, R)
    snr_db: np.ndarray  # (N, R)
    heard: np.ndarray  # (N, R)
    mean_power_dbm: np.ndarray  # (N, R) s_r, the simulator's truth


def batch(sessions: list[SimulatedSession]) -> Batch:
    def rx(attr: str) -> np.ndarray:
        return np.array([[getattr(r, attr) for r in s.receivers] for s in sessions])

    return Batch(
        truth_enu=np.array([s.enu for s in sessions]),
        tx_power_dbm=np.array([s.tx_power_dbm for s in sessions]),
        band=np.array([s.band_index for s in sessions]),
        signal_strength_db=rx("signal_strength_db"),
        snr_db=rx("snr_db"),
        heard=rx("heard").astype(bool),
        mean_power_dbm=rx("mean_power_dbm"),
    )


def simulated(n: int, seed: int) -> Batch:
    return batch(list(simulate_sessions(load_scenario("nw-italy-v1"), n, seed, duration_s=DURATION_S)))


def observations(model: MeasurementModel, b: Batch) -> PowerObservations:
    n, r = b.signal_strength_db.shape
    enu = np.broadcast_to(model.world.receiver_enu, (n, r, 2)).copy()
    return PowerObservations(enu, b.signal_strength_db.copy(), b.heard.copy(), np.ones((n, r), bool))


@pytest.fixture(scope="module")
def model() -> MeasurementModel:
    return measurement_model(build_world(load_scenario("nw-italy-v1")))


@pytest.fixture(scope="module")
def train_batch() -> Batch:
    """3,000 sessions of another seed: the baselines' training split and the likelihood checks' sample."""
    return simulated(3000, seed=303)


@pytest.fixture(scope="module")
def test_batch() -> Batch:
    return simulated(N_CALIBRATION, seed=101)


@pytest.fixture(scope="module")
def posteriors(model: MeasurementModel, test_batch: Batch) -> list[GridPosterior]:
    b = test_batch
    return bayes_posterior(model, b.band, b.signal_strength_db, b.snr_db)


@pytest.fixture(scope="module")
def moments(posteriors: list[GridPosterior]) -> tuple[np.ndarray, np.ndarray]:
    mc = [p.mean_cov() for p in posteriors]
    return np.array([m for m, _ in mc]), np.array([c for _, c in mc])


# --- (a) the likelihood is the simulator's measurement distribution -------------------------------


def test_measured_power_residuals_have_the_assumed_spread(
    model: MeasurementModel, train_batch: Batch
) -> None:
    """ŝ − (field(x) + P) over receivers sure to hear: N(0, 3²); unheard rate = mean predicted Φ."""
    b = train_batch
    field = model.field_db_enu(b.truth_enu, b.band)  # the oracle's field at the true positions
    mean = field + b.tx_power_dbm[:, None]
    # the field the oracle uses is the one the simulator drew around (s_r = field + P + ε, ε ~ N(0, 9))
    eps = b.mean_power_dbm - mean
    assert abs(eps.mean()) < 0.2 and abs(eps.std() - 3.0) < 0.2
    margin = mean - model.detection_threshold_dbm[None, :]

    # Receivers ≥ 4σ above the threshold hear whatever their ε, and the keep rule (≥ 3 heard) does not
    # select on them either, so their residuals are an unselected sample of ε plus measurement noise.
    sure = margin >= SURE_MARGIN_DB
    assert sure.sum() > 6000 and b.heard[sure].mean() > 0.999
    noise_mw = 10 ** (model.noise_floor_dbm / 10)
    excess = 10 ** (b.signal_strength_db / 10) - noise_mw[None, :]
    s_hat = np.where(b.heard, 10 * np.log10(np.where(b.heard, excess, 1.0)), np.nan)
    res = (s_hat - mean)[sure & b.heard]
    assert abs(res.mean()) < 0.15
    assert abs(res.std() - model.dynamic_shadowing_sigma_db) < 0.15
    # a heard row reveals s_r to within the measurement blur (< 0.1 dB at T = 1250 samples)
    assert np.abs(s_hat - b.mean_power_dbm)[b.heard].std() < 0.1

    # Non-detection: where ≥ 3 *other* receivers are sure to hear, keeping the session does not depend
    # on this receiver, so its unheard rate must match the oracle's P(unheard) = Φ((T − f − P)/σ).
    others_sure = sure.sum(axis=1, keepdims=True) - sure >= 3
    p_unheard = stats.norm.cdf(-margin / model.dynamic_shadowing_sigma_db)
    sel = others_sure & (p_unheard > 1e-4) & (p_unheard < 1 - 1e-4)
    assert sel.sum() > 2000
    assert abs((~b.heard[sel]).mean() - p_unheard[sel].mean()) < 0.02
    # and the detection step sits where the oracle puts it: s_r against noise floor + 6 dB
    wrong = b.heard != (b.mean_power_dbm >= model.detection_threshold_dbm[None, :])
    near = np.abs(b.mean_power_dbm - model.detection_threshold_dbm[None, :]) < 0.5
    assert np.all(near[wrong]) and wrong.mean() < 0.005


def _reference_log_likelihood(ses: oracle._Session, field_r: np.ndarray, p_min: float, p_max: float) -> float:
    """log p(data | x) by adaptive quadrature over P, written directly from the measurement model."""

    def log_f(p: float) -> float:
        heard = np.sum(stats.norm.logpdf(ses.s_hat, field_r[ses.heard] + p, 1 / np.sqrt(ses.prec)))
        return heard + np.sum(log_ndtr((ses.threshold - field_r[ses.unheard] - p) / ses.sigma_u))

    grid = np.linspace(p_min, p_max, 341)
    vals = np.array([log_f(p) for p in grid])
    peak = vals.max()
    val, _ = integrate.quad(
        lambda p: math.exp(log_f(p) - peak),
        p_min,
        p_max,
        points=[grid[np.argmax(vals)]],
        limit=400,
        epsabs=0,
        epsrel=1e-10,
    )
    return math.log(val) + peak - math.log(p_max - p_min)


def test_likelihood_matches_adaptive_quadrature(model: MeasurementModel, test_batch: Batch) -> None:
    """The closed-form heard part, the power window and the Gauss–Legendre average, against `quad`."""
    b = test_batch
    rng = np.random.default_rng(0)
    p_min, p_max = model.tx_power_dbm_min, model.tx_power_dbm_max
    picks = list(range(12))
    ss, snr = b.signal_strength_db[picks].copy(), b.snr_db[picks].copy()
    ss[0], snr[0] = np.nan, np.nan  # nothing left: P uniform, Φ terms only
    snr[0, :3] = -30.0
    ss[0, :3] = model.noise_floor_dbm[:3]
    sessions = oracle._prepare(model, b.band[picks], ss, snr, None)
    checked = 0
    for i, ses in zip(picks, sessions, strict=True):
        enu = b.truth_enu[i] + rng.normal(0, 15e3, (6, 2))  # near the truth and out to 30 km
        enu = np.vstack([b.truth_enu[i], enu, model.world.receiver_enu[ses.unheard][:1]])
        field = model.field_db_enu(enu, ses.band)
        got = oracle._log_likelihood(field, ses, p_min, p_max)[0]
        for k in range(len(enu)):
            want = _reference_log_likelihood(ses, field[k], p_min, p_max)
            if want > -200:  # cells at e^-200 carry no posterior mass whatever their error
                assert got[k] == pytest.approx(want, abs=5e-3), (i, k)
                checked += 1
    assert checked >= 60


def test_refinement_matches_an_exhaustive_fine_grid(
    model: MeasurementModel, test_batch: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coarse screening + local refinement against every 250 m cell evaluated."""
    b = test_batch
    sel = slice(0, 3)
    args = (model, b.band[sel], b.signal_strength_db[sel], b.snr_db[sel])
    mean, cov = bayes_oracle(*args)
    monkeypatch.setattr(oracle, "SCREEN_NATS", math.inf)
    monkeypatch.setattr(oracle_grid, "REFINE_NATS", math.inf)  # where refinement is decided
    ref_mean, ref_cov = bayes_oracle(*args)
    assert np.linalg.norm(mean - ref_mean, axis=1).max() < 200.0
    np.testing.assert_allclose(
        np.trace(cov, axis1=1, axis2=2), np.trace(ref_cov, axis1=1, axis2=2), rtol=0.03
    )


# --- (b) calibration ------------------------------------------------------------------------------


def test_posterior_is_calibrated(
    model: MeasurementModel,
    test_batch: Batch,
    posteriors: list[GridPosterior],
    moments: tuple[np.ndarray, np.ndarray],
) -> None:
    """A correct posterior is calibrated: its probability integral transforms are uniform.

    The posterior is far from Gaussian here (RSS ranges of tens of km, curved and multi-lobed), so
    its Gaussian summary's 1σ ellipse holds ~48 % of the posterior mass, not 39.3 %: the observed
    1σ coverage must match that predicted mass, while 2σ and 95 % are close to nominal.
    """
    b = test_batch
    truth = b.truth_enu
    pit = np.array(
        [
            [p.weights[p.centres_enu_m[:, k] < t[k]].sum() for k in (0, 1)]
            for p, t in zip(posteriors, truth, strict=True)
        ]
    )
    east, north = pit.T
    assert stats.kstest(east, "uniform").pvalue > 1e-3
    assert stats.kstest(north, "uniform").pvalue > 1e-3

    # highest-posterior-density mass above the truth's own density (point evaluation, not its cell)
    sessions = oracle._prepare(model, b.band, b.signal_strength_db, b.snr_db, None)
    p_min, p_max = model.tx_power_dbm_min, model.tx_power_dbm_max
    hpd = []
    for p, t, ses in zip(posteriors, truth, sessions, strict=True):
        log_dens = np.log(p.weights) - np.log(p.cell_size_m.prod(axis=1))
        j = int(np.argmax(log_dens))
        ll = oracle._log_likelihood(
            model.field_db_enu(np.stack([p.centres_enu_m[j], t]), ses.band), ses, p_min, p_max
        )
        hpd.append(p.weights[log_dens > log_dens[j] + ll[0][1] - ll[0][0]].sum())
    hpd_mass = np.array(hpd)
    assert stats.kstest(hpd_mass, "uniform").pvalue > 1e-3
    assert np.mean(hpd_mass <= 0.5) == pytest.approx(0.5, abs=0.08)
    assert np.mean(hpd_mass <= 0.9) == pytest.approx(0.9, abs=0.05)

    mean, cov = moments
    inv = np.linalg.inv(cov)
    r = truth - mean
    d2 = np.einsum("ni,nij,nj->n", r, inv, r)
    predicted_1sigma = np.mean(
        [
            p.weights[np.einsum("ni,ij,nj->n", p.centres_enu_m - m, c, p.centres_enu_m - m) <= 1.0].sum()
            for p, m, c in zip(posteriors, mean, inv, strict=True)
        ]
    )
    assert np.mean(d2 <= 1.0) == pytest.approx(predicted_1sigma, abs=0.06)
    assert np.mean(d2 <= 1.0) > 0.393 - 0.06
    assert np.mean(d2 <= 4.0) == pytest.approx(0.865, abs=0.06)
    assert np.mean(d2 <= 5.991) == pytest.approx(0.95, abs=0.06)


# --- (c) no method beats it -----------------------------------------------------------------------


def test_no_baseline_beats_the_oracle(
    model: MeasurementModel, train_batch: Batch, test_batch: Batch, moments: tuple[np.ndarray, np.ndarray]
) -> None:
    """Baselines fitted on another seed's sessions and tuned on a third never beat the oracle's RMSE."""
    train, val = train_batch, simulated(300, seed=404)
    test = test_batch
    errors = {"oracle": np.linalg.norm(moments[0] - test.truth_enu, axis=1)}
    for name, method in (
        ("weighted_centroid", WeightedCentroid()),
        ("log_distance_nls", LogDistanceNLS()),
        ("knn_fingerprint", KNNFingerprint()),
    ):
        method.fit(observations(model, train), train.truth_enu)
        method.tune(observations(model, val), val.truth_enu)
        pos, _ = method.predict(observations(model, test))
        errors[name] = np.linalg.norm(pos - test.truth_enu, axis=1)
    boot = paired_bootstrap(errors, reference="oracle", n_boot=1000, seed=0)
    for name in errors:
        diff = boot[name]["rmse_m"]["diff_vs_reference"]
        assert diff["ci95_high"] >= 0.0, (name, boot[name]["rmse_m"])  # not better beyond sampling noise
    assert boot["knn_fingerprint"]["rmse_m"]["value"] > boot["oracle"]["rmse_m"]["value"]


# --- (d) determinism and shapes, (e) bad input ----------------------------------------------------


def test_deterministic_shapes_and_workers(model: MeasurementModel, test_batch: Batch) -> None:
    b = test_batch
    args = (model, b.band[:6], b.signal_strength_db[:6], b.snr_db[:6])
    m1, c1 = bayes_oracle(*args, workers=1)
    m2, c2 = bayes_oracle(*args, workers=3)
    assert np.array_equal(m1, m2) and np.array_equal(c1, c2)
    assert m1.shape == (6, 2) and c1.shape == (6, 2, 2)
    np.testing.assert_allclose(c1, np.swapaxes(c1, 1, 2))
    assert np.all(np.linalg.eigvalsh(c1) > 0)
    assert np.all(model.area.contains(m1))
    empty = bayes_oracle(model, np.zeros(0, int), np.zeros((0, 7)), np.zeros((0, 7)))
    assert empty[0].shape == (0, 2) and empty[1].shape == (0, 2, 2)


def test_missing_receivers_and_measurement_blur(model: MeasurementModel, test_batch: Batch) -> None:
    b = test_batch
    ss, snr = b.signal_strength_db[:4].copy(), b.snr_db[:4].copy()
    base = bayes_oracle(model, b.band[:4], ss, snr)
    ss[:, 2] = snr[:, 2] = np.nan  # receiver outage: its row is missing, so it carries no information
    m, c = bayes_oracle(model, b.band[:4], ss, snr)
    assert np.all(np.isfinite(m)) and np.all(np.isfinite(c)) and not np.allclose(m, base[0])
    blurred = bayes_oracle(model, b.band[:4], b.signal_strength_db[:4], b.snr_db[:4], n_samples=1250)
    assert np.linalg.norm(blurred[0] - base[0], axis=1).max() < 300.0  # ~0.1 dB next to 3 dB: a nudge


@pytest.mark.parametrize(
    ("band", "ss_shape", "snr_shape", "match"),
    [
        (np.zeros(3, int), (3, 7), (3, 6), "must both be"),
        (np.zeros(3, int), (3, 6), (3, 6), "expected 7 receivers"),
        (np.zeros(2, int), (3, 7), (3, 7), "band_index must be"),
        (np.zeros(3), (3, 7), (3, 7), "band_index must be"),
        (np.full(3, 2), (3, 7), (3, 7), "out of range"),
        (np.zeros(3, int), (7,), (7,), "must both be"),
    ],
)
def test_bad_input_raises(
    model: MeasurementModel, band: np.ndarray, ss_shape: tuple, snr_shape: tuple, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        bayes_oracle(model, band, np.full(ss_shape, -100.0), np.full(snr_shape, 10.0))


def test_bad_values_and_settings_raise(model: MeasurementModel) -> None:
    band, ss, snr = np.zeros(1, int), np.full((1, 7), -100.0), np.full((1, 7), 10.0)
    with pytest.raises(ValueError, match="cell_m"):
        bayes_oracle(model, band, ss, snr, cell_m=2000.0)
    with pytest.raises(ValueError, match="refine"):
        bayes_oracle(model, band, ss, snr, refine=0)
    with pytest.raises(ValueError, match="finite"):
        bayes_oracle(model, band, np.full((1, 7), np.inf), snr)
    with pytest.raises(ValueError, match="not above its noise floor"):
        bayes_oracle(model, band, np.full((1, 7), -140.0), snr)
