"""The Bayes oracle of `nw-italy-v2` (un-normalised fading, blind SNR rows): its parts, and it is the floor.

Truths come from the simulator (its own fading draws, sessions, transmit powers) and from independent
numerics (adaptive quadrature over the exact mixtures), never from the oracle itself.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import log_ndtr, logsumexp

from heimdall.evaluate import oracle_faded as of
from heimdall.evaluate.baseline_common import PowerObservations
from heimdall.evaluate.classical import LogDistanceNLS, WeightedCentroid
from heimdall.evaluate.classical_knn import KNNFingerprint
from heimdall.evaluate.detection_blur import DetectionBlur, detection_blur
from heimdall.evaluate.fading_residual import _draws, fading_draws, mc_samples
from heimdall.evaluate.intervals import paired_bootstrap
from heimdall.evaluate.oracle import bayes_oracle
from heimdall.simulate.channel import rician_fading
from heimdall.simulate.propagation import MeasurementModel, measurement_model
from heimdall.simulate.scenario import Scenario, load_scenario
from heimdall.simulate.session import simulate_sessions
from heimdall.simulate.world import build_world

DURATION_S = 0.25
N_SAMPLES = round(DURATION_S * 12_500)
N_SESSIONS = 200


@dataclass(frozen=True)
class V2Batch:
    truth_enu: np.ndarray
    tx_power_dbm: np.ndarray
    band: np.ndarray
    doppler_hz: np.ndarray
    k_db: np.ndarray
    signal_strength_db: np.ndarray
    snr_db: np.ndarray
    heard: np.ndarray


def _batch(scenario: Scenario, n: int, seed: int) -> V2Batch:
    sessions = list(simulate_sessions(scenario, n, seed, duration_s=DURATION_S))

    def rx(attr: str) -> np.ndarray:
        return np.array([[getattr(r, attr) for r in s.receivers] for s in sessions])

    return V2Batch(
        truth_enu=np.array([s.enu for s in sessions]),
        tx_power_dbm=np.array([s.tx_power_dbm for s in sessions]),
        band=np.array([s.band_index for s in sessions]),
        doppler_hz=np.array([s.doppler_hz for s in sessions]),
        k_db=rx("rician_k_db"),
        signal_strength_db=rx("signal_strength_db"),
        snr_db=rx("snr_db"),
        heard=rx("heard").astype(bool),
    )


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario("nw-italy-v2")


@pytest.fixture(scope="module")
def model(scenario: Scenario) -> MeasurementModel:
    return measurement_model(build_world(scenario))


@pytest.fixture(scope="module")
def blur(scenario: Scenario, model: MeasurementModel) -> DetectionBlur:
    return detection_blur(
        N_SAMPLES,
        scenario.sample_rate_hz,
        float(np.median(model.noise_floor_dbm)),
        tuple(scenario.transmitter.content.items()),
        scenario.transmitter.fm_deviation_hz,
        scenario.frequency_offset_max_hz,
    )


@pytest.fixture(scope="module")
def test_batch(scenario: Scenario) -> V2Batch:
    return _batch(scenario, N_SESSIONS, seed=101)


def _faded(b: V2Batch, blur: DetectionBlur, sel: slice | np.ndarray = slice(None)) -> of.FadedSessions:
    n = b.doppler_hz[sel].size
    return of.FadedSessions(
        b.doppler_hz[sel], b.k_db[sel], np.full(n, DURATION_S), np.full(n, N_SAMPLES), blur
    )


@pytest.fixture(scope="module")
def posteriors(model: MeasurementModel, test_batch: V2Batch, blur: DetectionBlur) -> list:
    b = test_batch
    return of.faded_bayes_posterior(model, b.band, b.signal_strength_db, b.snr_db, _faded(b, blur), workers=2)


# --- the fading residual is the simulator's ---------------------------------------------------------


@pytest.mark.parametrize(("fd_t", "k_db"), [(0.0, 0.0), (0.3, 5.0), (2.5, 0.0), (2.5, 10.0)])
def test_moments_reproduce_the_simulators_fading(fd_t: float, k_db: float) -> None:
    """mean|h|² from the three per-draw moments equals rician_fading's own recording for that K."""
    n, m, seed = 1000, 200, 7
    draws = _draws(fd_t, n, m, seed)
    h = rician_fading(np.random.default_rng(seed), n, float(n), np.full(m, k_db), fd_t, normalise=False)
    direct = np.mean(np.abs(h.astype(np.complex128)) ** 2, axis=1)
    np.testing.assert_allclose(draws.power([k_db])[0], direct, rtol=2e-5)


@pytest.mark.parametrize("fd_t", [0.0, 1.0, 3.0])
def test_residual_has_unit_mean_power_and_does_not_depend_on_the_rate(fd_t: float) -> None:
    """E[mean|h|²] = 1 (unit-power fading); the reduced-rate Monte Carlo matches 12.5 kHz draw by draw."""
    full = _draws(fd_t, 6250, 2000, 11)
    low = _draws(fd_t, mc_samples(fd_t, 6250), 2000, 11)
    assert mc_samples(fd_t, 6250) < 6250
    for k in (0.0, 10.0):
        g = full.power([k])[0]
        assert abs(g.mean() - 1.0) < 4 * g.std() / math.sqrt(g.size)
        diff = low.residual_db([k])[0] - full.residual_db([k])[0]
        # interpolation nodes fall elsewhere: RMS 0.02 dB next to the 3 dB shadowing, no bias
        assert np.sqrt(np.mean(diff**2)) < 0.02 and abs(diff.mean()) < 0.005 and np.abs(diff).max() < 0.1
    if fd_t == 0.0:  # frozen: a Rayleigh link fades 10 dB down with probability ≈ 1 − e^-0.1 (simulated)
        f = full.residual_db([-300.0])[0]
        assert np.mean(f < -10.0) == pytest.approx(1 - math.exp(-0.1), abs=0.02)
    else:  # averaging over Doppler cycles narrows the residual
        assert full.residual_db([0.0])[0].std() < _draws(0.0, 256, 2000, 11).residual_db([0.0])[0].std()


def test_residual_law_matches_independent_simulator_draws() -> None:
    """Two-sample KS: the cached draws against fresh full-rate simulator recordings of another seed."""
    fd_t, k = 1.2, 4.0
    ours = fading_draws(fd_t / 0.5, 0.5, 6250).residual_db([k])[0]
    h = rician_fading(
        np.random.default_rng(99), 6250, 12_500.0, np.full(1500, k), fd_t / 0.5, normalise=False
    )
    theirs = 10 * np.log10(np.mean(np.abs(h.astype(np.complex128)) ** 2, axis=1))
    assert stats.ks_2samp(ours, theirs).pvalue > 0.01


def test_detection_blur_is_small_and_positive(blur: DetectionBlur) -> None:
    """The blind estimator reads high next to an FM signal (bias > 0) and blurs the step by < 1 dB."""
    assert 0.05 < blur.bias_db < 1.5 and 0.05 < blur.sigma_db < 1.0


# --- (a) the likelihood is the simulator's measurement distribution ---------------------------------


def _model_terms(model, b, blur, i, idx_r):
    """Exact mixtures (no tables) of receiver idx_r in session i: draws F, μ = field + P, threshold."""
    f = fading_draws(b.doppler_hz[i], DURATION_S, N_SAMPLES).residual_db(b.k_db[i, idx_r])
    mu = model.field_db_enu(b.truth_enu[i : i + 1], b.band[i])[0, idx_r] + b.tx_power_dbm[i]
    return f, mu, model.detection_threshold_dbm[idx_r]


def test_heard_power_pit_and_non_detection_rate(
    model: MeasurementModel, scenario: Scenario, blur: DetectionBlur
) -> None:
    """Heard ŝ given the truth: PIT under the threshold-truncated mixture is uniform; P(unheard) calibrated.

    Only receivers for which ≥ 3 *other* receivers are all but sure to hear are used, so the keep rule
    does not select on them.
    """
    b = _batch(scenario, 400, seed=303)
    sigma = model.dynamic_shadowing_sigma_db
    noise_mw = 10 ** (model.noise_floor_dbm / 10)
    n, r = b.snr_db.shape
    p_unheard = np.zeros((n, r))
    laws = {}
    for i in range(n):
        for j in range(r):
            f, mu, thr = _model_terms(model, b, blur, i, [j])
            s_u = math.sqrt(sigma**2 + blur.sigma_db**2)
            p_unheard[i, j] = np.mean(stats.norm.cdf((thr[0] + blur.bias_db - mu[0] - f[0]) / s_u))
            laws[i, j] = (f[0], mu[0], thr[0])
    sure = p_unheard < 1e-3
    free = (sure.sum(axis=1, keepdims=True) - sure) >= 3
    pits = []
    for i, j in zip(*np.nonzero(free & b.heard), strict=True):
        f, mu, thr = laws[i, j]
        s_hat = 10 * np.log10(10 ** (b.signal_strength_db[i, j] / 10) - noise_mw[j]) - mu
        # the draws on a 0.05 dB histogram (a shift ≤ 0.025 dB next to σ = 3 dB), then the mixture
        counts, edges = np.histogram(f, bins=np.arange(f.min() - 0.05, f.max() + 0.1, 0.05))
        nodes, w = (edges[:-1] + 0.025)[counts > 0], counts[counts > 0] / f.size
        lo = thr + blur.bias_db - mu - 10 * blur.sigma_db
        s_grid = np.arange(lo, max(f.max() + 8 * sigma, lo + 1.0), 0.05)
        dens = stats.norm.pdf(s_grid[:, None], nodes[None, :], sigma) @ w
        dens *= stats.norm.cdf((s_grid + mu - thr - blur.bias_db) / blur.sigma_db)  # P(heard | ŝ)
        cdf = np.cumsum(dens)
        pits.append(np.interp(s_hat, s_grid, cdf / cdf[-1]))
    assert len(pits) > 500
    assert stats.kstest(pits, "uniform").pvalue > 0.01
    sel = free & (p_unheard > 0.02) & (p_unheard < 0.98)
    assert sel.sum() > 300
    edges = np.quantile(p_unheard[sel], [0, 0.25, 0.5, 0.75, 1.0])
    for lo, hi in itertools.pairwise(edges):
        cell = sel & (p_unheard >= lo) & (p_unheard <= hi)
        pred, obs = p_unheard[cell].mean(), (~b.heard[cell]).mean()
        assert abs(obs - pred) < 3 * math.sqrt(pred * (1 - pred) / cell.sum()) + 0.01, (lo, hi, obs, pred)


def test_likelihood_matches_adaptive_quadrature(
    model: MeasurementModel, test_batch: V2Batch, blur: DetectionBlur
) -> None:
    """Tables, power grid and Simpson against `quad` over the exact mixtures, near the truth."""
    b = test_batch
    rows = of._validate(
        model, b.band[:8], b.signal_strength_db[:8], b.snr_db[:8], _faded(b, blur, slice(0, 8))
    )
    power = of._PowerGrid.over(model.tx_power_dbm_min, model.tx_power_dbm_max)
    rng = np.random.default_rng(0)
    sigma2 = model.dynamic_shadowing_sigma_db**2
    checked = 0
    for i in range(8):
        ses = of._session(model, rows, i, power)
        enu = np.vstack([b.truth_enu[i], b.truth_enu[i] + rng.normal(0, 8e3, (4, 2))])
        field = model.field_db_enu(enu, ses.band)
        got = of._log_likelihood(field, ses, power, of.EXACT_STRIDE)
        f = fading_draws(b.doppler_hz[i], DURATION_S, N_SAMPLES).residual_db(b.k_db[i, ses.idx])
        s_u = math.sqrt(sigma2 + blur.sigma_db**2)
        ref = None
        for c in range(len(enu)):
            a = ses.anchor - field[c, ses.idx]

            def log_f(p: float, a=a, f=f, h=ses.n_heard, s_u=s_u) -> float:
                x = a - p
                heard = logsumexp(stats.norm.logpdf(x[:h, None], f[:h], math.sqrt(sigma2)), axis=1)
                unheard = logsumexp(log_ndtr((x[h:, None] - f[h:] + blur.bias_db) / s_u), axis=1)
                return float(heard.sum() + unheard.sum() - a.size * math.log(f.shape[1]))

            ps = np.linspace(power.p_min, power.p_max, 69)
            vals = np.array([log_f(p) for p in ps])
            peak = vals.max()
            v, _ = integrate.quad(
                lambda p, peak=peak, log_f=log_f: math.exp(log_f(p) - peak),
                power.p_min,
                power.p_max,
                points=[ps[np.argmax(vals)]],
                limit=200,
                epsrel=1e-9,
            )
            want = math.log(v) + peak - math.log(power.p_max - power.p_min)
            ref = want if ref is None else ref
            if want > ref - 30:  # cells far below the truth's carry no mass whatever their error
                assert got[c] == pytest.approx(want, abs=0.03), (i, c)
                checked += 1
    assert checked >= 16


# --- (b) nothing beats it, (c) it is calibrated -----------------------------------------------------


def _observations(model: MeasurementModel, b: V2Batch) -> PowerObservations:
    n, r = b.signal_strength_db.shape
    enu = np.broadcast_to(model.world.receiver_enu, (n, r, 2)).copy()
    noise_mw = 10 ** (model.noise_floor_dbm / 10)
    signal = np.where(
        b.heard, 10 * np.log10(np.maximum(10 ** (b.signal_strength_db / 10) - noise_mw, 1e-30)), np.nan
    )
    threshold = np.where(b.heard, np.nan, model.detection_threshold_dbm[None, :])
    freq = model.band_frequencies_hz[b.band]
    return PowerObservations(
        enu, b.signal_strength_db.copy(), b.heard.copy(), np.ones((n, r), bool), signal, threshold, freq
    )


def test_no_method_beats_the_faded_oracle(
    model: MeasurementModel, scenario: Scenario, test_batch: V2Batch, posteriors: list
) -> None:
    """The v1-style Gaussian oracle and the classical baselines never beat it beyond bootstrap noise."""
    b = test_batch
    mean = np.array([p.mean_cov()[0] for p in posteriors])
    errors = {"oracle": np.linalg.norm(mean - b.truth_enu, axis=1)}
    gaussian, _ = bayes_oracle(model, b.band, b.signal_strength_db, b.snr_db, workers=2)
    errors["v1_gaussian_oracle"] = np.linalg.norm(gaussian - b.truth_enu, axis=1)
    train, val = _batch(scenario, 600, seed=404), _batch(scenario, 150, seed=505)
    baselines = (
        ("weighted_centroid", WeightedCentroid()),
        ("log_distance_nls", LogDistanceNLS()),
        ("knn_fingerprint", KNNFingerprint()),
    )
    for name, method in baselines:
        method.fit(_observations(model, train), train.truth_enu)
        method.tune(_observations(model, val), val.truth_enu)
        pos, _ = method.predict(_observations(model, b))
        errors[name] = np.linalg.norm(pos - b.truth_enu, axis=1)
    boot = paired_bootstrap(errors, reference="oracle", n_boot=1000, seed=0)
    for name in errors:
        diff = boot[name]["rmse_m"]["diff_vs_reference"]
        assert diff["ci95_high"] >= 0.0, (name, boot[name]["rmse_m"])


def test_faded_posterior_is_calibrated(test_batch: V2Batch, posteriors: list) -> None:
    """Marginal PITs of the truth are uniform; the Gaussian summary's 2σ / 95 % ellipses near nominal."""
    b = test_batch
    pit = np.array(
        [
            [p.weights[p.centres_enu_m[:, k] < t[k]].sum() for k in (0, 1)]
            for p, t in zip(posteriors, b.truth_enu, strict=True)
        ]
    )
    assert stats.kstest(pit[:, 0], "uniform").pvalue > 1e-3
    assert stats.kstest(pit[:, 1], "uniform").pvalue > 1e-3
    mc = [p.mean_cov() for p in posteriors]
    r = b.truth_enu - np.array([m for m, _ in mc])
    d2 = np.einsum("ni,nij,nj->n", r, np.linalg.inv(np.array([c for _, c in mc])), r)
    assert np.mean(d2 <= 4.0) == pytest.approx(0.865, abs=0.07)
    assert np.mean(d2 <= 5.991) == pytest.approx(0.95, abs=0.06)


def test_faded_input_checks(model: MeasurementModel, test_batch: V2Batch, blur: DetectionBlur) -> None:
    b = test_batch
    bad_k = _faded(b, blur, slice(0, 2))
    k = bad_k.rician_k_db.copy()
    k[0, 0] = np.nan
    with pytest.raises(ValueError, match="Rician K"):
        of.faded_bayes_oracle(
            model,
            b.band[:2],
            b.signal_strength_db[:2],
            b.snr_db[:2],
            of.FadedSessions(bad_k.doppler_hz, k, bad_k.duration_s, bad_k.n_samples, blur),
        )
    with pytest.raises(ValueError, match="doppler_hz"):
        of.faded_bayes_oracle(
            model, b.band[:2], b.signal_strength_db[:2], b.snr_db[:2], _faded(b, blur, slice(0, 3))
        )
    m1, c1 = of.faded_bayes_oracle(
        model, b.band[:3], b.signal_strength_db[:3], b.snr_db[:3], _faded(b, blur, slice(0, 3)), workers=1
    )
    m2, c2 = of.faded_bayes_oracle(
        model, b.band[:3], b.signal_strength_db[:3], b.snr_db[:3], _faded(b, blur, slice(0, 3)), workers=2
    )
    assert np.array_equal(m1, m2) and np.array_equal(c1, c2) and np.all(model.area.contains(m1))
