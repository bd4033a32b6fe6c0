"""What every classical baseline reads and reports: power observations, carrier bands, tuning grids.

The observations follow :mod:`heimdall.detection`: a row's measured power is total power (signal +
noise); with its SNR the noise power is N = P − 10·log10(1 + 10^(snr/10)) and the signal power
S = N + snr (i.e. 10·log10(10^(P/10) − 10^(N/10))). A row with an SNR is heard iff
``detection.heard(snr)``; one that is not heard says its signal was below ``N + HEARD_SNR_DB`` (a
censored reading). Power-only data (no SNR, e.g. POWDER) are heard where a reading exists and say
nothing where none does. A receiver removed for the outage study is absent: no reading, no
threshold — never "not heard".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.detection import HEARD_SNR_DB, signal_and_noise_dbm
from heimdall.detection import heard as heard_rule
from heimdall.features import SCALAR_NAMES


@dataclass(frozen=True)
class PowerObservations:
    """Per session and receiver: position, total power, heard/present, and what the rows imply.

    ``signal_dbm`` is the noise-free signal power of heard rows (NaN elsewhere; defaults to the power),
    ``threshold_dbm`` the signal level a present, unheard row stayed below (NaN where unknown) and
    ``frequency_hz`` each session's carrier (NaN: unknown, one band).
    """

    receivers_enu: np.ndarray  # (N, R, 2) metres
    power_dbm: np.ndarray  # (N, R) total power, NaN if absent
    heard: np.ndarray  # (N, R) bool
    present: np.ndarray  # (N, R) bool
    signal_dbm: np.ndarray | None = None  # (N, R)
    threshold_dbm: np.ndarray | None = None  # (N, R)
    frequency_hz: np.ndarray | None = None  # (N,)

    def __post_init__(self) -> None:
        n, r = self.power_dbm.shape
        if (
            self.receivers_enu.shape != (n, r, 2)
            or self.heard.shape != (n, r)
            or self.present.shape != (n, r)
        ):
            raise ValueError(
                f"inconsistent observation shapes: power {self.power_dbm.shape}, heard {self.heard.shape}, "
                f"present {self.present.shape}, receivers {self.receivers_enu.shape}"
            )
        heard = self.heard & self.present & np.isfinite(self.power_dbm)
        object.__setattr__(self, "heard", heard)
        signal = self.power_dbm if self.signal_dbm is None else self.signal_dbm
        object.__setattr__(self, "signal_dbm", np.where(heard, signal, np.nan))
        threshold = np.full((n, r), np.nan) if self.threshold_dbm is None else self.threshold_dbm
        object.__setattr__(self, "threshold_dbm", np.where(self.present & ~heard, threshold, np.nan))
        freq = np.full(n, np.nan) if self.frequency_hz is None else np.asarray(self.frequency_hz, float)
        object.__setattr__(self, "frequency_hz", freq)
        for name in ("signal_dbm", "threshold_dbm"):
            if getattr(self, name).shape != (n, r):
                raise ValueError(f"inconsistent observation shapes: {name} {getattr(self, name).shape}")
        if self.frequency_hz.shape != (n,):  # type: ignore[union-attr]
            raise ValueError(f"inconsistent observation shapes: frequency_hz {self.frequency_hz.shape}")  # type: ignore[union-attr]

    @property
    def signal(self) -> np.ndarray:
        return self.signal_dbm  # type: ignore[return-value]

    @property
    def threshold(self) -> np.ndarray:
        return self.threshold_dbm  # type: ignore[return-value]

    def take(self, sel: slice | np.ndarray) -> PowerObservations:
        """The sessions `sel` only."""
        return PowerObservations(
            self.receivers_enu[sel],
            self.power_dbm[sel],
            self.heard[sel],
            self.present[sel],
            self.signal[sel],
            self.threshold[sel],
            self.frequency_hz[sel],  # type: ignore[index]
        )


def observations_from_arrays(arrays: Any, idx: np.ndarray, drop: int | None = None) -> PowerObservations:
    """The sessions `idx` of session arrays as power observations; `drop` removes a receiver (absent).

    Reads ``row_power_db``/``row_snr_db`` (what the acquisition rows say); an IQ row without an SNR takes
    the one the features estimated from its recording. ``row_snr_db`` and ``frequency_hz`` are optional.
    """
    power_col, snr_col = SCALAR_NAMES.index("power_dbm"), SCALAR_NAMES.index("snr_db")
    rows_power = getattr(arrays, "row_power_db", None)
    power = (rows_power[idx] if rows_power is not None else arrays.scalars[idx, :, power_col]).astype(float)
    n, r = power.shape
    from_iq = bool(getattr(arrays, "has_spectrogram", False))  # the features estimated an SNR per recording
    estimated_snr = arrays.scalars[idx, :, snr_col].astype(float) if from_iq else np.full((n, r), np.nan)
    rows_snr = getattr(arrays, "row_snr_db", None)
    if rows_snr is None:
        snr = estimated_snr
    else:
        snr = np.where(np.isfinite(rows_snr[idx]), rows_snr[idx], estimated_snr)
    present = arrays.mask[idx].copy() & np.isfinite(power)
    if drop is not None:
        present[:, drop] = False
    has_snr = np.isfinite(snr)
    heard = present & np.where(has_snr, heard_rule(snr), True)
    signal, noise = signal_and_noise_dbm(power, np.where(has_snr, snr, 0.0))
    signal = np.where(has_snr, signal, power)
    threshold = np.where(present & ~heard & has_snr, noise + HEARD_SNR_DB, np.nan)
    freq = getattr(arrays, "frequency_hz", None)
    return PowerObservations(
        arrays.receiver_enu_m[idx],
        np.where(present, power, np.nan),
        heard,
        present,
        signal,
        threshold,
        None if freq is None else np.asarray(freq, float)[idx],
    )


def receiver_floors(obs: PowerObservations, band: np.ndarray, n_bands: int) -> np.ndarray:
    """(bands, R) the weakest heard signal per band and receiver: the threshold of an unheard row
    whose own threshold is unknown (a receiver without a heard row there gets the weakest overall)."""
    n_r = obs.signal.shape[1]
    overall = float(np.nanmin(obs.signal)) if obs.heard.any() else -130.0
    floors = np.full((n_bands, n_r), overall)
    for b in range(n_bands):
        s = obs.signal[band == b]
        seen = np.isfinite(s).any(axis=0)
        floors[b, seen] = np.nanmin(s[:, seen], axis=0)
    return floors


def fill_thresholds(obs: PowerObservations, band: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Thresholds of present unheard rows, the receiver's floor where the row gives none."""
    unknown = obs.present & ~obs.heard & ~np.isfinite(obs.threshold)
    return np.where(unknown, floors[band], obs.threshold)


def rmse(pos: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((pos - truth) ** 2, axis=1))))


def gaussian_nll(pos: np.ndarray, cov: np.ndarray, truth: np.ndarray) -> float:
    r = truth - pos
    d2 = np.einsum("ni,nij,nj->n", r, np.linalg.inv(cov), r)
    return float(np.mean(0.5 * d2 + 0.5 * np.log(np.linalg.det(cov)) + np.log(2 * np.pi)))


def grid_edges(
    grid: Mapping[str, Sequence[Any]],
    chosen: Mapping[str, Any],
    limits: Mapping[str, tuple[float | None, float | None]],
) -> list[str]:
    """One line per numeric parameter chosen on an edge of its grid that is not a limit of its domain.

    ``limits[name]`` is (lowest, highest) meaningful value (e.g. k ≥ 1, an exponent ≥ 0): a choice
    there is the domain's end, not the grid's, so it is not reported. Categorical axes have no edge.
    """
    lines = []
    for name, values in grid.items():
        if name not in chosen or not all(isinstance(v, int | float) for v in values) or len(values) < 2:
            continue
        lo, hi = limits.get(name, (None, None))
        c = chosen[name]
        if (c == values[0] and values[0] != lo) or (c == values[-1] and values[-1] != hi):
            lines.append(f"{name} = {c:g} is on grid edge (grid {values[0]:g} … {values[-1]:g})")
    return lines


def tuning_report(
    grid: Mapping[str, Sequence[Any]],
    chosen: Mapping[str, Any],
    limits: Mapping[str, tuple[float | None, float | None]],
    **extra: Any,
) -> dict[str, Any]:
    """The tuning record every baseline returns: grid, chosen values, and what sits on a grid edge."""
    edges = grid_edges(grid, chosen, limits)
    return {
        "grid": {k: list(v) for k, v in grid.items()},
        "chosen": dict(chosen),
        **extra,
        "on_grid_edge": edges,
    }
