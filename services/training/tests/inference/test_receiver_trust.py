"""The ONNX output ``receiver_trust``: a radio-map model names the receiver it set aside, a network passes the
receiver mask through, and ``predict_session`` names set-aside receivers (never absent ones).

The radio map is fitted on the synthetic world of ``tests/radiomap`` and exported from IQ; its centre
receiver is made uncalibrated by scaling its IQ ×1000 (+60 dB power and noise floor, the SNR unchanged).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from exported_models import Exported, random_frequency, random_mask, random_scalars
from radio_map_model import (
    BAD,
    CARRIER_HZ,
    NETWORK,
    clearly_heard,
    export_radio_map,
    iq_batch,
    recordings,
    shifted,
)
from radiomap.synthetic import draw

from heimdall.inference.formats import SET_ASIDE_REASON, as_geojson, predict_session, set_aside_lines
from heimdall.inference.graph import InferenceGraph
from heimdall.inference.inputs import model_inputs
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.verify import onnx_parity

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

R = len(NETWORK.station_ids)
BAD_ID, BAD_NAME = NETWORK.station_ids[BAD], NETWORK.names[BAD]


@pytest.fixture(scope="module")
def radio_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[InferenceGraph, Path]:
    return export_radio_map(tmp_path_factory.mktemp("radio-map"))


@pytest.fixture(scope="module")
def sessions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """100 test sessions of the world as IQ: (clean, with receiver BAD +60 dB, whether BAD hears)."""
    world = shifted(draw(100, seed=6))
    rng = np.random.default_rng(0)
    heard = world.scalars[:, BAD, 2] >= 6.0
    return iq_batch(world, rng, bad=False), iq_batch(world, rng, bad=True), heard


def test_onnx_trust_equals_torch_and_sets_the_uncalibrated_receiver_aside(
    radio_map: tuple[InferenceGraph, Path], sessions: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    graph, path = radio_map
    clean, bad, heard = sessions
    mask, freq = np.ones((len(bad), R), np.float32), np.full(len(bad), CARRIER_HZ, np.float32)
    report = onnx_parity(path, graph, (bad, mask, freq), chunk_size=32)
    assert report["max_trust_diff"] == 0.0 and report["max_position_diff_m"] < 1.0, report
    loc = OnnxLocalizer(path)
    assert loc.reports_trust
    got = loc.localize(bad, mask, freq)
    with torch.no_grad():
        _, _, want = graph(*(torch.from_numpy(a) for a in (bad, mask, freq)))
    np.testing.assert_array_equal(got.receiver_trust, want.double().numpy())
    assert set(np.unique(got.receiver_trust)) <= {0.0, 1.0}
    aside = got.set_aside(mask)
    print(
        f"set aside where BAD hears: {aside[heard, BAD].mean():.2f}, a good one: {aside[:, :BAD].mean():.3f}"
    )
    assert aside[heard, BAD].mean() > 0.7  # the uncalibrated receiver, where its reading matters
    assert aside[:, :BAD].any(axis=1).mean() < 0.15  # seldom a good one instead
    assert not loc.localize(clean, mask, freq).set_aside(mask).any()  # calibrated: nobody set aside


def test_absent_receivers_have_trust_zero_and_are_not_set_aside(
    radio_map: tuple[InferenceGraph, Path], sessions: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    _, path = radio_map
    _, bad, _ = sessions
    mask = np.ones((8, R), np.float32)
    mask[:, 1] = 0.0
    got = OnnxLocalizer(path).localize(bad[:8], mask, CARRIER_HZ)
    assert np.all(got.receiver_trust[:, 1] == 0.0)
    assert not got.set_aside(mask)[:, 1].any()


def test_a_network_graph_outputs_the_receiver_mask(scalar_model: Exported, iq_model: Exported) -> None:
    rng = np.random.default_rng(12)
    x, mask, freq = random_scalars(16, rng), random_mask(16, rng), random_frequency(16, rng)
    assert (mask == 0).any()  # some absent receivers, or trust == 1 everywhere would pass
    got = OnnxLocalizer(scalar_model.path).localize(x, mask, freq)
    np.testing.assert_array_equal(got.receiver_trust, mask)
    with torch.no_grad():
        _, _, want = scalar_model.graph(*(torch.from_numpy(a) for a in (x, mask, freq)))
    np.testing.assert_array_equal(want.numpy(), mask)
    for model in (scalar_model, iq_model):
        meta = {p.key: p.value for p in onnx.load(str(model.path)).metadata_props}
        doc = json.loads(meta["outputs_doc"])
        assert list(doc) == ["position_enu_m", "covariance_enu_m2", "receiver_trust"]
        assert "equals receiver_mask" in doc["receiver_trust"]


def test_the_radio_map_documents_receivers_set_aside(radio_map: tuple[InferenceGraph, Path]) -> None:
    _, path = radio_map
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["position_enu_m", "covariance_enu_m2", "receiver_trust"]
    doc = json.loads({p.key: p.value for p in proto.metadata_props}["outputs_doc"])["receiver_trust"]
    assert "set aside" in doc and f"(B, {R})" in doc


def _one_session(bad: bool, drop_bad: bool = False) -> dict[int, np.ndarray]:
    """One clearly heard session's recordings by station id (BAD +60 dB, or left out)."""
    world = shifted(draw(100, seed=6))
    k = int(clearly_heard(world)[0])
    iq = recordings(world.scalars[k], np.random.default_rng(1), bad=bad)
    return {sid: iq[j] for j, sid in enumerate(NETWORK.station_ids) if not (drop_bad and j == BAD)}


def test_predict_session_names_the_receiver_set_aside(radio_map: tuple[InferenceGraph, Path]) -> None:
    loc = OnnxLocalizer(radio_map[1])
    inputs = model_inputs(loc.input_spec(), _one_session(bad=True), frequency_hz=CARRIER_HZ)
    result = predict_session(loc, inputs)
    assert result["set_aside"] == [{"station_id": BAD_ID, "name": BAD_NAME, "reason": SET_ASIDE_REASON}]
    assert set_aside_lines(result) == [
        f"set aside: station {BAD_ID} ({BAD_NAME}): its power fits no position; check its calibration"
    ]
    assert result["receivers"]["used"] == [s for s in NETWORK.station_ids if s != BAD_ID]
    stations = {s["station_id"]: s for s in result["stations"]}
    assert stations[BAD_ID]["status"] == "set_aside" and "check its calibration" in stations[BAD_ID]["note"]
    assert all(stations[s]["status"] == "used" for s in result["receivers"]["used"])
    receivers = {
        f["properties"]["station_id"]: f["properties"]["status"]
        for f in as_geojson(result)["features"]
        if f["properties"]["kind"] == "receiver"
    }
    assert receivers[BAD_ID] == "set_aside"


def test_predict_session_lists_nobody_when_calibrated_or_absent(
    radio_map: tuple[InferenceGraph, Path],
) -> None:
    loc = OnnxLocalizer(radio_map[1])
    for recs in (_one_session(bad=False), _one_session(bad=True, drop_bad=True)):
        result = predict_session(loc, model_inputs(loc.input_spec(), recs, frequency_hz=CARRIER_HZ))
        assert result["set_aside"] == [] and set_aside_lines(result) == []
        assert result["receivers"]["used"] == sorted(recs)
    assert result["receivers"]["absent"] == [BAD_ID]  # absent, not "set aside"
