"""A known log-distance world with a known residual field: what the radio-map tests fit and locate in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heimdall.detection import heard_weight

NOISE_DBM = -120.0
RECEIVERS = np.array([[-20e3, -20e3], [20e3, -20e3], [20e3, 20e3], [-20e3, 20e3], [0.0, 0.0]])
EXPONENT = 3.2
OFFSETS = np.array([1.0, -1.0, 0.5, -0.5, 0.0])


def true_field(x: np.ndarray) -> np.ndarray:
    """(N, R) dB: a smooth bump for receiver 0 (terrain), nothing for the others."""
    f = np.zeros((x.shape[0], RECEIVERS.shape[0]))
    f[:, 0] = 8.0 * np.exp(-np.sum((x - np.array([-10e3, 5e3])) ** 2, axis=1) / (2 * 6e3**2))
    return f


@dataclass
class World:
    truth: np.ndarray  # (N, 2)
    scalars: np.ndarray  # (N, R, 4) raw SCALAR_NAMES
    mask: np.ndarray  # (N, R)
    frequency: np.ndarray  # (N,)
    power: np.ndarray  # (N,) transmit power (relative dB)


def draw(n: int, seed: int, sigma_db: float = 2.0, field: bool = True, extent: float = 30e3) -> World:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(-extent, extent, size=(n, 2))
    p = rng.uniform(-5.0, 5.0, n) + 20.0
    d = np.linalg.norm(truth[:, None, :] - RECEIVERS[None], axis=-1)
    s = (
        p[:, None]
        + OFFSETS
        - 10 * EXPONENT * np.log10(np.maximum(d, 100.0))
        + rng.normal(0, sigma_db, d.shape)
    )
    s = s + (true_field(truth) if field else 0.0) + 12.0
    snr = s - NOISE_DBM
    total = 10 * np.log10(10 ** (s / 10) + 10 ** (NOISE_DBM / 10))
    clipped = np.maximum(snr, -30.0)
    scalars = np.stack(
        [total, np.full_like(total, NOISE_DBM), clipped, heard_weight(clipped)], axis=-1
    ).astype(np.float32)
    return World(truth, scalars, np.ones(d.shape, bool), np.full(n, 145.5e6), p)
