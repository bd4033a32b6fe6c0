"""Fitting the radio map recovers a known world: path-loss law, offsets, the residual field, σ."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import EXPONENT, OFFSETS, RECEIVERS, draw, true_field

from heimdall.radiomap.fit import BLOCK, FieldSettings, Grid, fit_radio_map, physics_only
from heimdall.radiomap.observations import observe


@pytest.fixture(scope="module")
def fitted():
    w = draw(4000, seed=1)
    obs = observe(w.scalars, w.mask, RECEIVERS)
    m = fit_radio_map(obs, w.truth, w.frequency, FieldSettings(bandwidth_m=2500.0, shrinkage=1.0))
    return w, m


def test_recovers_the_path_loss_law(fitted) -> None:
    _, m = fitted
    assert m.exponent[0] == pytest.approx(EXPONENT, abs=0.15)
    # offsets are relative (the transmit power absorbs their mean)
    np.testing.assert_allclose(m.offset_db[0] - m.offset_db[0].mean(), OFFSETS - OFFSETS.mean(), atol=1.2)


def test_recovers_the_residual_field_of_the_receiver_that_has_one(fitted) -> None:
    _, m = fitted
    centres = m.grid.centres()
    inside = np.all(np.abs(centres) < 25e3, axis=1)
    truth = true_field(centres)[:, 0]
    learnt = m.field_db[0, 0] - np.average(m.field_db[0, 0][inside])
    corr = np.corrcoef(learnt[inside], truth[inside] - truth[inside].mean())[0, 1]
    assert corr > 0.8
    # the receivers without terrain learn (almost) no structure (a constant is the power's gauge)
    assert m.field_db[0, 1:][:, inside].std(axis=1).max() < 1.0


def test_sigma_is_the_noise_left_after_the_field(fitted) -> None:
    _, m = fitted
    assert np.all((m.sigma_db[0] > 1.5) & (m.sigma_db[0] < 3.0))  # drawn with σ = 2 dB


def test_censored_readings_keep_the_exponent_unbiased() -> None:
    """Far transmitters are heard only when shadowing lifts them: ignoring the unheard biases n low."""
    w = draw(4000, seed=2, sigma_db=6.0, field=False)
    obs = observe(w.scalars, w.mask, RECEIVERS)
    settings = FieldSettings(bandwidth_m=20e3, shrinkage=50.0)
    with_em = fit_radio_map(obs, w.truth, w.frequency, settings)
    heard_only = fit_radio_map(obs, w.truth, w.frequency, settings, impute_parametric=False)
    assert abs(with_em.exponent[0] - EXPONENT) < abs(heard_only.exponent[0] - EXPONENT)
    assert with_em.exponent[0] == pytest.approx(EXPONENT, abs=0.3)


def test_same_data_same_map() -> None:
    w = draw(500, seed=3)
    obs = observe(w.scalars, w.mask, RECEIVERS)
    a = fit_radio_map(obs, w.truth, w.frequency, FieldSettings(3000.0))
    b = fit_radio_map(obs, w.truth, w.frequency, FieldSettings(3000.0))
    np.testing.assert_array_equal(a.field_db, b.field_db)
    np.testing.assert_array_equal(a.sigma_db, b.sigma_db)


def test_grid_is_whole_blocks_and_blocks_partition_it() -> None:
    g = Grid.covering(np.array([[0.0, 0.0], [1000.0, 370.0]]), cells=30)
    assert g.nx % BLOCK == 0 and g.ny % BLOCK == 0
    centres, members = g.blocks()
    assert np.array_equal(np.sort(members.ravel()), np.arange(g.nx * g.ny))
    np.testing.assert_allclose(centres, g.centres()[members].mean(axis=1))


def test_physics_only_has_no_field_and_a_broad_power_prior() -> None:
    m = physics_only(RECEIVERS, RECEIVERS)
    assert not m.field_db.any() and m.settings is None and m.power_std_db[0] >= 100.0
