"""Stored sessions → dense per-receiver arrays (features, mask, truth), with skips counted.

Loading is done once per run: IQ comes from the feature cache when possible, otherwise from the
object store (validated against its row) and is then cached. Sessions heard by fewer than
`min_receivers` receivers are skipped and counted, never silently dropped; so is a session whose
IQ is missing, corrupt, non-finite or of the wrong length: one bad session never aborts a run (it
is counted and named in a warning; only when no session is left is its own error raised).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.data.array_store import building, content_fingerprint, open_arrays, save_arrays, store_folder
from heimdall.data.feature_cache import CachedFeatures, FeatureCache
from heimdall.data.network import ReceiverNetwork
from heimdall.data.row_file import RowFile
from heimdall.data.spectrograms import Spectrograms, features_for
from heimdall.data.splits import (
    DEFAULT_SITE_RADIUS_M,
    SPLIT_STRATEGIES,
    DatasetError,
    limit_train,
    split_sessions,
)
from heimdall.features import SCALAR_NAMES, FeatureConfig
from heimdall.simulate.scenario import Scenario
from heimdall.storage.database import Database
from heimdall.storage.objectstore import ObjectNotFoundError, ObjectStore
from heimdall.storage.queries import StoredSession, dataset_labels, list_sessions
from heimdall.storage.scenarios import StoredTruth, load_scenarios, read_simulation_truth

log = logging.getLogger("heimdall.data")

N_SCALARS = len(SCALAR_NAMES)
FETCH_WORKERS = 8  # IQ objects read (S3 round trips) and turned into features at once
HEARD = SCALAR_NAMES.index("heard")
# Appended to the scalars of power-only data with moving receivers (see SessionArrays).
MOVING_SCALAR_NAMES = ("receiver_offset_east_km", "receiver_offset_north_km")


# Why a session's data cannot be used (keys of SessionArrays.skipped, next to the receiver count).
BAD_IQ = "unreadable_iq"  # object missing, corrupt .npy, NaN/Inf, all zeros, receivers of different lengths
BAD_SHAPE = "wrong_recording_length"  # features of another shape than the other sessions'
NON_FINITE = "non_finite_features"


@dataclass
class SessionArrays:
    """Everything a model sees of N sessions over the R receivers of `network`.

    ``scalars`` holds S = 4 channels per receiver, ``SCALAR_NAMES`` (power_dbm, noise_floor_dbm,
    snr_db, heard; NaN = unknown). Power-only data (no spectrogram) in which some receiver moves (a
    measurement row with its own receiver_latitude/longitude, e.g. POWDER's buses) gets S = 6: two
    more channels, ``MOVING_SCALAR_NAMES``, the receiver's east/north offset in km of this session's
    position from its nominal position in ``network`` (its mean position), 0 for fixed receivers and
    NaN where the receiver is absent. The model's receiver position is the nominal one, so these
    channels are what tells it where a bus was. Sessions with spectrograms keep S = 4 (the ONNX IQ
    path computes exactly those four).
    """

    session_ids: list[uuid.UUID]
    splits: np.ndarray  # (N,) "train" | "val" | "test"
    spectrogram: np.ndarray | RowFile  # (N, R, C, F) float32 log-mel dB; (N, R, 0, 0) for power-only data
    scalars: np.ndarray  # (N, R, S) float32: SCALAR_NAMES (+ MOVING_SCALAR_NAMES when S = 6), NaN = unknown
    mask: np.ndarray  # (N, R) bool: the receiver has a usable measurement
    target_enu_m: np.ndarray  # (N, 2) float64, metres in network.frame
    target_sigma_m: np.ndarray  # (N,) truth uncertainty (error_margin_meters)
    truth_latlon: np.ndarray  # (N, 2) float64
    network: ReceiverNetwork
    datasets: tuple[str, ...]
    feature_hash: str
    skipped: dict[str, int] = field(default_factory=dict)
    # What the rows say (for classical baselines and the Bayes oracle, which read the acquisition
    # service's measured values rather than features): NaN where a receiver has no row.
    row_power_db: np.ndarray | None = None  # (N, R) signal_strength_db
    row_snr_db: np.ndarray | None = None  # (N, R) snr_db
    frequency_hz: np.ndarray | None = None  # (N,) carrier of the session
    receiver_enu_m: np.ndarray | None = None  # (N, R, 2) where each receiver was (moving receivers move)
    session_datasets: np.ndarray | None = None  # (N,) label of each session
    # What the simulator drew (the Bayes oracle's truth), from the store's `simulation_truth` and
    # `scenarios` tables; None when no session of the set was simulated with its truth stored.
    scenario_sha256: np.ndarray | None = None  # (N,) object: content hash of the scenario, "" = none
    scenarios: dict[str, Scenario] | None = None  # sha → the stored scenario (any working directory)
    sim_doppler_hz: np.ndarray | None = None  # (N,) float64 maximum Doppler of the session, NaN = none
    sim_rician_k_db: np.ndarray | None = None  # (N, R) float64 Rician K per receiver, NaN = unknown

    @property
    def has_spectrogram(self) -> bool:
        return self.spectrogram.shape[2] > 0

    @property
    def scalar_names(self) -> tuple[str, ...]:
        return (*SCALAR_NAMES, *MOVING_SCALAR_NAMES)[: self.scalars.shape[2]]

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def subset(self, sel: np.ndarray, splits: np.ndarray) -> SessionArrays:
        """The sessions `sel` (indices) with new split names; every per-session field is sliced."""
        per_session: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) and f.name != "splits":
                per_session[f.name] = value[sel]
            elif isinstance(value, RowFile):  # a view of the same file: nothing is read
                per_session[f.name] = value.take(sel)
        return replace(
            self,
            session_ids=[self.session_ids[i] for i in sel],
            splits=np.asarray(splits, dtype=object),
            **per_session,
        )

    def counts(self) -> dict[str, int]:
        return {s: int((self.splits == s).sum()) for s in ("train", "val", "test")}


def _receiver_offsets_km(
    network: ReceiverNetwork, mask: np.ndarray, moved: Sequence[tuple[int, int, float, float]]
) -> np.ndarray:
    """(N, R, 2) east/north km of each present receiver from its network position (0 if it is fixed)."""
    out = np.where(mask[..., None], np.float32(0.0), np.float32(np.nan)).repeat(2, axis=2)
    i, k, lat, lon = (np.asarray(c) for c in zip(*moved, strict=True))
    here = network.frame.to_enu(lat.astype(float), lon.astype(float))
    out[i, k] = ((here - network.positions_enu_m()[k]) / 1000.0).astype(np.float32)
    return out


def load_session_arrays(
    db: Database,
    store: ObjectStore,
    datasets: Sequence[str],
    feature_config: FeatureConfig,
    cache_root: Path,
    max_sessions: int | None = None,
    min_receivers: int = 3,
    network: ReceiverNetwork | None = None,
    progress: Callable[[int, int], None] | None = None,
    split: str = "hash",
    test_datasets: Sequence[str] = (),
    val_fraction: float = 0.1,
    max_train: int | None = None,
    val_datasets: Sequence[str] = (),
    site_radius_m: float = DEFAULT_SITE_RADIUS_M,
    split_warnings: bool = True,
    store_root: Path | None = None,
) -> SessionArrays:
    """Load approved sessions of `datasets` into arrays; `network` fixes the receiver order if given.

    `split` names the train/val/test strategy (:func:`heimdall.data.splits.split_sessions`): "hash"
    of the session id, or a test set from the notes ("powder_random", "powder_grid") with validation
    carved from train by whole time blocks; it applies to the sessions kept after the skips.
    `test_datasets` / `val_datasets` hold whole labels out as the test / validation split; sessions of
    one transmitter site (same known source, or truths within `site_radius_m`) share a split;
    `max_train` keeps a nested, deterministic subset of the training sessions (the others: "unused").

    `store_root` keeps the result for a warm start (:mod:`heimdall.data.array_store`): the next load of
    the same input over the same stored content reads it back memory-mapped instead of the database.
    """
    if split not in SPLIT_STRATEGIES:
        raise DatasetError(f"unknown split {split!r}; choose one of {list(SPLIT_STRATEGIES)}")
    options = {
        "datasets": list(datasets),
        "features": feature_config.config_hash(),
        "max_sessions": max_sessions,
        "min_receivers": min_receivers,
        "network": network.to_dict() if network is not None else None,
        "split": split,
        "test_datasets": list(test_datasets),
        "val_fraction": val_fraction,
        "max_train": max_train,
        "val_datasets": list(val_datasets),
        "site_radius_m": site_radius_m,
    }

    def cold(spill: Path | None) -> SessionArrays:
        return _from_database(
            db, store, datasets, feature_config, cache_root, max_sessions, min_receivers, network, progress,
            split, test_datasets, val_fraction, max_train, val_datasets, site_radius_m, split_warnings, spill,
        )  # fmt: skip

    if store_root is None:
        return cold(None)
    folder, fingerprint = store_folder(store_root, options), content_fingerprint(db, datasets)
    stored = open_arrays(folder, fingerprint, db)
    if stored is not None:
        log.info("warm start: the arrays of this input are read from %s", folder)
        return SessionArrays(**stored)
    with building(folder) as tmp:  # the spectrograms are written there session by session
        return save_arrays(tmp, folder, fingerprint, cold(tmp))


def _from_database(
    db: Database,
    store: ObjectStore,
    datasets: Sequence[str],
    feature_config: FeatureConfig,
    cache_root: Path,
    max_sessions: int | None,
    min_receivers: int,
    network: ReceiverNetwork | None,
    progress: Callable[[int, int], None] | None,
    split: str,
    test_datasets: Sequence[str],
    val_fraction: float,
    max_train: int | None,
    val_datasets: Sequence[str],
    site_radius_m: float,
    split_warnings: bool,
    spill: Path | None,
) -> SessionArrays:
    """:func:`load_session_arrays` from the database and the object store (the cold path); with
    ``spill`` (a folder) the spectrograms go to a :class:`RowFile` there instead of memory."""
    sessions = list_sessions(db, datasets, "approved", limit=max_sessions)
    if not sessions:
        available = dataset_labels(db)
        raise DatasetError(
            f"no approved sessions for dataset(s) {list(datasets)} in {db.safe_url}; "
            f"approved sessions per label: {available or 'none'}"
        )
    network = network or ReceiverNetwork.from_sessions(sessions)
    index = network.index()
    with db.engine.connect() as conn:
        truth = read_simulation_truth(conn, [s.id for s in sessions])
    cache = FeatureCache(cache_root, feature_config)
    skipped: Counter[str] = Counter()
    broken: list[Exception] = []  # why each session skipped for its data was: raised if none is left

    def skip(s: StoredSession, reason: str, exc: Exception) -> None:
        skipped[reason] += 1
        broken.append(exc)
        log.warning("skipped session %s (%s): %s", s.id, reason, exc)

    for s in sessions:
        unknown = sorted({m.station_id for m in s.measurements} - set(index))
        if unknown:
            raise DatasetError(f"session {s.id}: station id(s) {unknown} are not receivers of this model")

    def features(s: StoredSession) -> tuple[CachedFeatures | None, Exception | None]:
        try:
            variant = truth[s.id].scenario_sha256 if s.id in truth else ""
            return features_for(s, store, cache, feature_config, variant), None
        except (ObjectNotFoundError, ValueError) as exc:  # IQDataError, DatasetError, shorter than n_fft
            return None, exc

    with_source = [s for s in sessions if s.source is not None]
    if len(with_source) < len(sessions):
        skipped["no_known_source"] += len(sessions) - len(with_source)
    bound, r = len(with_source), network.size  # arrays are sized for every session, cut to the kept ones
    spec: Spectrograms | None = None  # created by the first session with features (fixes their shape)
    scal = np.full((bound, r, N_SCALARS), np.nan, np.float32)
    mask = np.zeros((bound, r), bool)
    moved: list[tuple[int, int, float, float]] = []  # (session, receiver, lat, lon) of moving receivers
    target_latlon = np.zeros((bound, 2))
    sigma = np.zeros(bound)
    row_power = np.full((bound, r), np.nan)
    row_snr = np.full((bound, r), np.nan)
    freq = np.full(bound, np.nan)
    bad = np.zeros(bound, bool)  # sessions skipped below for their features
    kept: list[StoredSession] = []
    # IQ objects are fetched (and their features computed) FETCH_WORKERS at a time, in session order;
    # each session's spectrograms go to `spec` at once, so they are never all held in memory
    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        for j, (s, (feats, exc)) in enumerate(zip(with_source, pool.map(features, with_source), strict=True)):
            if progress is not None:
                progress(j, len(with_source))
            if exc is not None:
                skip(s, BAD_IQ, exc)
                continue
            i = len(kept)
            kept.append(s)
            if feats is not None and spec is None:
                spec = Spectrograms(bound, (r, *feats.log_mel.shape[1:]), spill)
            block = spec.block() if spec is not None else None
            for m in s.measurements:
                k = index[m.station_id]
                row_power[i, k] = np.nan if m.signal_strength_db is None else m.signal_strength_db
                row_snr[i, k] = np.nan if m.snr_db is None else m.snr_db
                freq[i] = m.frequency_hz
                row = feats.row(m.station_id) if feats is not None else None
                if row is not None and block is not None:
                    if row[0].shape != block.shape[1:]:
                        msg = f"session {s.id}: station {m.station_id} has features {row[0].shape}"
                        skip(s, BAD_SHAPE, DatasetError(f"{msg}, the other sessions {block.shape[1:]}"))
                        bad[i] = True
                        break
                    block[k], scal[i, k] = row
                elif m.signal_strength_db is not None:  # power-only row: what the row says
                    snr = m.snr_db if m.snr_db is not None else np.nan
                    scal[i, k] = (m.signal_strength_db, np.nan, snr, 1.0)
                else:
                    continue
                mask[i, k] = True
                if m.moving_receiver:
                    moved.append((i, k, m.receiver_latitude, m.receiver_longitude))
                finite = block is None or np.isfinite(block[k]).all()
                if not finite or not np.isfinite(scal[i, k, 0]):
                    msg = f"non-finite features for session {s.id}, station {m.station_id}"
                    skip(s, NON_FINITE, DatasetError(msg))
                    bad[i] = True
                    break
            if bad[i]:
                mask[i] = False
                continue
            if spec is not None and block is not None:
                spec.put(i, block)
            target_latlon[i] = (s.source.latitude, s.source.longitude)  # type: ignore[union-attr]
            sigma[i] = s.source.error_margin_meters or 0.0  # type: ignore[union-attr]
    n = len(kept)
    has_spec = spec is not None
    scal, mask, target_latlon, sigma = scal[:n], mask[:n], target_latlon[:n], sigma[:n]
    row_power, row_snr, freq, bad = row_power[:n], row_snr[:n], freq[:n], bad[:n]
    receiver_enu = np.broadcast_to(network.positions_enu_m(), (n, r, 2)).copy()
    if moved:
        offsets_km = _receiver_offsets_km(network, mask, moved)
        receiver_enu += np.nan_to_num(offsets_km.astype(float)) * 1000.0
        if not has_spec:
            scal = np.concatenate([scal, offsets_km], axis=2)
    heard = mask & (np.nan_to_num(scal[..., HEARD]) >= 0.5)  # ⟺ detection.heard(snr)
    few = (heard.sum(axis=1) < min_receivers) & ~bad
    if few.any():
        skipped[f"fewer_than_{min_receivers}_usable_receivers"] += int(few.sum())
    sel = np.flatnonzero(~few & ~bad)
    if sel.size == 0:
        if broken and not few.any():
            raise broken[0]  # every session with a truth has bad data: the first one's error says why
        raise DatasetError(
            f"none of the {len(sessions)} approved sessions of {list(datasets)} has ≥ {min_receivers} usable "
            f"receivers (skipped: {dict(skipped)})"
        )
    ids = [kept[i].id for i in sel]
    try:
        splits = split_sessions(
            [kept[i] for i in sel],
            split,
            test_datasets,
            val_fraction,
            val_datasets,
            site_radius_m,
            warn=split_warnings,
        )
        splits = limit_train(splits, ids, max_train)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    enu = network.frame.to_enu(target_latlon[sel, 0], target_latlon[sel, 1])
    if skipped:
        log.warning("skipped sessions: %s", dict(skipped))
    return SessionArrays(
        session_ids=ids,
        splits=splits,
        spectrogram=spec.take(sel) if spec is not None else np.zeros((sel.size, r, 0, 0), np.float32),
        scalars=scal[sel],
        mask=mask[sel],
        target_enu_m=enu,
        target_sigma_m=sigma[sel],
        truth_latlon=target_latlon[sel],
        network=network,
        datasets=tuple(datasets),
        feature_hash=feature_config.config_hash(),
        skipped=dict(skipped),
        row_power_db=row_power[sel],
        row_snr_db=row_snr[sel],
        frequency_hz=freq[sel],
        receiver_enu_m=receiver_enu[sel],
        session_datasets=np.array([kept[i].dataset for i in sel], dtype=object),
        **_simulation_fields(db, [truth.get(i) for i in ids], index),
    )


def _simulation_fields(
    db: Database, truths: Sequence[StoredTruth | None], index: dict[int, int]
) -> dict[str, object]:
    """The SessionArrays fields of the simulation truth (all None when no session has any)."""
    if not any(t is not None for t in truths):
        return {}
    n, r = len(truths), len(index)
    sha = np.array([t.scenario_sha256 if t else "" for t in truths], dtype=object)
    doppler = np.array([t.doppler_hz if t else np.nan for t in truths], np.float64)
    k_db = np.full((n, r), np.nan)
    for i, t in enumerate(truths):
        for station, k in t.rician_k_db.items() if t else ():
            if station in index:
                k_db[i, index[station]] = k
    with db.engine.connect() as conn:
        scenarios = load_scenarios(conn, set(sha.tolist()))
    return {
        "scenario_sha256": sha,
        "scenarios": scenarios,
        "sim_doppler_hz": doppler,
        "sim_rician_k_db": k_db,
    }
