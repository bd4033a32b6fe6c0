"""Loading stored sessions into arrays: masks, skips, cache, splits and bad input."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from factories import make_session_record

from heimdall.data.arrays import DatasetError, load_session_arrays
from heimdall.data.dataset import HeimdallDataModule, HeimdallDataset
from heimdall.data.normalization import NormStats
from heimdall.data.splits import assign_splits, ids_digest, split_score
from heimdall.features import FeatureConfig
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.iq import IQDataError
from heimdall.storage.objectstore import ObjectNotFoundError
from heimdall.storage.recordings import write_sessions

LABEL = ["sim:nw-italy-v1"]


def test_arrays_shapes_and_truth(sim_services, cache_root) -> None:
    a = load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(), cache_root)
    n = len(a.session_ids)
    assert n == 40 and a.network.station_ids == (1, 2, 3, 4, 5, 6, 7)
    assert a.spectrogram.shape == (n, 7, 64, FeatureConfig().n_frames(1250))
    assert a.scalars.shape == (n, 7, 4) and a.mask.all()  # every receiver stored a recording
    assert ((a.scalars[..., 3] > 0.5).sum(axis=1) >= 3).all()  # ≥ 3 heard in every kept session
    assert np.isfinite(a.spectrogram).all() and np.isfinite(a.scalars).all()
    back = np.stack(a.network.frame.to_latlon(a.target_enu_m), axis=1)
    assert np.allclose(back, a.truth_latlon, atol=1e-9)
    assert sum(a.counts().values()) == n and min(a.counts().values()) >= 1


def test_second_load_reads_no_iq(sim_services, cache_root, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(), cache_root)

    def no_iq(*_a, **_k):
        raise AssertionError("IQ was read although the feature cache holds every recording")

    monkeypatch.setattr(sim_services.store, "get_bytes", no_iq)
    second = load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(), cache_root)
    assert np.array_equal(first.spectrogram, second.spectrogram)
    assert np.array_equal(first.scalars, second.scalars)
    # a different feature configuration is a different cache key: it must read IQ again
    with pytest.raises(AssertionError, match="IQ was read"):
        load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(n_mels=16), cache_root)


def test_splits_are_deterministic_and_stable() -> None:
    ids = [uuid.uuid5(uuid.NAMESPACE_DNS, str(i)) for i in range(2000)]
    a = assign_splits(ids)
    assert np.array_equal(a, assign_splits(ids))
    more = assign_splits(ids + [uuid.uuid4() for _ in range(500)])
    assert np.array_equal(a, more[:2000])  # adding data never moves a session
    frac = {s: float(np.mean(a == s)) for s in ("train", "val", "test")}
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["test"] - 0.1) < 0.02
    assert 0 <= split_score(ids[0]) < 1
    assert ids_digest(ids) == ids_digest(list(reversed(ids)))
    tiny = assign_splits(ids[:4])
    assert set(tiny) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="split fractions"):
        assign_splits(ids, 0.6, 0.5)


def test_datamodule_uses_training_statistics(sim_services, cache_root) -> None:
    a = load_session_arrays(sim_services.db, sim_services.store, LABEL, FeatureConfig(), cache_root)
    dm = HeimdallDataModule(a, batch_size=8, seed=1)
    tr = a.indices("train")
    expected = NormStats.fit(a.spectrogram[tr], a.scalars[tr], a.mask[tr])
    assert np.allclose(dm.stats.scalar_mean, expected.scalar_mean)
    spec, scal, mask, freq, _, _ = next(iter(dm.train_dataloader()))
    assert spec.shape[0] == 8 and scal.shape == (8, 7, 4) and mask.dtype.__str__() == "torch.bool"
    assert freq.shape == (8,) and bool((freq > 1e8).all())  # each session's carrier, in Hz
    assert abs(float(dm.datasets["train"].scalars[..., 0].mean())) < 0.2  # standardised on train
    batches = [b[4] for b in dm.train_dataloader()]  # the targets
    again = [b[4] for b in HeimdallDataModule(a, batch_size=8, seed=1).train_dataloader()]
    assert all((x == y).all() for x, y in zip(batches, again, strict=True))  # seeded shuffle
    stats2 = NormStats.from_dict(dm.stats.to_dict())
    assert np.array_equal(stats2.spec_std, dm.stats.spec_std)


def test_dataset_from_database(sim_services, cache_root) -> None:
    ds = HeimdallDataset.from_database(
        sim_services.db, sim_services.store, LABEL, "val", cache_root=cache_root
    )
    assert len(ds) >= 1 and len(ds[0]) == 6  # spectrogram, scalars, mask, frequency, target, sigma


def test_empty_approved_set_names_labels(sim_services, cache_root) -> None:
    with pytest.raises(
        DatasetError, match=r"no approved sessions for dataset\(s\) \['nope'\].*sim:nw-italy-v1"
    ):
        load_session_arrays(sim_services.db, sim_services.store, ["nope"], FeatureConfig(), cache_root)


def test_fit_stats_without_receivers() -> None:
    with pytest.raises(ValueError, match="no receiver is present"):
        NormStats.fit(np.zeros((2, 7, 4, 3)), np.zeros((2, 7, 4)), np.zeros((2, 7), bool))


@pytest.fixture
def small_services(tmp_path):
    services = open_services(Settings(data_dir=tmp_path / "hd"))
    yield services
    services.close()


def test_sessions_with_few_receivers_are_skipped_and_counted(small_services, cache_root) -> None:
    s = small_services
    recs = [make_session_record(i, stations=(1, 2, 3), n_samples=512) for i in range(4)]
    recs.append(make_session_record(9, stations=(1, 2), n_samples=512))
    write_sessions(s.db, s.store, s.settings.raw_iq_bucket, recs)
    # factory IQ is noise at -100 dBm, well above the noise floor: every receiver "hears"
    a = load_session_arrays(s.db, s.store, ["test:unit"], FeatureConfig(), cache_root)
    assert len(a.session_ids) == 4 and a.skipped == {"fewer_than_3_usable_receivers": 1}
    with pytest.raises(DatasetError, match="none of the 1 approved sessions"):
        load_session_arrays(
            s.db, s.store, ["test:unit"], FeatureConfig(), cache_root, max_sessions=1, min_receivers=4
        )


def test_missing_iq_object_is_a_clear_error(small_services, cache_root) -> None:
    s = small_services
    rec = make_session_record(0, n_samples=512)
    write_sessions(s.db, s.store, s.settings.raw_iq_bucket, [rec])
    s.store.delete(s.settings.raw_iq_bucket, f"sessions/{rec.acquisition_task_id}/websdr_2.npy")
    with pytest.raises(ObjectNotFoundError, match=f"session {rec.id}, station 2"):
        load_session_arrays(s.db, s.store, ["test:unit"], FeatureConfig(), cache_root)


def test_corrupt_iq_object_is_a_clear_error(small_services, cache_root) -> None:
    s = small_services
    rec = make_session_record(0, n_samples=512)
    write_sessions(s.db, s.store, s.settings.raw_iq_bucket, [rec])
    s.store.put_bytes(
        s.settings.raw_iq_bucket, f"sessions/{rec.acquisition_task_id}/websdr_3.npy", b"garbage"
    )
    with pytest.raises(IQDataError, match="station 3"):
        load_session_arrays(s.db, s.store, ["test:unit"], FeatureConfig(), cache_root)


def test_power_only_sessions(small_services, cache_root) -> None:
    s = small_services
    recs = [make_session_record(i, with_iq=False) for i in range(5)]
    write_sessions(s.db, s.store, s.settings.raw_iq_bucket, recs)
    a = load_session_arrays(s.db, s.store, ["test:unit"], FeatureConfig(), cache_root)
    assert not a.has_spectrogram and a.spectrogram.shape[2:] == (0, 0)
    assert np.isnan(a.scalars[:, 0, 1]).all() and (a.scalars[:, 0, 3] == 1).all()
    assert a.scalars[0, 0, 0] == recs[0].measurements[0].signal_strength_db


def test_non_finite_row_value_is_refused(small_services, cache_root) -> None:
    s = small_services
    rec = make_session_record(0, with_iq=False)
    bad = dataclasses.replace(rec.measurements[0], signal_strength_db=float("inf"))
    write_sessions(
        s.db,
        s.store,
        s.settings.raw_iq_bucket,
        [dataclasses.replace(rec, measurements=(bad, *rec.measurements[1:]))],
    )
    with pytest.raises(DatasetError, match=f"non-finite features for session {rec.id}, station 1"):
        load_session_arrays(s.db, s.store, ["test:unit"], FeatureConfig(), cache_root)


def test_held_out_labels_and_nested_train_limit() -> None:
    from types import SimpleNamespace

    from heimdall.data.splits import limit_train, split_sessions

    sessions = [
        SimpleNamespace(id=uuid.uuid5(uuid.NAMESPACE_URL, str(i)), dataset="a" if i < 300 else "b")
        for i in range(400)
    ]
    out = split_sessions(sessions, "hash", test_datasets=["b"], val_fraction=0.2)
    assert (out[300:] == "test").all() and set(out[:300]) == {"train", "val"}
    assert abs(np.mean(out[:300] == "val") - 0.2) < 0.07
    ids = [s.id for s in sessions]
    small, large = limit_train(out, ids, 50), limit_train(out, ids, 120)
    assert (small == "train").sum() == 50 and (large == "train").sum() == 120
    assert set(np.flatnonzero(small == "train")) <= set(np.flatnonzero(large == "train"))
    assert np.array_equal(small == "test", out == "test") and np.array_equal(small == "val", out == "val")
    with pytest.raises(ValueError, match="only combine with the hash split"):
        split_sessions(sessions, "powder_random", test_datasets=["b"])


def test_config_requires_held_out_labels_to_be_selected() -> None:
    from heimdall.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="must also be listed in datasets"):
        load_config(None, {"datasets": ["a"], "test_datasets": ["b"]})
