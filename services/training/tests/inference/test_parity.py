"""The parity checks have power: a model whose outputs depend on its inputs, and a 1 dB change that fails.

A parity figure below 1 m only means something when the model moves by more than that for a difference
that matters. Each case runs the check twice: on identical inputs (passes) and with ONNX Runtime fed
inputs 1 dB off from the reference's (must fail), which stands for a feature computed differently.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from exported_models import BANDS_HZ, Exported, random_frequency, random_iq, random_mask, random_scalars

from heimdall.inference.verify import onnx_parity, parity_with_reference

TOLERANCE_M = 1.0  # what training accepts (heimdall.training.shipping.PARITY_TOLERANCE_M)


def _reference(
    model: Exported, x: np.ndarray, mask: np.ndarray, freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        pos, cov, _ = model.graph(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(freq))
    return pos.double().numpy(), cov.double().numpy()


@pytest.mark.parametrize("kind", ["iq", "scalar"])
def test_parity_passes_on_the_same_inputs_and_fails_one_db_off(request, kind: str) -> None:
    model: Exported = request.getfixturevalue(f"{kind}_model")
    rng = np.random.default_rng(90)
    mask, freq = random_mask(48, rng), random_frequency(48, rng)
    mask[:, 0] = 1.0  # the receiver that is shifted below is always present
    if kind == "iq":
        x = random_iq(48, rng)
        off = x.copy()
        off[:, 0] *= 10 ** (1 / 20)  # receiver 0 one dB stronger
    else:
        x = random_scalars(48, rng)
        x[:, 0, 0] = rng.normal(-120.0, 10.0, 48)  # a known power on receiver 0
        off = x.copy()
        off[:, 0, 0] += 1.0
    ref = _reference(model, x, mask, freq)
    same = parity_with_reference(model.path, (x, mask, freq), *ref, chunk_size=20)
    assert same["n_sessions"] == 48 and same["max_position_diff_m"] < TOLERANCE_M, same
    assert same["max_covariance_rel_diff"] < 1e-3, same
    drifted = parity_with_reference(model.path, (off, mask, freq), *ref)
    print(
        f"{kind}: same {same['max_position_diff_m']:.3g} m, 1 dB off {drifted['max_position_diff_m']:.3g} m"
    )
    # measured: the untrained IQ model moves ~8 m, the fitted power-only one tens of metres
    assert drifted["max_position_diff_m"] > 5 * TOLERANCE_M, drifted
    # the torch-vs-ONNX check on the drifted inputs compares the same graph on both sides: it stays small
    assert onnx_parity(model.path, model.graph, (off, mask, freq))["max_position_diff_m"] < TOLERANCE_M


def test_parity_sees_a_session_fed_the_other_band(scalar_model: Exported) -> None:
    """A consumer that drops or mixes up the carrier (every session at 145.5 MHz) fails parity."""
    rng = np.random.default_rng(93)
    x, mask = random_scalars(48, rng), random_mask(48, rng)
    freq = np.full(48, BANDS_HZ[0], np.float32)
    ref = _reference(scalar_model, x, mask, freq)
    assert (
        parity_with_reference(scalar_model.path, (x, mask, freq), *ref)["max_position_diff_m"] < TOLERANCE_M
    )
    wrong = parity_with_reference(scalar_model.path, (x, mask, np.full(48, BANDS_HZ[1], np.float32)), *ref)
    assert wrong["max_position_diff_m"] > 100 * TOLERANCE_M, wrong


def test_the_power_only_model_follows_its_inputs(scalar_model: Exported) -> None:
    """The briefly trained network tracks the power-weighted centroid it was fitted to (an independent
    function of the inputs), far better than a constant would."""
    from exported_models import power_centroid

    rng = np.random.default_rng(91)
    x, mask, freq = random_scalars(256, rng), random_mask(256, rng), random_frequency(256, rng)
    pos, _ = _reference(scalar_model, x, mask, freq)
    target = power_centroid(*(torch.from_numpy(a) for a in (x, mask, freq))).double().numpy()
    err = np.linalg.norm(pos - target, axis=1)
    spread = np.linalg.norm(target - target.mean(axis=0), axis=1)
    assert np.median(err) < 0.25 * np.median(spread), (np.median(err), np.median(spread))


def test_reference_shapes_are_checked(scalar_model: Exported) -> None:
    rng = np.random.default_rng(92)
    x, mask, freq = random_scalars(4, rng), random_mask(4, rng), random_frequency(4, rng)
    with pytest.raises(ValueError, match="do not fit 4 sessions"):
        parity_with_reference(scalar_model.path, (x, mask, freq), np.zeros((3, 2)), np.zeros((3, 2, 2)))
    with pytest.raises(
        ValueError, match=r"takes inputs \['scalars', 'receiver_mask', 'frequency_hz'\], got 2"
    ):
        parity_with_reference(scalar_model.path, (x, mask), np.zeros((4, 2)), np.zeros((4, 2, 2)))
