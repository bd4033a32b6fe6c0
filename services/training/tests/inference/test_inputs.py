"""heimdall.inference.inputs: receivers + recordings (or power rows) → model inputs, with no database."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.errors import DataError, UserError
from heimdall.features import FeatureConfig, iq_complex_to_real, receiver_scalars_batch
from heimdall.inference.inputs import InputSpec, batch_inputs, model_inputs

IDS = (3, 5, 8)
T = 256


def _iq(rng: np.random.Generator, n: int = T) -> np.ndarray:
    return (1e-6 * (rng.normal(size=n) + 1j * rng.normal(size=n))).astype(np.complex64)


def test_iq_in_model_order_with_mask_and_station_lists() -> None:
    rng = np.random.default_rng(0)
    recs = {8: _iq(rng), 3: _iq(rng), 99: _iq(rng)}  # 99: a station the model does not know
    spec = InputSpec(IDS, "iq", n_samples=T)
    out = model_inputs(spec, recs, {5: (-100.0, np.nan, 3.0, 1.0)}, measured=(42,), session_id="s1")
    assert out.inputs.shape == (1, 3, 2, T) and out.inputs.dtype == np.float32
    np.testing.assert_array_equal(out.inputs[0, 0], iq_complex_to_real(recs[3]))
    np.testing.assert_array_equal(out.inputs[0, 2], iq_complex_to_real(recs[8]))
    np.testing.assert_array_equal(out.inputs[0, 1], 0.0)  # an IQ model cannot use a power row
    np.testing.assert_array_equal(out.receiver_mask, [[1.0, 0.0, 1.0]])
    assert out.used_stations == [3, 8] and out.absent_stations == [5]
    assert out.ignored_stations == [42, 99] and out.session_id == "s1"


def test_iq_length_must_match_and_something_must_be_usable() -> None:
    rng = np.random.default_rng(1)
    spec = InputSpec(IDS, "iq", n_samples=T)
    with pytest.raises(UserError, match=f"session s2, station 3: recording has {T + 1} samples"):
        model_inputs(spec, {3: _iq(rng, T + 1)}, session_id="s2")
    with pytest.raises(UserError, match="no usable recording from the model's receivers"):
        model_inputs(spec, {99: _iq(rng)}, session_id="s3")
    assert model_inputs(spec, {}, require_any=False).used_stations == []


def test_power_only_model_reads_rows_and_recordings() -> None:
    rng = np.random.default_rng(2)
    cfg = FeatureConfig()
    rec = _iq(rng, 2048)
    spec = InputSpec(IDS, "scalars", n_scalars=6, feature_config=cfg)
    row = (-90.0, np.nan, 12.0, 1.0)
    out = model_inputs(spec, {3: rec}, {5: row, 3: (0.0, 0.0, 0.0, 0.0)})
    assert out.inputs.shape == (1, 3, 6)
    # a recording wins over a power row of the same station
    np.testing.assert_allclose(out.inputs[0, 0, :4], receiver_scalars_batch(rec[None], cfg)[0])
    np.testing.assert_array_equal(out.inputs[0, 1], np.array([*row, 0.0, 0.0], np.float32))  # offsets stay 0
    np.testing.assert_array_equal(out.receiver_mask, [[1.0, 1.0, 0.0]])


def test_batch_is_the_stack_of_single_sessions() -> None:
    rng = np.random.default_rng(3)
    sessions = [{3: _iq(rng), 5: _iq(rng)}, {8: _iq(rng)}, {}]
    spec = InputSpec(IDS, "iq")  # n_samples from the recordings
    x, mask = batch_inputs(spec, recordings=sessions)
    assert x.shape == (3, 3, 2, T)
    for b, recs in enumerate(sessions):
        one = model_inputs(InputSpec(IDS, "iq", n_samples=T), recs, require_any=False)
        np.testing.assert_array_equal(x[b], one.inputs[0])
        np.testing.assert_array_equal(mask[b], one.receiver_mask[0])
    with pytest.raises(DataError, match="no IQ recordings found"):
        batch_inputs(spec, recordings=[{}, {}])
    rows = [{5: np.array([-80.0, -120.0, 40.0, 1.0])}]
    xs, ms = batch_inputs(InputSpec(IDS, "scalars"), power=rows)
    np.testing.assert_array_equal(xs[0, 1], rows[0][5].astype(np.float32))
    np.testing.assert_array_equal(ms, [[0.0, 1.0, 0.0]])


def test_the_sessions_carrier_travels_with_its_inputs() -> None:
    rng = np.random.default_rng(4)
    spec = InputSpec(IDS, "iq", n_samples=T)
    known = model_inputs(spec, {3: _iq(rng)}, frequency_hz=np.float32(433.92e6))
    assert known.frequency_hz == pytest.approx(433.92e6) and isinstance(known.frequency_hz, float)
    np.testing.assert_array_equal(known.frequencies, np.array([433.92e6], np.float32))
    for unknown in (None, float("nan"), np.float32("nan")):
        got = model_inputs(spec, {3: _iq(rng)}, frequency_hz=unknown)
        assert got.frequency_hz is None
        assert got.frequencies.shape == (1,) and np.isnan(got.frequencies).all()
    for bad in (0.0, -868.3e6, float("inf")):
        with pytest.raises(UserError, match=r"session s4, carrier frequency .* is not a frequency > 0 Hz"):
            model_inputs(spec, {3: _iq(rng)}, session_id="s4", frequency_hz=bad)
