"""Tests for heimdall.model.LocalizationNet: shapes, masking semantics, learning, ONNX parity."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from heimdall.loss import gaussian_nll_2d
from heimdall.model import LocalizationNet, band_constants

R = 7
S = 4
C = 64
F = 47


def _ring_positions_km(n: int = R, radius_km: float = 20.0) -> list[tuple[float, float]]:
    return [
        (radius_km * math.cos(2 * math.pi * i / n), radius_km * math.sin(2 * math.pi * i / n))
        for i in range(n)
    ]


#: the carriers of nw-italy-v2 (433.5 MHz for 20 % of sessions, 145.5 MHz for the rest)
BANDS_HZ = (433.5e6, 145.5e6)
BAND = band_constants(list(BANDS_HZ) * 5 + [BANDS_HZ[1]] * 15)


def _make_model(**kwargs: object) -> LocalizationNet:
    torch.manual_seed(0)
    return LocalizationNet(R, _ring_positions_km(), S, n_bands=C, **BAND, **kwargs).eval()  # type: ignore[arg-type]


def _carriers(batch: int) -> torch.Tensor:
    """(batch,) carriers alternating between the two bands."""
    return torch.tensor([BANDS_HZ[i % 2] for i in range(batch)], dtype=torch.float32)


def _inputs(
    batch: int, frames: int = F, seed: int = 0, p_present: float = 0.7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    spec = torch.randn(batch, R, C, frames, generator=gen)
    scalars = torch.randn(batch, R, S, generator=gen)
    mask = torch.rand(batch, R, generator=gen) < p_present
    mask[:, 0] = True  # at least one receiver per row unless a test says otherwise
    return spec, scalars, mask


@pytest.mark.parametrize("pooling", ["attention", "mean"])
@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_output_shapes_and_cholesky_structure(pooling: str, covariance: str) -> None:
    model = _make_model(pooling=pooling, covariance=covariance)
    spec, scalars, mask = _inputs(5)
    with torch.no_grad():
        position, tril = model(spec, scalars, mask, _carriers(len(mask)))
    assert position.shape == (5, 2) and tril.shape == (5, 2, 2)
    assert position.dtype == torch.float32 and tril.dtype == torch.float32
    assert torch.all(tril[:, 0, 1] == 0)
    assert torch.all(torch.diagonal(tril, dim1=-2, dim2=-1) > 0)
    if covariance == "diagonal":
        assert torch.all(tril[:, 1, 0] == 0)
    else:
        assert torch.any(tril[:, 1, 0] != 0)
    cov = model.covariance(tril)
    assert torch.all(torch.linalg.eigvalsh(cov.double()) > 0)
    # At initialisation: position inside the network and a broad (km-scale) ellipse, in metres.
    assert position.abs().max() < 50_000
    assert torch.all(torch.diagonal(tril, dim1=-2, dim2=-1) > 1_000)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
@pytest.mark.parametrize("use_spectrogram", [True, False])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_masked_receivers_have_no_influence(
    pooling: str, use_spectrogram: bool, mask_dtype: torch.dtype
) -> None:
    model = _make_model(pooling=pooling, use_spectrogram=use_spectrogram)
    spec, scalars, mask = _inputs(6, seed=1)
    mask[:, 3] = False
    mask[5] = False  # one all-missing row
    spec2, scalars2 = spec.clone(), scalars.clone()
    missing = ~mask
    spec2[missing] = torch.randn_like(spec2[missing]) * 100
    scalars2[missing] = float("nan")  # even NaN in a missing receiver must not leak
    b, r = missing.nonzero()[0].tolist()
    spec2[b, r] = float("inf")
    with torch.no_grad():
        out1 = model(spec, scalars, mask.to(mask_dtype), _carriers(6))
        out2 = model(spec2, scalars2, mask.to(mask_dtype), _carriers(6))
    for a, b in zip(out1, out2, strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_every_receiver_subset_works_and_all_missing_is_finite() -> None:
    model = _make_model()
    subsets = list(itertools.product([False, True], repeat=R))  # includes the empty subset
    mask = torch.tensor(subsets)
    spec, scalars, _ = _inputs(len(subsets), seed=2)
    spec.requires_grad_(True)
    model.train()
    position, tril = model(spec, scalars, mask, _carriers(len(mask)))
    assert torch.isfinite(position).all() and torch.isfinite(tril).all()
    target = torch.randn(len(subsets), 2) * 10_000
    gaussian_nll_2d(position, tril, target).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert spec.grad is not None and torch.isfinite(spec.grad).all()
    assert torch.all(spec.grad[~mask] == 0)  # missing receivers receive no gradient either


def test_all_missing_rows_give_the_same_prior() -> None:
    """With no receiver only the carrier is left: one prior per band."""
    model = _make_model()
    spec, scalars, mask = _inputs(3, seed=3)
    mask[:] = False
    with torch.no_grad():
        position, tril = model(spec, scalars, mask, torch.full((3,), BANDS_HZ[1]))
    torch.testing.assert_close(position, position[:1].expand(3, 2))
    torch.testing.assert_close(tril, tril[:1].expand(3, 2, 2))


def test_rows_are_independent_of_the_rest_of_the_batch() -> None:
    model = _make_model()
    spec, scalars, mask = _inputs(4, seed=4)
    with torch.no_grad():
        batched = model(spec, scalars, mask, _carriers(4))
        single = model(spec[2:3], scalars[2:3], mask[2:3], _carriers(4)[2:3])
    torch.testing.assert_close(batched[0][2:3], single[0], rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(batched[1][2:3], single[1], rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("frames", [1, 20, 100])
def test_any_number_of_frames(frames: int) -> None:
    model = _make_model()
    spec, scalars, mask = _inputs(2, frames=frames)
    with torch.no_grad():
        position, tril = model(spec, scalars, mask, _carriers(len(mask)))
    assert torch.isfinite(position).all() and torch.isfinite(tril).all()


def test_spectrogram_changes_output_when_used() -> None:
    model = _make_model()
    spec, scalars, mask = _inputs(2, seed=5)
    with torch.no_grad():
        a = model(spec, scalars, mask, _carriers(2))[0]
        b = model(spec + 1.0, scalars, mask, _carriers(2))[0]
    assert not torch.allclose(a, b)


def test_power_only_ignores_spectrogram() -> None:
    model = _make_model(use_spectrogram=False)
    _, scalars, mask = _inputs(3, seed=6)
    with torch.no_grad():
        a = model(torch.zeros(3, R, 0, 0), scalars, mask, _carriers(3))
        b = model(torch.randn(3, R, C, F), scalars, mask, _carriers(3))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not any(name.startswith("spec_encoder") for name, _ in model.named_parameters())


def test_parameter_budget() -> None:
    model = LocalizationNet(R, _ring_positions_km(), S)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params * 4 <= 5 * 1024 * 1024, n_params
    assert n_params > 10_000  # not degenerate


def test_receiver_positions_are_a_buffer_in_internal_units() -> None:
    model = LocalizationNet(R, torch.tensor(_ring_positions_km()), S, position_scale_m=20_000.0)
    assert "receiver_positions" in model.state_dict()
    assert not model.receiver_positions.requires_grad
    torch.testing.assert_close(model.receiver_positions.norm(dim=-1), torch.ones(R))  # 20 km / 20 km


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pooling": "max"}, "pooling"),
        ({"covariance": "spherical"}, "covariance"),
        ({"position_scale_m": 0.0}, "position_scale_m"),
        ({"embed_dim": 30, "n_heads": 4}, "divisible"),
    ],
)
def test_invalid_configuration_raises(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LocalizationNet(R, _ring_positions_km(), S, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="receiver_positions_km"):
        LocalizationNet(R, _ring_positions_km(R - 1), S)


def _weighted_centroid_batch(
    gen: torch.Generator, batch: int, positions_m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scalars = (power, 3 noise features); target = softmax(1.5·power)-weighted centroid (metres)."""
    scalars = torch.randn(batch, R, S, generator=gen)
    mask = torch.rand(batch, R, generator=gen) < 0.8
    mask[:, :2] = True  # ≥ 2 receivers so the centroid is not trivial
    logits = torch.where(mask, 1.5 * scalars[..., 0], torch.full_like(scalars[..., 0], -torch.inf))
    target = torch.softmax(logits, dim=-1) @ positions_m
    return scalars, mask, target


def test_learns_weighted_centroid_end_to_end() -> None:
    torch.manual_seed(0)
    positions_km = torch.tensor(_ring_positions_km()) + torch.randn(R, 2) * 5
    model = LocalizationNet(R, positions_km, S, use_spectrogram=False, position_scale_m=25_000.0)
    gen = torch.Generator().manual_seed(11)
    spec = torch.zeros(1, R, 0, 0)

    test_scalars, test_mask, test_target = _weighted_centroid_batch(gen, 512, positions_km * 1000)
    spread = (test_target - test_target.mean(0)).norm(dim=-1).median()

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            pos, tril = model(spec.expand(512, -1, -1, -1), test_scalars, test_mask, _carriers(512))
            nll = gaussian_nll_2d(pos, tril, test_target).mean()
        model.train()
        return float(nll), float((pos - test_target).norm(dim=-1).median())

    nll0, err0 = evaluate()
    # Gradient clipping and a decaying learning rate, as in real training: the heteroscedastic NLL
    # produces occasional gradient spikes (an outlier far outside a confident ellipse).
    n_steps = 200
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / n_steps)
    for _ in range(n_steps):
        scalars, mask, target = _weighted_centroid_batch(gen, 64, positions_km * 1000)
        pos, tril = model(spec.expand(64, -1, -1, -1), scalars, mask, _carriers(64))
        loss = gaussian_nll_2d(pos, tril, target).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    nll1, err1 = evaluate()
    print(
        f"NLL {nll0:.2f} -> {nll1:.2f}; median error {err0:.0f} -> {err1:.0f} m "
        f"(spread {float(spread):.0f} m)"
    )

    assert nll1 < nll0 - 2.0, (nll0, nll1)  # > 2 nats ≈ factor 7 in likelihood
    assert err1 < 0.2 * float(spread), (err1, float(spread))
    assert err1 < 0.5 * err0, (err0, err1)


def _export_and_compare(model: LocalizationNet, path: Path, spec: torch.Tensor, dynamic_frames: bool) -> None:
    ort = pytest.importorskip("onnxruntime")
    _, scalars, mask = _inputs(3, frames=spec.shape[-1], seed=8)
    mask[2] = False  # all-missing row in the example batch
    batch = torch.export.Dim("batch", min=1, max=4096)
    spec_axes: dict[int, object] = {0: batch}
    if dynamic_frames:
        spec_axes[3] = torch.export.Dim("frames", min=1, max=4096)
    torch.onnx.export(
        model,
        (spec[:3], scalars, mask.float(), _carriers(3)),
        str(path),
        dynamo=True,
        input_names=["spectrogram", "scalars", "mask", "frequency_hz"],
        output_names=["position_enu_m", "scale_tril"],
        dynamic_shapes=(spec_axes, {0: batch}, {0: batch}, {0: batch}),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    assert [o.name for o in session.get_outputs()] == ["position_enu_m", "scale_tril"]

    frames = 31 if dynamic_frames else spec.shape[-1]
    for batch_size in (1, 5):
        spec_b, scalars_b, mask_b = _inputs(batch_size, frames=frames, seed=9 + batch_size)
        if not model.use_spectrogram:
            spec_b = spec[:1].expand(batch_size, -1, -1, -1).contiguous()
        mask_b[-1] = False
        carriers = _carriers(batch_size)
        carriers[0] = float("nan")  # unknown: the training median, in the graph as in torch
        feeds = {
            "spectrogram": spec_b.numpy(),
            "scalars": scalars_b.numpy(),
            "mask": mask_b.float().numpy(),
            "frequency_hz": carriers.numpy(),
        }
        got = session.run(None, {k: v for k, v in feeds.items() if k in input_names})
        with torch.no_grad():
            want = model(spec_b, scalars_b, mask_b.float(), carriers)
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            assert np.isfinite(g).all()
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4 * float(w.abs().max()))


# Benign exporter chatter: a Dim shared by several inputs, and a torch-internal deprecation.
_ignore_axis_name = pytest.mark.filterwarnings("ignore:.*axis name.*:UserWarning")
_ignore_leafspec = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


@_ignore_axis_name
@_ignore_leafspec
def test_onnx_export_parity(tmp_path: Path) -> None:
    model = _make_model()
    spec, _, _ = _inputs(3)
    _export_and_compare(model, tmp_path / "model.onnx", spec, dynamic_frames=True)


@_ignore_axis_name
@_ignore_leafspec
def test_onnx_export_parity_power_only_mean_pooling(tmp_path: Path) -> None:
    model = _make_model(use_spectrogram=False, pooling="mean", covariance="diagonal")
    _export_and_compare(model, tmp_path / "model.onnx", torch.zeros(3, R, 1, 1), dynamic_frames=False)


# --------------------------------------------------------------------------------------------------------
# The carrier band
# --------------------------------------------------------------------------------------------------------


def test_band_constants_are_fitted_on_known_carriers() -> None:
    freqs = [433.5e6, 145.5e6, 145.5e6, float("nan"), -1.0, 145.5e6]
    c = band_constants(freqs)
    logs = np.log10(np.array([433.5, 145.5, 145.5, 145.5]))
    assert c["frequency_log_mean"] == pytest.approx(logs.mean())
    assert c["frequency_log_std"] == pytest.approx(logs.std())
    assert c["frequency_fill_hz"] == 145.5e6  # the median known carrier
    one_band = band_constants([433.5e6] * 4)
    assert one_band["frequency_log_std"] == 1.0 and one_band["frequency_fill_hz"] == 433.5e6
    none = band_constants([float("nan")] * 3)
    assert (
        none
        == band_constants(None)
        == {
            "frequency_log_mean": 0.0,
            "frequency_log_std": 1.0,
            "frequency_fill_hz": 1e6,
        }
    )
    assert LocalizationNet.band_constants(freqs) == c  # reachable from the class (training/runner.py)


def test_unknown_carrier_reads_as_the_training_median() -> None:
    model = _make_model()
    assert float(model.frequency_fill_hz) == pytest.approx(BAND["frequency_fill_hz"])
    spec, scalars, mask = _inputs(4, seed=12)
    with torch.no_grad():
        median = model(spec, scalars, mask, torch.full((4,), BAND["frequency_fill_hz"]))
        for unknown in (float("nan"), 0.0, -433e6, float("inf")):
            got = model(spec, scalars, mask, torch.full((4,), unknown))
            for a, b in zip(got, median, strict=True):
                assert torch.isfinite(a).all()
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        other = model(spec, scalars, mask, torch.full((4,), BANDS_HZ[0]))
    assert not torch.allclose(other[0], median[0])  # the carrier is read (an untrained net, slightly)


def test_frequency_must_be_one_value_per_session() -> None:
    model = _make_model()
    spec, scalars, mask = _inputs(3, seed=13)
    with pytest.raises(ValueError, match=r"frequency_hz must have shape \(B,\)"):
        model(spec, scalars, mask, torch.full((3, 1), 145.5e6))


def test_band_blind_network_ignores_the_carrier_and_keeps_its_state_dict() -> None:
    blind = _make_model(use_frequency=False)
    spec, scalars, mask = _inputs(3, seed=14)
    with torch.no_grad():
        a = blind(spec, scalars, mask, torch.full((3,), BANDS_HZ[0]))
        b = blind(spec, scalars, mask, torch.full((3,), float("nan")))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    names = set(blind.state_dict())
    assert not names & {"band_mean", "band_std", "frequency_fill_hz"}
    seeing = _make_model()
    assert {"band_mean", "band_std", "frequency_fill_hz"} <= set(seeing.state_dict())
    # one more input per token and to the head: everything else has the band-blind network's shapes
    first = "token_mlp.0.weight"
    assert seeing.state_dict()[first].shape[1] == blind.state_dict()[first].shape[1] + 1
    assert seeing.state_dict()["head.0.weight"].shape[1] == blind.state_dict()["head.0.weight"].shape[1] + 1


@pytest.mark.parametrize(
    "kwargs",
    [{"frequency_log_std": 0.0}, {"frequency_log_mean": float("nan")}, {"frequency_fill_hz": -1.0}],
)
def test_invalid_band_constants_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="frequency"):
        LocalizationNet(R, _ring_positions_km(), S, **kwargs)  # type: ignore[arg-type]


def _band_task(
    gen: torch.Generator, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same receivers' powers mean different places in the two bands: the target is receiver 0 at
    433.5 MHz and receiver 3 at 145.5 MHz (standing in for a band-dependent path loss)."""
    positions_m = torch.tensor(_ring_positions_km()) * 1000.0
    scalars = torch.randn(batch, R, S, generator=gen)
    mask = torch.ones(batch, R, dtype=torch.bool)
    low = torch.rand(batch, generator=gen) < 0.5
    carriers = torch.where(low, torch.tensor(BANDS_HZ[0]), torch.tensor(BANDS_HZ[1]))
    target = torch.where(low[:, None], positions_m[0], positions_m[3])
    return scalars, mask, carriers, target


@pytest.mark.parametrize("use_frequency", [True, False])
def test_the_band_changes_the_prediction_after_training(use_frequency: bool) -> None:
    """After a short training where the bands differ, the same receiver inputs at the other carrier give
    the other band's answer; a band-blind network cannot tell them apart (its two answers are equal)."""
    torch.manual_seed(0)
    model = LocalizationNet(
        R,
        _ring_positions_km(),
        S,
        use_spectrogram=False,
        embed_dim=16,
        pooling="mean",
        position_scale_m=25_000.0,
        use_frequency=use_frequency,
        **BAND,
    )
    gen = torch.Generator().manual_seed(21)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    spec = torch.zeros(1, R, 0, 0)
    for _ in range(150):
        scalars, mask, carriers, target = _band_task(gen, 64)
        pos, _ = model(spec, scalars, mask, carriers)
        loss = ((pos - target) / 1000.0).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    scalars, mask, _, _ = _band_task(gen, 128)
    positions_m = torch.tensor(_ring_positions_km()) * 1000.0
    with torch.no_grad():
        low, _ = model(spec, scalars, mask, torch.full((128,), BANDS_HZ[0]))
        high, _ = model(spec, scalars, mask, torch.full((128,), BANDS_HZ[1]))
    moved_m = float((low - high).norm(dim=-1).median())
    gap_m = float((positions_m[0] - positions_m[3]).norm())  # 40 km: opposite receivers of the ring
    print(f"use_frequency={use_frequency}: the carrier moves the position by {moved_m:.0f} m of {gap_m:.0f}")
    if use_frequency:
        assert moved_m > 0.8 * gap_m
        assert float((low - positions_m[0]).norm(dim=-1).median()) < 0.1 * gap_m
        assert float((high - positions_m[3]).norm(dim=-1).median()) < 0.1 * gap_m
    else:
        assert moved_m == 0.0
