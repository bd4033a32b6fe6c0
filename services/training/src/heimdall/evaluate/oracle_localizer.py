"""The Bayes oracle as a :class:`~heimdall.evaluate.localizers.Localizer`: the yardstick for simulated data.

The exact posterior of the simulator's own measurement model; nothing is fitted or tuned. Which model:

* the world is the scenario the sessions were simulated from: the one stored with the data
  (``arrays.scenarios[sha]``, by the content hash every simulated session records), so it is found from
  any working directory; data sets without that provenance fall back to the shipped scenario their
  dataset label names (``sim:<name>``). A label whose name resolves to other content than the
  sessions' recorded hash is refused, and so is a user's scenario file (``evaluate --scenario``)
  whose hash is not the sessions';
* ``nw-italy-v1`` (fading normalised per recording, SNR against the known noise) uses
  :mod:`heimdall.evaluate.oracle`; a scenario with un-normalised fading or blind SNR rows (``nw-italy-v2``)
  uses :mod:`heimdall.evaluate.oracle_faded` with each session's true Doppler and each receiver's true K.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.data.arrays import SessionArrays
from heimdall.errors import UserError
from heimdall.evaluate.localizers import Prediction
from heimdall.evaluate.oracle_cache import OracleCache

if TYPE_CHECKING:
    from heimdall.evaluate.oracle_faded import FadedSessions
    from heimdall.simulate.scenario import Scenario

__all__ = ["BayesOracleLocalizer", "OracleScenarioError", "is_faded"]


class OracleScenarioError(UserError):
    """The scenario offered for the oracle is not the one the sessions were simulated from."""


def is_faded(scenario: Scenario) -> bool:
    """True when the v1 oracle's assumptions fail: fading not normalised, or SNR rows estimated blind."""
    return (not scenario.fading.normalise) or scenario.snr_estimator == "blind"


def _short(sha: str) -> str:
    return sha[:12]


class BayesOracleLocalizer:
    """The Bayes oracle of a simulated scenario: the posterior under the simulator's own model.

    A yardstick, not a competitor: it knows the world that generated the data, so nothing is fitted
    or tuned. Its positions are converted from the scenario's frame to the network's via lat/lon.
    """

    name = "bayes_oracle"

    def __init__(self, scenario: str | Scenario, arrays: SessionArrays) -> None:
        from heimdall.simulate.propagation import measurement_model
        from heimdall.simulate.scenario import load_scenario
        from heimdall.simulate.world import build_world

        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.mm = measurement_model(build_world(self.scenario))
        index = arrays.network.index()
        missing = [sid for sid in self.mm.receiver_ids if sid not in index]
        if missing:
            raise OracleScenarioError(
                f"scenario {self.scenario.name}'s receivers {missing} are not receivers of these sessions"
            )
        self.order = [index[sid] for sid in self.mm.receiver_ids]
        self.faded = is_faded(self.scenario)
        #: where posteriors are kept between evaluations (None: no cache); see :mod:`oracle_cache`
        self.cache: OracleCache | None = None

    @classmethod
    def for_arrays(
        cls, arrays: SessionArrays, scenario: Scenario | None = None
    ) -> BayesOracleLocalizer | None:
        """The oracle of the sessions' own scenario, or None when they are not one simulation's.

        `scenario` (a user's file) must be the one recorded with the sessions (OracleScenarioError
        otherwise). Without it: the stored scenario of the sessions' recorded hash; for data sets
        without provenance, the shipped scenario named by every dataset label (``sim:<name>``).
        """
        from heimdall.simulate.scenario import available_scenarios, load_scenario

        shas = getattr(arrays, "scenario_sha256", None)  # absent from hand-built arrays: no provenance
        recorded = set() if shas is None else {str(s) for s in shas}
        if scenario is not None:
            want = scenario.content_sha256
            if recorded != {want}:
                have = ", ".join(sorted(_short(s) or "none" for s in recorded)) or "none"
                raise OracleScenarioError(
                    f"scenario {scenario.name} (sha256 {_short(want)}) is not the scenario these sessions "
                    f"were simulated from (recorded: {have})"
                )
            return cls(scenario, arrays)
        labels = {str(d) for d in arrays.datasets}
        names = {d.split(":", 1)[1] for d in labels if d.startswith("sim:")}
        if recorded and "" not in recorded:
            if len(recorded) != 1:
                return None  # several scenarios: no single world
            sha = recorded.pop()
            stored = (getattr(arrays, "scenarios", None) or {}).get(sha)
            for name in sorted(names & set(available_scenarios())):
                if load_scenario(name).content_sha256 != sha:
                    raise OracleScenarioError(
                        f"dataset label sim:{name} names the shipped scenario {name}, but these sessions "
                        f"were simulated from other content (sha256 {_short(sha)}): give --scenario FILE"
                    )
            if stored is not None:
                return cls(stored, arrays)
            if len(names) == 1:
                named = names.pop()
                if named in available_scenarios():  # its hash equals the recorded one (checked above)
                    return cls(named, arrays)
            return None
        if recorded - {""}:
            return None  # some sessions simulated, some not
        if len(names) != 1 or not all(d.startswith("sim:") for d in labels):
            return None
        return cls(names.pop(), arrays)

    def fit(self, arrays: SessionArrays, train_idx: np.ndarray) -> None:
        """Nothing to fit: the oracle knows the measurement model."""

    def tune(self, arrays: SessionArrays, val_idx: np.ndarray) -> dict[str, Any]:
        return {}

    def _faded_sessions(self, arrays: SessionArrays, idx: np.ndarray) -> FadedSessions:
        """The fading truth of sessions `idx` (model receiver order) and the detection blur."""
        from heimdall.evaluate.detection_blur import DetectionBlur, detection_blur
        from heimdall.evaluate.oracle_faded import FadedSessions
        from heimdall.features import FeatureConfig

        sc, mm = self.scenario, self.mm
        k_db, doppler = arrays.sim_rician_k_db, arrays.sim_doppler_hz
        if sc.fading.normalise:
            k_db = np.zeros((idx.size, len(self.order)))
            doppler = np.zeros(idx.size)
        elif k_db is None or doppler is None:
            raise OracleScenarioError(
                f"scenario {sc.name} needs each session's simulated Doppler and Rician K, and these sessions "
                "record none (simulate them again with this version)"
            )
        else:
            k_db, doppler = k_db[idx][:, self.order], doppler[idx]
        n_samples = round(sc.default_duration_s * sc.sample_rate_hz)
        if arrays.has_spectrogram:  # the recordings' own length must be the scenario's default one
            frames = FeatureConfig().n_frames(n_samples)
            if arrays.spectrogram.shape[3] != frames:
                raise OracleScenarioError(
                    f"these recordings have {arrays.spectrogram.shape[3]} STFT frames, not the {frames} of "
                    f"scenario {sc.name}'s {sc.default_duration_s:g} s: the oracle needs their true length"
                )
        if sc.snr_estimator == "blind":
            blur = detection_blur(
                n_samples,
                sc.sample_rate_hz,
                float(np.median(mm.noise_floor_dbm)),
                tuple(sc.transmitter.content.items()),
                sc.transmitter.fm_deviation_hz,
                sc.frequency_offset_max_hz,
            )
        else:
            blur = DetectionBlur(bias_db=0.0, sigma_db=0.0, n_recordings=0)
        return FadedSessions(
            doppler_hz=np.asarray(doppler, np.float64),
            rician_k_db=np.asarray(k_db, np.float64),
            duration_s=np.full(idx.size, n_samples / sc.sample_rate_hz),
            n_samples=np.full(idx.size, n_samples),
            blur=blur,
            normalised=sc.fading.normalise,
        )

    def _keys(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None) -> list[str]:
        """Cache keys: the scenario, the session, the removed receiver and every input the oracle reads."""
        assert self.cache is not None
        k_db, doppler = arrays.sim_rician_k_db, arrays.sim_doppler_hz
        keys = []
        for i in idx:
            truth = [] if k_db is None or doppler is None else [k_db[i], doppler[i : i + 1]]
            keys.append(
                self.cache.key(
                    self.scenario.content_sha256,
                    str(arrays.session_ids[i]),
                    drop,
                    arrays.row_power_db[i],
                    arrays.row_snr_db[i],
                    arrays.frequency_hz[i : i + 1],
                    *truth,
                )
            )
        return keys

    def _posteriors(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None) -> Prediction:
        """Posterior means and covariances in the scenario's world frame."""
        from heimdall.evaluate.oracle import bayes_oracle
        from heimdall.evaluate.oracle_faded import faded_bayes_oracle

        mm, order = self.mm, self.order
        power = arrays.row_power_db[idx][:, order].copy()
        snr = arrays.row_snr_db[idx][:, order].copy()
        if drop is not None:
            k = order.index(drop)
            power[:, k] = snr[:, k] = np.nan
        band = np.array([mm.band_index(f) for f in arrays.frequency_hz[idx]], dtype=np.int64)
        if self.faded:
            return faded_bayes_oracle(mm, band, power, snr, self._faded_sessions(arrays, idx))
        return bayes_oracle(mm, band, power, snr)

    def predict(self, arrays: SessionArrays, idx: np.ndarray, drop: int | None = None) -> Prediction:
        idx = np.asarray(idx)
        if self.cache is None:
            mean_w, cov_w = self._posteriors(arrays, idx, drop)
        else:
            keys = self._keys(arrays, idx, drop)
            mean_w, cov_w = np.empty((idx.size, 2)), np.empty((idx.size, 2, 2))
            hits = [self.cache.get(k) for k in keys]
            todo = np.array([j for j, h in enumerate(hits) if h is None], dtype=np.int64)
            for j, h in enumerate(hits):
                if h is not None:
                    mean_w[j], cov_w[j] = h
            if todo.size:
                m, c = self._posteriors(arrays, idx[todo], drop)
                mean_w[todo], cov_w[todo] = m, c
                for j, mj, cj in zip(todo, m, c, strict=True):
                    self.cache.put(keys[j], mj, cj)
        mm = self.mm
        lat, lon = mm.world.frame.to_latlon(mean_w)
        pos = arrays.network.frame.to_enu(lat, lon)  # both frames: east/north-aligned tangent planes
        return pos, cov_w

    def report(self, tuning: dict[str, Any]) -> dict[str, Any]:
        return {
            "frame": "scenario world, converted via lat/lon",
            "scenario": self.scenario.name,
            "scenario_sha256": self.scenario.content_sha256,
            "likelihood": "faded (v2: fading residual and blind detection)" if self.faded else "v1",
        }
