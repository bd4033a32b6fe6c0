"""The one definition of "heard", shared by the simulator's rows, the features, the baselines and the oracle.

A receiver *heard* a session when the SNR estimated from its own recording reaches
:data:`HEARD_SNR_DB`::

    snr_db = 10·log10(max(P̂ / N̂ − 1, 1e-3)),   heard ⟺ snr_db ≥ 6 dB

with P̂ the recording's mean power and N̂ its noise power estimated blind from the recording
(:func:`heimdall.features.receiver_scalars_batch`: a low order statistic of grouped spectrum bins). Only
measured quantities enter, so the rule means the same for simulated, imported and live recordings.
Power-only data sets (no IQ) say "heard" by having a reading at all.

Models get a *soft* version, :func:`heard_weight` (a linear ramp of width :data:`HEARD_RAMP_DB` centred on
the threshold): a hard step inside the exported graph could flip between PyTorch and ONNX Runtime for a
recording whose SNR sits on the threshold; the ramp changes by at most |Δsnr| / width.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

HEARD_SNR_DB = 6.0
HEARD_RAMP_DB = 1.0

__all__ = ["HEARD_RAMP_DB", "HEARD_SNR_DB", "heard", "heard_weight", "signal_and_noise_dbm"]


def heard(snr_db: ArrayLike) -> NDArray[np.bool_]:
    """The rule: estimated SNR ≥ :data:`HEARD_SNR_DB` (NaN, i.e. no recording, is not heard)."""
    snr = np.asarray(snr_db, np.float64)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(snr, nan=-np.inf) >= HEARD_SNR_DB


def heard_weight(snr_db: ArrayLike) -> NDArray[np.float64]:
    """The model's soft input: 0 below ``threshold − width/2``, 1 above ``threshold + width/2``."""
    snr = np.asarray(snr_db, np.float64)
    return np.clip((snr - HEARD_SNR_DB) / HEARD_RAMP_DB + 0.5, 0.0, 1.0)


def signal_and_noise_dbm(power_dbm: ArrayLike, snr_db: ArrayLike) -> tuple[NDArray, NDArray]:
    """(signal, noise) power in dBm from a row's total power and SNR = 10·log10(P/N − 1)."""
    power, snr = np.asarray(power_dbm), np.asarray(snr_db)
    noise = power - 10.0 * np.log10(1.0 + 10.0 ** (snr / 10.0))
    return noise + snr, noise
