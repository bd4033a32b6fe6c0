"""The radio-map posterior: exact pieces (log Φ, screening), what censoring and the field buy, I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr as scipy_log_ndtr
from synthetic import RECEIVERS, draw

from heimdall.data.normalization import NormStats
from heimdall.radiomap.fit import FieldSettings, fit_radio_map, physics_only
from heimdall.radiomap.localizer import RadioMapLocalizer, log_ndtr
from heimdall.radiomap.observations import observe
from heimdall.radiomap.tune import predict

torch.set_num_threads(1)


def _stats(scalars: np.ndarray, mask: np.ndarray) -> NormStats:
    return NormStats.fit(np.zeros((*mask.shape, 0, 0), np.float32), scalars, mask)


def _localize(m, world, stats: NormStats) -> tuple[np.ndarray, np.ndarray]:
    loc = RadioMapLocalizer(m, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    _, sc = stats.apply(np.zeros((*world.mask.shape, 0, 0), np.float32), world.scalars, world.mask)
    return predict(loc, sc, world.mask, world.frequency)


def _rmse(pos: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((pos - truth) ** 2, axis=1))))


@pytest.fixture(scope="module")
def world():
    train, test = draw(3000, seed=5), draw(300, seed=6)
    stats = _stats(train.scalars, train.mask)
    obs = observe(train.scalars, train.mask, RECEIVERS)
    fitted = fit_radio_map(obs, train.truth, train.frequency, FieldSettings(2500.0, 1.0))
    return train, test, stats, fitted


def test_log_ndtr_matches_scipy_everywhere() -> None:
    z = np.linspace(-60.0, 10.0, 20001)
    ours = log_ndtr(torch.tensor(z, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(ours, scipy_log_ndtr(z), atol=2e-3, rtol=1e-4)


def test_fitted_map_locates_close_to_the_truth(world) -> None:
    _, test, stats, fitted = world
    pos, cov = _localize(fitted, test, stats)
    err = np.linalg.norm(pos - test.truth, axis=1)
    assert np.median(err) < 5000.0  # 2 dB on 5 receivers ~25 km away, unknown power: a few km
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    # the ellipse is honest: about 39 % of truths inside 1σ (Mahalanobis² ≤ 1)
    d = pos - test.truth
    m2 = np.einsum("ni,nij,nj->n", d, np.linalg.inv(cov), d)
    assert 0.25 < np.mean(m2 <= 1.0) < 0.55


def test_the_learnt_field_beats_physics_only(world) -> None:
    train, test, stats, fitted = world
    physics = physics_only(RECEIVERS, train.truth)
    assert _rmse(_localize(fitted, test, stats)[0], test.truth) < 0.9 * _rmse(
        _localize(physics, test, stats)[0], test.truth
    )


def test_unheard_receivers_narrow_the_posterior(world) -> None:
    """A receiver that heard nothing says the transmitter is far from it: dropping that reading hurts."""
    _, test, stats, fitted = world
    weak = (test.scalars[..., 3] < 0.5).any(axis=1)
    assert weak.sum() > 20
    full = _localize(fitted, test, stats)[0]
    blind = draw(300, seed=6)
    blind.mask = blind.mask & (blind.scalars[..., 3] >= 0.5)  # the unheard rows are simply missing
    without = _localize(fitted, blind, stats)[0]
    assert _rmse(full[weak], test.truth[weak]) < _rmse(without[weak], test.truth[weak])


def test_screening_equals_the_full_posterior(world) -> None:
    _, test, stats, fitted = world
    loc = RadioMapLocalizer(fitted, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    _, sc = stats.apply(np.zeros((*test.mask.shape, 0, 0), np.float32), test.scalars, test.mask)
    args = (
        torch.from_numpy(sc[:50]),
        torch.from_numpy(test.mask[:50]),
        torch.from_numpy(test.frequency[:50]),
    )
    with torch.no_grad():
        pos, _ = loc(torch.zeros(1), *args)
        w = torch.softmax(loc.log_posterior(*args), dim=1)
        full = w @ loc.cells
    assert torch.max(torch.linalg.vector_norm(pos - full, dim=1)) < fitted.grid.cell


def test_absent_receivers_have_no_influence(world) -> None:
    _, test, stats, fitted = world
    loc = RadioMapLocalizer(fitted, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    _, sc = stats.apply(np.zeros((*test.mask.shape, 0, 0), np.float32), test.scalars, test.mask)
    mask = test.mask[:20].copy()
    mask[:, 4] = False
    sc2 = sc[:20].copy()
    sc2[:, 4] = 1e6  # garbage where the receiver is absent
    f = torch.from_numpy(test.frequency[:20])
    with torch.no_grad():
        a, _ = loc(torch.zeros(1), torch.from_numpy(sc[:20]), torch.from_numpy(mask), f)
        b, _ = loc(torch.zeros(1), torch.from_numpy(sc2), torch.from_numpy(mask), f)
    torch.testing.assert_close(a, b)


def test_all_absent_gives_a_finite_prior(world) -> None:
    _, _, stats, fitted = world
    loc = RadioMapLocalizer(fitted, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    with torch.no_grad():
        pos, tril = loc(
            torch.zeros(1), torch.zeros(2, 5, 4), torch.zeros(2, 5, dtype=torch.bool), torch.ones(2)
        )
    assert torch.isfinite(pos).all() and torch.isfinite(tril).all()


def test_an_uncalibrated_receiver_is_set_aside_and_named(world) -> None:
    """IQ scaled ×1000 (+60 dB power and noise): trusted, it drags every fix; set aside, it does not."""
    _, test, stats, fitted = world
    loc = RadioMapLocalizer(fitted, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    bad = test.scalars.copy()
    bad[:, 4, :2] += 60.0  # power and noise floor; the SNR (a ratio) is unchanged
    heard = test.scalars[:, 4, 3] >= 0.5
    spec = np.zeros((*test.mask.shape, 0, 0), np.float32)
    _, clean_sc = stats.apply(spec, test.scalars, test.mask)
    _, bad_sc = stats.apply(spec, bad, test.mask)
    f, m = torch.from_numpy(test.frequency), torch.from_numpy(test.mask)
    with torch.no_grad():
        _, _, trust_clean = loc.localize(torch.zeros(1), torch.from_numpy(clean_sc), m, f)
        pos, _, trust = loc.localize(torch.zeros(1), torch.from_numpy(bad_sc), m, f)
        loc.robust = False
        trusting, _ = loc(torch.zeros(1), torch.from_numpy(bad_sc), m, f)
    assert (trust_clean < 0.5).any(dim=1).float().mean() < 0.02  # clean data: (almost) nobody distrusted
    assert (trust[heard, 4] < 0.5).float().mean() > 0.9  # the bad receiver, where its reading matters
    assert (trust[:, :4] < 0.5).any(dim=1).float().mean() < 0.05  # and (almost) never a good one instead
    assert _rmse(pos.numpy(), test.truth) < 0.5 * _rmse(trusting.numpy(), test.truth)
