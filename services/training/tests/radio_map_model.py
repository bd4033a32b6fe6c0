"""A radio-map localiser fitted on the synthetic world of ``tests/radiomap``, exported from IQ, and the IQ
recordings of that world's sessions — with one receiver reading +60 dB when asked (an uncalibrated one).

Shared by the inference and jobs tests of ``receiver_trust``. The world's levels are moved by
:data:`SHIFT_DB` so its noise floor sits 2 dB under the thermal noise of the model's 12.5 kHz band: then
the receiver scaled ×1000 is 58 dB above it, which ``heimdall locate``'s checks let through (> 60 dB is
refused as raw ADC units) and only the model can tell: its power fits no position.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from radiomap.synthetic import NOISE_DBM, RECEIVERS, World, draw

from heimdall.data.network import ReceiverNetwork
from heimdall.data.normalization import NormStats
from heimdall.features import FeatureConfig
from heimdall.geo import LocalFrame
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.onnx_export import export_onnx
from heimdall.radiomap.fit import FieldSettings, fit_radio_map
from heimdall.radiomap.localizer import RadioMapLocalizer
from heimdall.radiomap.observations import observe

CFG = FeatureConfig()
T = 2048  # 15 STFT frames: enough for the blind noise floor to be within a few tenths of a dB
SHIFT_DB = -15.0
#: the receiver made uncalibrated (the centre one, which hears almost every transmitter) and by how much
BAD = 4
OFFSET_DB = 60.0
CARRIER_HZ = 145.5e6
_lat, _lon = LocalFrame(45.0, 8.0).to_latlon(RECEIVERS)
NETWORK = ReceiverNetwork(
    station_ids=(11, 12, 13, 14, 15),
    names=("alba", "bora", "cima", "dora", "elva"),
    latitudes=tuple(float(v) for v in _lat),
    longitudes=tuple(float(v) for v in _lon),
)
BAD_ID, BAD_NAME = NETWORK.station_ids[BAD], NETWORK.names[BAD]


def shifted(world: World) -> World:
    """The world with every power and noise floor moved by :data:`SHIFT_DB` (SNRs unchanged)."""
    scalars = world.scalars.copy()
    scalars[..., :2] += SHIFT_DB
    return World(world.truth, scalars, world.mask, world.frequency, world.power)


def radio_map_graph(n_train: int = 2000) -> InferenceGraph:
    """The radio map fitted on ``n_train`` sessions of the (shifted) world, as an IQ inference graph."""
    train = shifted(draw(n_train, seed=5))
    stats = NormStats.fit(np.zeros((*train.mask.shape, 0, 0), np.float32), train.scalars, train.mask)
    fitted = fit_radio_map(
        observe(train.scalars, train.mask, RECEIVERS),
        train.truth,
        train.frequency,
        FieldSettings(2500.0, 1.0),
    )
    loc = RadioMapLocalizer(fitted, RECEIVERS, stats.scalar_mean, stats.scalar_std).eval()
    return InferenceGraph(loc, stats, CFG, from_iq=True).eval()


def recordings(scalars: np.ndarray, rng: np.random.Generator, bad: bool = False) -> np.ndarray:
    """Complex64 IQ (R, T) in √mW of one session's raw scalars (R, 4): noise at the noise floor plus a
    tone carrying the signal power; ``bad`` scales receiver :data:`BAD` by 10^(60/20) (+60 dB)."""
    noise_mw = 10.0 ** ((NOISE_DBM + SHIFT_DB) / 10.0)
    snr = scalars[:, 2].astype(np.float64)
    signal_mw = noise_mw * 10.0 ** (snr / 10.0)
    r = scalars.shape[0]
    noise = math.sqrt(noise_mw / 2.0) * (rng.normal(size=(r, T)) + 1j * rng.normal(size=(r, T)))
    tone = np.sqrt(signal_mw)[:, None] * np.exp(2j * np.pi * (0.1 * np.arange(T) + rng.random((r, 1))))
    iq = noise + tone
    if bad:
        iq[BAD] *= 10.0 ** (OFFSET_DB / 20.0)
    return iq.astype(np.complex64)


def iq_batch(world: World, rng: np.random.Generator, bad: bool) -> np.ndarray:
    """Float32 ``(N, R, 2, T)`` (the ``iq`` input) of every session of ``world``."""
    x = np.stack([recordings(s, rng, bad) for s in world.scalars])
    return np.stack([x.real, x.imag], axis=-2).astype(np.float32)


def export_radio_map(folder: Path, graph: InferenceGraph | None = None) -> tuple[InferenceGraph, Path]:
    graph = radio_map_graph() if graph is None else graph
    rng = np.random.default_rng(3)
    example = shifted(draw(2, seed=7))
    inputs = (
        torch.from_numpy(iq_batch(example, rng, bad=False)),
        torch.ones(2, len(RECEIVERS)),
        torch.full((2,), CARRIER_HZ),
    )
    path = export_onnx(graph, inputs, folder / "model.onnx", model_metadata(NETWORK, CFG, "radio-map"))
    return graph, path


def clearly_heard(world: World, min_snr_db: float = 15.0) -> np.ndarray:
    """Indices of the sessions receiver :data:`BAD` hears clearly (where a +60 dB reading cannot hide)."""
    return np.flatnonzero(world.scalars[:, BAD, 2] >= min_snr_db)
