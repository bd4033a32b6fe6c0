"""kNN fingerprinting on received-signal vectors: per band, optimal power offset, outage drops a dimension.

A query is compared with each training session over the receivers present in both (a receiver removed
for the outage study, or without a reading, is simply not a dimension). On the receivers both heard,
the unknown transmit-power difference is removed by the least-squares offset c = mean(S_q − S_ref)
(closed form) when ``offset = "fitted"``; a receiver heard by one session and not by the other is a
one-sided (censored) term: the heard signal, shifted by c, should lie below the other's threshold, and
only the excess counts. The distance is the mean squared term over the common receivers. k, the
weighting, the offset mode and the band mode ("per_band": only training sessions of the query's carrier
band; "pooled": all) are tuned on validation; the covariance is the neighbours' spread plus a floor,
scaled by a factor chosen on validation NLL.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from heimdall.bands import band_centres, band_index
from heimdall.evaluate.baseline_common import (
    PowerObservations,
    fill_thresholds,
    gaussian_nll,
    receiver_floors,
    rmse,
    tuning_report,
)

CHUNK = 32  # queries per block: (32, N_train, R) arrays


class KNNFingerprint:
    """k nearest training sessions in signal space; position = (weighted) mean of theirs."""

    KS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100)
    WEIGHTS = ("uniform", "inverse_distance")
    OFFSETS = ("fitted", "none")
    BANDS = ("per_band", "pooled")
    SCALES = tuple(float(x) for x in np.round(np.geomspace(0.05, 50.0, 31), 4))

    def __init__(self) -> None:
        self.params: dict[str, Any] = {"k": 5, "weighting": "uniform", "offset": "fitted", "band": "per_band"}
        self.cov_scale = 1.0
        self.floor_m = 1.0

    def fit(self, obs: PowerObservations, truth_enu: np.ndarray) -> None:
        self.centres = band_centres(obs.frequency_hz)  # type: ignore[arg-type]
        band = band_index(obs.frequency_hz, self.centres)  # type: ignore[arg-type]
        self.floors = receiver_floors(obs, band, self.centres.size)
        self.ref = obs
        self.ref_band = band
        self.ref_threshold = fill_thresholds(obs, band, self.floors)
        self.ref_truth = truth_enu

    def _distances(self, obs: PowerObservations, offset: str, band_mode: str) -> np.ndarray:
        """(Nq, Nref) mean squared signal distance; inf where too few receivers are in common."""
        qband = band_index(obs.frequency_hz, self.centres)  # type: ignore[arg-type]
        qthr = fill_thresholds(obs, qband, self.floors)
        ref, rthr = self.ref, self.ref_threshold
        need = 2 if offset == "fitted" else 1
        out = np.full((obs.power_dbm.shape[0], ref.power_dbm.shape[0]), np.inf)
        for s in range(0, out.shape[0], CHUNK):
            sl = slice(s, s + CHUNK)
            hq, hr = obs.heard[sl, None, :], ref.heard[None]
            cq, cr = (obs.present & ~obs.heard)[sl, None, :], (ref.present & ~ref.heard)[None]
            both = hq & hr
            n_both = both.sum(axis=2)
            sq, sr = np.nan_to_num(obs.signal[sl, None, :]), np.nan_to_num(ref.signal[None])
            diff = np.where(both, sq - sr, 0.0)
            c = diff.sum(axis=2) / np.maximum(n_both, 1) if offset == "fitted" else np.zeros(n_both.shape)
            term = np.where(both, diff - c[..., None], 0.0) ** 2
            over_r = sq - c[..., None] - np.nan_to_num(rthr[None])
            term += np.where(hq & cr, np.maximum(over_r, 0.0), 0.0) ** 2
            over_q = sr + c[..., None] - np.nan_to_num(qthr[sl, None, :])
            term += np.where(cq & hr, np.maximum(over_q, 0.0), 0.0) ** 2
            common = (obs.present[sl, None, :] & ref.present[None]).sum(axis=2)
            d2 = term.sum(axis=2) / np.maximum(common, 1)
            ok = n_both >= need
            if band_mode == "per_band":
                same = qband[sl, None] == self.ref_band[None, :]
                has = (same & ok).any(axis=1, keepdims=True)  # no training session of that band: pooled
                ok &= same | ~has
            out[sl] = np.where(ok, d2, np.inf)
        return out

    def _neighbours(self, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, d2.shape[1])
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        dd = np.take_along_axis(d2, part, axis=1)
        order = np.lexsort((part, dd), axis=1)  # ties: the lower training index first
        return np.take_along_axis(part, order, axis=1), np.sqrt(np.take_along_axis(dd, order, axis=1))

    def _estimate(
        self, idx: np.ndarray, dist: np.ndarray, k: int, weighting: str
    ) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = idx[:, :k], dist[:, :k]
        finite = np.isfinite(dist)
        w = np.ones_like(dist) if weighting == "uniform" else 1.0 / np.maximum(np.nan_to_num(dist), 1e-3)
        w = np.where(finite, w, 0.0)
        none = ~finite.any(axis=1)  # no training session shares two heard receivers: the area's mean
        w[none] = 1.0
        w = w / w.sum(axis=1, keepdims=True)
        nb = np.where(none[:, None, None], self.ref_truth.mean(axis=0), self.ref_truth[idx])
        pos = np.einsum("nk,nki->ni", w, nb)
        d = nb - pos[:, None, :]
        spread = np.einsum("nk,nki,nkj->nij", w, d, d)
        spread[none] += np.cov(self.ref_truth.T)
        return pos, spread

    def _predict_raw(self, obs: PowerObservations, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = self._neighbours(self._distances(obs, p["offset"], p["band"]), p["k"])
        return self._estimate(idx, dist, p["k"], p["weighting"])

    def tune(self, obs: PowerObservations, truth_enu: np.ndarray) -> dict[str, Any]:
        scores: dict[tuple[Any, ...], float] = {}
        for offset, band in itertools.product(self.OFFSETS, self.BANDS):
            idx, dist = self._neighbours(self._distances(obs, offset, band), max(self.KS))
            for k, weighting in itertools.product(self.KS, self.WEIGHTS):
                pos = self._estimate(idx, dist, k, weighting)[0]
                scores[(k, weighting, offset, band)] = rmse(pos, truth_enu)
        k, weighting, offset, band = min(scores, key=lambda key: scores[key])
        self.params = {"k": k, "weighting": weighting, "offset": offset, "band": band}
        pos, spread = self._predict_raw(obs, self.params)
        best = scores[(k, weighting, offset, band)]
        self.floor_m = max(best / np.sqrt(2.0), 1.0)  # metres; exact matches still get an ellipse
        nll = [gaussian_nll(pos, c * (spread + np.eye(2) * self.floor_m**2), truth_enu) for c in self.SCALES]
        self.cov_scale = float(self.SCALES[int(np.argmin(nll))])
        return tuning_report(
            {
                "k": self.KS,
                "weighting": self.WEIGHTS,
                "offset": self.OFFSETS,
                "band": self.BANDS,
                "covariance_scale": self.SCALES,
            },
            {**self.params, "covariance_scale": self.cov_scale},
            {"k": (1, None)},
            val_rmse_m_best=float(best),
            band_centres_hz=[float(f) if np.isfinite(f) else None for f in self.centres],
        )

    def predict(self, obs: PowerObservations) -> tuple[np.ndarray, np.ndarray]:
        pos, spread = self._predict_raw(obs, self.params)
        return pos, self.cov_scale * (spread + np.eye(2) * self.floor_m**2)
