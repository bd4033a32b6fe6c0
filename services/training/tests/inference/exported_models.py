"""Small exported models for the inference tests: a network, realistic random inputs, and a fit that makes
the outputs depend on the inputs (an untrained network barely moves, so a parity check on it passes
trivially)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from heimdall.data.network import ReceiverNetwork
from heimdall.data.normalization import NormStats
from heimdall.features import SCALAR_NAMES, FeatureConfig
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.onnx_export import export_onnx
from heimdall.model import LocalizationNet, band_constants

R = 7
T = 1024  # 7 STFT frames: short recordings keep the tests fast; the contract fixes T at export
CFG = FeatureConfig()
NOISE_AMPLITUDE = 3e-7  # complex Gaussian noise at ~-130 dBm, the calibrated level of real recordings

#: the two carriers of nw-italy-v2: 433.5 MHz (20 % of sessions, ~9.5 dB more path loss) and 145.5 MHz
#: (the median band); the models below are fitted for them
BANDS_HZ = (433.5e6, 145.5e6)
BAND = band_constants([BANDS_HZ[0]] * 2 + [BANDS_HZ[1]] * 8)
#: what the power-only model learns the 433.5 MHz band to mean: the centroid moved this far north (m)
BAND_SHIFT_M = 3000.0

NETWORK = ReceiverNetwork(
    station_ids=(3, 5, 8, 13, 21, 34, 55),
    names=("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"),
    latitudes=(59.91, 59.95, 59.87, 60.02, 59.80, 59.93, 59.99),
    longitudes=(10.75, 10.60, 10.90, 10.70, 10.65, 11.00, 10.45),
)


def random_stats(n_bands: int, rng: np.random.Generator) -> NormStats:
    """Statistics fitted on random features at realistic levels (dBm-like bands, raw scalars)."""
    n = 200
    spec = rng.normal(-150.0, 8.0, (n, R, n_bands, 5)).astype(np.float32)
    scalars = np.stack(
        [
            rng.normal(-125.0, 10.0, (n, R)),
            rng.normal(-130.0, 3.0, (n, R)),
            rng.normal(5.0, 10.0, (n, R)),
            rng.integers(0, 2, (n, R)),
        ],
        axis=-1,
    ).astype(np.float32)
    return NormStats.fit(spec, scalars, rng.random((n, R)) < 0.8)


def random_iq(n: int, rng: np.random.Generator, n_samples: int = T) -> np.ndarray:
    """Calibrated IQ ``(n, R, 2, T)`` float32: noise at varying levels, a strong tone on some receivers."""
    shape = (n, R, n_samples)
    level = 10.0 ** (rng.uniform(-6.0, 6.0, (n, R, 1)) / 20.0)
    x = NOISE_AMPLITUDE / math.sqrt(2.0) * level * (rng.normal(size=shape) + 1j * rng.normal(size=shape))
    tone = np.exp(2j * np.pi * rng.uniform(-0.4, 0.4, (n, R, 1)) * np.arange(n_samples))
    x += (rng.random((n, R, 1)) < 0.5) * NOISE_AMPLITUDE * 10.0 * tone  # +20 dB: clearly heard
    return np.stack([x.real, x.imag], axis=-2).astype(np.float32)


def random_frequency(n: int, rng: np.random.Generator, p_unknown: float = 0.1) -> np.ndarray:
    """``(n,)`` float32 carriers: either band at random, NaN (unknown) with probability ``p_unknown``."""
    f = np.where(rng.random(n) < 0.3, BANDS_HZ[0], BANDS_HZ[1])
    return np.where(rng.random(n) < p_unknown, np.nan, f).astype(np.float32)


def random_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, R)`` float32 with at least 3 receivers present per session."""
    mask = rng.random((n, R)) < 0.6
    for row in mask:
        row[rng.permutation(R)[:3]] = True
    return mask.astype(np.float32)


def small_net(use_spectrogram: bool, **kwargs: object) -> LocalizationNet:
    positions_km = NETWORK.positions_enu_m() / 1000.0
    torch.manual_seed(0)
    net = LocalizationNet(
        R, positions_km, 4, CFG.n_bands, use_spectrogram, position_scale_m=30_000.0, **{**BAND, **kwargs}
    )
    return net.eval()


@dataclass
class Exported:
    graph: InferenceGraph
    path: Path
    metadata: dict[str, str]


def random_scalars(n: int, rng: np.random.Generator) -> np.ndarray:
    """Raw scalars ``(n, R, 4)`` with ~20 % NaN (unknown) entries."""
    sc = np.stack(
        [
            rng.normal(-120.0, 10.0, (n, R)),
            rng.normal(-130.0, 3.0, (n, R)),
            rng.uniform(-30.0, 40.0, (n, R)),
            rng.integers(0, 2, (n, R)),
        ],
        axis=-1,
    ).astype(np.float32)
    sc[rng.random(sc.shape) < 0.2] = np.nan
    return sc


def tiny_graph() -> InferenceGraph:
    rng = np.random.default_rng(70)
    return InferenceGraph(small_net(False, embed_dim=8, pooling="mean"), random_stats(0, rng), from_iq=False)


def scalar_example(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros(batch, R, 4), torch.ones(batch, R), torch.full((batch,), BANDS_HZ[1])


def power_centroid(
    scalars: torch.Tensor, mask: torch.Tensor, frequency_hz: torch.Tensor, temperature_db: float = 3.0
) -> torch.Tensor:
    """A target that depends on every present receiver's power and on the band: the softmax(power / 3 dB)-
    weighted centroid of the receivers, :data:`BAND_SHIFT_M` further north at 433.5 MHz (an unknown
    carrier is the models' median one, 145.5 MHz)."""
    rx = torch.tensor(NETWORK.positions_enu_m(), dtype=torch.float32)
    power = torch.nan_to_num(scalars[..., SCALAR_NAMES.index("power_dbm")], nan=-200.0)
    logits = torch.where(mask > 0.5, power / temperature_db, torch.full_like(power, -1e4))
    uhf = (frequency_hz > 300e6).float()  # NaN compares False: the median band
    return torch.softmax(logits, dim=1) @ rx + torch.stack([torch.zeros_like(uhf), uhf * BAND_SHIFT_M], -1)


def fit_to_power_centroid(
    graph: InferenceGraph,
    sample: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    steps: int = 200,
) -> InferenceGraph:
    """Briefly train a power-only graph (~2 s) so its positions follow :func:`power_centroid`.

    Measured: a 1 dB change of one receiver's power then moves the position by metres (an untrained
    network: centimetres), and the other band by kilometres, so a parity tolerance of 1 m is a check
    that can fail.
    """
    torch.manual_seed(int(rng.integers(1 << 31)))
    opt = torch.optim.Adam(graph.net.parameters(), lr=3e-3)
    graph.net.train()
    for _ in range(steps):
        sc, mask, freq = (torch.from_numpy(a) for a in sample(64, rng))
        position = graph(sc, mask, freq)[0]
        loss = ((position - power_centroid(sc, mask, freq)) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    graph.net.eval()
    return graph.eval()


def export_iq_model(folder: Path) -> Exported:
    rng = np.random.default_rng(1)
    net = small_net(True, embed_dim=16, cnn_channels=16, id_embed_dim=4, n_heads=2)
    graph = InferenceGraph(net, random_stats(CFG.n_bands, rng), CFG, from_iq=True)
    metadata = model_metadata(NETWORK, CFG, "iq-test_1", run_id="abc")
    example = tuple(
        torch.from_numpy(a) for a in (random_iq(3, rng), random_mask(3, rng), random_frequency(3, rng))
    )
    path = export_onnx(graph, example, folder / "model.onnx", metadata)
    return Exported(graph, path, metadata)


def export_scalar_model(folder: Path) -> Exported:
    rng = np.random.default_rng(2)
    graph = InferenceGraph(
        small_net(False, embed_dim=16, pooling="mean"), random_stats(0, rng), from_iq=False
    )
    graph = fit_to_power_centroid(
        graph, lambda n, g: (random_scalars(n, g), random_mask(n, g), random_frequency(n, g)), rng
    )
    metadata = model_metadata(NETWORK, CFG, "power-only")
    example = tuple(
        torch.from_numpy(a) for a in (random_scalars(3, rng), random_mask(3, rng), random_frequency(3, rng))
    )
    path = export_onnx(graph, example, folder / "model.onnx", metadata)
    return Exported(graph, path, metadata)
