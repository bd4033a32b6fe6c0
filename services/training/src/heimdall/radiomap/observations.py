"""What a receiver's scalars say about the signal: its power if heard, the level it stayed below if not.

The radio map reads the same four features as the network (``heimdall.features.SCALAR_NAMES``:
total power, blind noise floor, SNR, soft heard weight). A heard receiver's signal power is
S = N + snr with N = P − 10·log10(1 + 10^(snr/10)) (total power minus noise); an unheard one says
its signal stayed below N + ``HEARD_SNR_DB`` (a censored reading). Data without SNR (power-only
imports such as POWDER: a reading exists only where the signal was measured) are heard wherever a
reading exists. The same arithmetic runs in numpy (fitting) and torch (the exported graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from heimdall.detection import HEARD_RAMP_DB, HEARD_SNR_DB, heard_weight, signal_and_noise_dbm
from heimdall.features import SCALAR_NAMES

POWER = SCALAR_NAMES.index("power_dbm")
SNR = SCALAR_NAMES.index("snr_db")
HEARD = SCALAR_NAMES.index("heard")
#: moving receivers (power-only data) carry their east/north offset in km after the four scalars
OFFSET_EAST, OFFSET_NORTH = len(SCALAR_NAMES), len(SCALAR_NAMES) + 1

__all__ = ["Observed", "observe", "observe_torch"]


@dataclass(frozen=True)
class Observed:
    """Per session and receiver (N, R): signal dBm (heard), threshold dBm (unheard), weights."""

    signal: np.ndarray  # heard: signal power; elsewhere 0
    threshold: np.ndarray  # present and unheard: the level the signal stayed below; elsewhere 0
    heard: np.ndarray  # float weight in [0, 1] (the soft heard ramp), 0 where absent
    censored: np.ndarray  # float weight in [0, 1]: present, not heard, with a known threshold
    receivers_enu: np.ndarray  # (N, R, 2) metres: where each receiver was


def observe(
    scalars: np.ndarray, mask: np.ndarray, receivers_enu: np.ndarray, has_snr: bool = True
) -> Observed:
    """Raw scalars (N, R, S ≥ 4; NaN = unknown) → :class:`Observed`; `receivers_enu` (R, 2) or (N, R, 2).

    A present receiver with an unknown SNR (or any receiver when ``has_snr`` is False) is heard
    wherever its power is finite: there is no threshold to censor it by.
    """
    n, r = mask.shape
    power = scalars[..., POWER].astype(np.float64)
    snr = scalars[..., SNR].astype(np.float64)
    present = mask.astype(bool) & np.isfinite(power)
    known = np.isfinite(snr) & has_snr
    with np.errstate(invalid="ignore", over="ignore"):
        signal, noise = signal_and_noise_dbm(power, np.where(known, snr, 0.0))
        threshold = noise + HEARD_SNR_DB
        w = np.where(known, heard_weight(snr), 1.0)
    heard = np.where(present, w, 0.0)
    censored = np.where(present & known, 1.0 - w, 0.0)
    rx = np.broadcast_to(receivers_enu, (n, r, 2)).astype(np.float64)
    if scalars.shape[-1] > OFFSET_NORTH:
        offsets = np.nan_to_num(scalars[..., OFFSET_EAST : OFFSET_NORTH + 1].astype(np.float64)) * 1000.0
        rx = rx + offsets
    return Observed(
        np.where(heard > 0, np.nan_to_num(signal), 0.0),
        np.where(censored > 0, np.nan_to_num(threshold), 0.0),
        heard,
        censored,
        rx,
    )


def observe_torch(
    scalars: Tensor, present: Tensor, receivers_enu: Tensor, has_snr: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`observe` in torch for the exported graph: (signal, threshold, heard, censored, rx (B, R, 2)).

    ``scalars`` are raw (B, R, S) with NaN already replaced (unknown SNR = the training mean);
    ``present`` (B, R) bool. Mirrors the numpy path exactly for finite inputs.
    """
    power = scalars[..., POWER]
    if has_snr:
        snr = scalars[..., SNR]
        noise = power - 10.0 * torch.log10(1.0 + torch.pow(10.0, snr / 10.0))
        signal, threshold = noise + snr, noise + HEARD_SNR_DB
        w = torch.clamp((snr - HEARD_SNR_DB) / HEARD_RAMP_DB + 0.5, 0.0, 1.0)
    else:
        signal, threshold, w = power, torch.zeros_like(power), torch.ones_like(power)
    zero = torch.zeros_like(power)
    heard = torch.where(present, w, zero)
    censored = torch.where(present, 1.0 - w, zero) if has_snr else zero
    rx = receivers_enu.unsqueeze(0).expand(scalars.shape[0], -1, -1)
    if scalars.shape[-1] > OFFSET_NORTH:
        rx = rx + scalars[..., OFFSET_EAST : OFFSET_NORTH + 1] * 1000.0
    signal = torch.where(heard > 0, signal, zero)
    threshold = torch.where(censored > 0, threshold, zero)
    return signal, threshold, heard, censored, rx
