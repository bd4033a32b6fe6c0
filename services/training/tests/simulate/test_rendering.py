"""The blind pre-check is exact: no receiver that would hear is skipped, and its bounds hold."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.detection import heard
from heimdall.features import FeatureConfig, receiver_scalars_batch
from heimdall.simulate import build_world, load_scenario
from heimdall.simulate.candidates import draw_keys as _draw
from heimdall.simulate.channel import N_SINUSOIDS, complex_gaussian, rician_fading
from heimdall.simulate.rendering import (
    BLIND_NOISE_SPREAD_DB,
    blind_first_stage,
    fading_ceiling,
    plausible_blind,
    render_blind,
)


@pytest.mark.parametrize("n_samples", [256, 1250, 6250])
def test_blind_noise_spread_bound_holds(n_samples: int) -> None:
    """Noise only: std of 10·log10(N̂/N) × √frames stays below the constant the pre-check assumes."""
    rng = np.random.default_rng(n_samples)
    x = complex_gaussian(rng, (2000, n_samples), 1.0)
    noise_db = receiver_scalars_batch(x, FeatureConfig())[:, 1].astype(np.float64)
    frames = FeatureConfig().n_frames(n_samples)
    assert np.std(noise_db) * np.sqrt(frames) < BLIND_NOISE_SPREAD_DB


def test_fading_ceiling_bounds_every_sample() -> None:
    rng = np.random.default_rng(2)
    k_db = np.linspace(-10.0, 10.0, 400)
    h = rician_fading(rng, 2000, 12_500.0, k_db, 6.0, normalise=False)
    peak = (np.abs(h.astype(np.complex128)) ** 2).max(axis=1)
    assert np.all(peak <= fading_ceiling(k_db))
    # K = 0 dB: LOS amplitude √½ plus a scatter of at most √(2M)·√½, independently of the formula
    assert fading_ceiling(np.array([0.0]))[0] == pytest.approx(
        (np.sqrt(0.5) + np.sqrt(N_SINUSOIDS)) ** 2, 1e-3
    )


def test_no_receiver_that_would_hear_is_skipped() -> None:
    """Render 400 candidates with the signal at every receiver; every one that hears passed the checks."""
    sc = load_scenario("nw-italy-v2")
    world = build_world(sc)
    n = round(sc.default_duration_s * sc.sample_rate_hz)
    keys = [(slot, 0) for slot in range(400)]
    would_hear, realised, ceiling, lifted = [], [], [], 0
    for full, again in zip(_draw(world, 9, keys), _draw(world, 9, keys), strict=True):
        args = (full.mean_power_dbm, full.rician_k_db, full.doppler_hz)
        rendered = render_blind(
            world, full.rng, full.content, *args, full.frequency_offset_hz, n, precheck=False, keep_rule=False
        )
        assert rendered is not None
        snr = rendered[2]
        _, _, plausible = blind_first_stage(world, again.rng, *args, n)
        would_hear.append(heard(snr))
        realised.append(plausible)
        ceiling.append(
            plausible_blind(world, 10 ** (full.mean_power_dbm / 10) * fading_ceiling(full.rician_k_db), n)
        )
        # heard only thanks to the fade: its local-mean power alone would have been skipped
        unfaded = plausible_blind(world, 10 ** (full.mean_power_dbm / 10), n)
        lifted += int((heard(snr) & ~unfaded).sum())
    would_hear, realised, ceiling = map(np.array, (would_hear, realised, ceiling))
    assert not np.any(would_hear & ~realised), "a receiver that hears was skipped by the pre-check"
    assert not np.any(realised & ~ceiling), "the candidate screen is looser than the realised pre-check"
    assert realised.mean() < 0.8 and would_hear.any()  # the check skips receivers, so the test has teeth
    assert lifted > 0  # fades do lift receivers above the threshold: ignoring them would fail above
