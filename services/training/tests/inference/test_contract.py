"""The carrier band as a model input (ONNX contract 2), the receiver_trust output (contract 3), and files of
the contracts before each (contract 1: two inputs; contracts 1 and 2: two outputs).

A contract-2 file takes ``frequency_hz (B,)``; an unknown carrier (NaN, or none given) is the model's
training median; a contract-1 file (two inputs, exported before the carrier was an input) still loads and
runs, and the localiser tells the two apart by the graph's input names, not by trust in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from exported_models import (
    BAND_SHIFT_M,
    BANDS_HZ,
    CFG,
    NETWORK,
    Exported,
    R,
    random_frequency,
    random_mask,
    random_scalars,
    random_stats,
    small_net,
)
from torch import Tensor

from heimdall.inference.contract import NotAHeimdallModelError
from heimdall.inference.formats import predict_session
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.inputs import InputSpec, model_inputs
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.onnx_export import export_onnx
from heimdall.inference.publish import upload_model
from heimdall.inference.verify import onnx_parity
from heimdall.storage.objectstore import FileObjectStore

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class _ContractOneGraph(InferenceGraph):
    """What a contract-1 file holds: a band-blind network, two inputs (scalars, receiver_mask) and two
    outputs (position, covariance); ``n_outputs = 3`` makes the impossible mix of two inputs and three."""

    n_outputs = 2

    @property
    def input_names(self) -> tuple[str, ...]:
        return super().input_names[:2]

    @property
    def output_names(self) -> tuple[str, ...]:
        return super().output_names[: self.n_outputs]

    def forward(self, inputs: Tensor, receiver_mask: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        unknown = torch.full_like(receiver_mask[:, 0], float("nan"))
        return super().forward(inputs, receiver_mask, unknown)[: self.n_outputs]


class _TwoOutputGraph(InferenceGraph):
    """What a contract-2 file written before ``receiver_trust`` holds: three inputs, two outputs."""

    @property
    def output_names(self) -> tuple[str, ...]:
        return super().output_names[:2]

    def forward(self, inputs: Tensor, receiver_mask: Tensor, frequency_hz: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        return super().forward(inputs, receiver_mask, frequency_hz)[:2]


def _rewrite_metadata(src: Path, dst: Path, change: dict[str, str | None]) -> Path:
    """A copy of ``src`` with metadata keys replaced (None removes one); the graph is untouched."""
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in change.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def contract_one(tmp_path_factory: pytest.TempPathFactory) -> tuple[_ContractOneGraph, Path]:
    """A contract-1 model file, exported here the way files were before the carrier input."""
    rng = np.random.default_rng(5)
    net = small_net(False, embed_dim=16, pooling="mean", use_frequency=False)
    graph = _ContractOneGraph(net, random_stats(0, rng), from_iq=False).eval()
    example = (torch.from_numpy(random_scalars(3, rng)), torch.from_numpy(random_mask(3, rng)))
    folder = tmp_path_factory.mktemp("contract-1")
    path = export_onnx(graph, example, folder / "exported.onnx", model_metadata(NETWORK, CFG, "old-one"))
    inputs_doc = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["inputs_doc"])
    inputs_doc.pop("frequency_hz")
    change = {"heimdall_onnx_contract": "1", "inputs_doc": json.dumps(inputs_doc)}
    return graph, _rewrite_metadata(path, folder / "model.onnx", change)


def test_a_contract_1_file_is_still_served(
    contract_one: tuple[_ContractOneGraph, Path], tmp_path: Path
) -> None:
    graph, path = contract_one
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["scalars", "receiver_mask"]
    loc = OnnxLocalizer(path)
    assert loc.contract == "1" and not loc.reads_frequency and loc.frequency_fill_hz is None
    rng = np.random.default_rng(6)
    x, mask = random_scalars(8, rng), random_mask(8, rng)
    pos, cov = loc.predict(x, mask)
    with torch.no_grad():
        want_pos, want_cov = graph(torch.from_numpy(x), torch.from_numpy(mask))
    assert not loc.reports_trust and loc.localize(x, mask).receiver_trust is None
    np.testing.assert_allclose(pos, want_pos.numpy(), atol=1.0)
    np.testing.assert_allclose(cov, want_cov.numpy(), rtol=1e-3)
    # a carrier given to a model that cannot read it changes nothing
    np.testing.assert_array_equal(loc.predict(x, mask, BANDS_HZ[0])[0], pos)
    inputs = model_inputs(loc.input_spec(features=False), power={3: x[0, 0]}, frequency_hz=BANDS_HZ[0])
    result = predict_session(loc, inputs)
    assert result["model"]["onnx_contract"] == "1"
    assert result["carrier"]["model_frequency_hz"] is None and "contract 1" in result["carrier"]["note"]
    assert result["set_aside"] is None  # the file cannot say: not "nobody"
    assert (
        upload_model(FileObjectStore(tmp_path / "store"), "models", "old-one", path) == "old-one/model.onnx"
    )


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[_TwoOutputGraph, Path]:
    """A contract-2 model file as written before the ``receiver_trust`` output."""
    rng = np.random.default_rng(13)
    graph = _TwoOutputGraph(
        small_net(False, embed_dim=16, pooling="mean"), random_stats(0, rng), from_iq=False
    )
    example = tuple(
        torch.from_numpy(a) for a in (random_scalars(3, rng), random_mask(3, rng), random_frequency(3, rng))
    )
    folder = tmp_path_factory.mktemp("two-outputs")
    path = export_onnx(
        graph.eval(), example, folder / "exported.onnx", model_metadata(NETWORK, CFG, "older-two")
    )
    outputs_doc = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["outputs_doc"])
    outputs_doc.pop("receiver_trust")
    change = {"heimdall_onnx_contract": "2", "outputs_doc": json.dumps(outputs_doc)}
    return graph, _rewrite_metadata(path, folder / "model.onnx", change)


def test_a_contract_2_file_without_receiver_trust_is_still_served(
    two_outputs: tuple[_TwoOutputGraph, Path], tmp_path: Path
) -> None:
    graph, path = two_outputs
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["position_enu_m", "covariance_enu_m2"]
    loc = OnnxLocalizer(path)
    assert loc.contract == "2" and loc.reads_frequency and not loc.reports_trust
    rng = np.random.default_rng(14)
    x, mask, freq = random_scalars(8, rng), random_mask(8, rng), random_frequency(8, rng)
    got = loc.localize(x, mask, freq)
    with torch.no_grad():
        want_pos, want_cov = graph(*(torch.from_numpy(a) for a in (x, mask, freq)))
    np.testing.assert_allclose(got.position_enu_m, want_pos.numpy(), atol=1.0)
    np.testing.assert_allclose(got.covariance_enu_m2, want_cov.numpy(), rtol=1e-3)
    assert got.receiver_trust is None and not got.set_aside(mask).any()
    report = onnx_parity(path, graph, (x, mask, freq))
    assert report["max_position_diff_m"] < 1.0 and np.isnan(report["max_trust_diff"])
    inputs = model_inputs(loc.input_spec(features=False), power={3: x[0, 0], 5: x[0, 1], 8: x[0, 2]})
    result = predict_session(loc, inputs)
    assert result["set_aside"] is None and result["receivers"]["used"] == [3, 5, 8]
    assert (
        upload_model(FileObjectStore(tmp_path / "store"), "models", "older-two", path)
        == "older-two/model.onnx"
    )


def test_the_mlflow_signature_lists_the_outputs_the_file_has(
    scalar_model: Exported, two_outputs: tuple[_TwoOutputGraph, Path]
) -> None:
    pytest.importorskip("mlflow")
    from heimdall.tracking.run import onnx_signature

    new = onnx_signature(scalar_model.path).outputs.to_dict()
    assert [o["name"] for o in new] == ["position_enu_m", "covariance_enu_m2", "receiver_trust"]
    assert list(new[2]["tensor-spec"]["shape"]) == [-1, R]
    old = onnx_signature(two_outputs[1]).outputs.to_dict()
    assert [o["name"] for o in old] == ["position_enu_m", "covariance_enu_m2"]


def test_the_graph_outputs_must_be_the_contracts(
    scalar_model: Exported, two_outputs: tuple[_TwoOutputGraph, Path], tmp_path: Path
) -> None:
    """Metadata that claims another contract than the graph's outputs implement is refused on load, and so
    is an output no contract names."""
    rng = np.random.default_rng(15)
    graph = _ContractOneGraph(
        small_net(False, embed_dim=16, pooling="mean", use_frequency=False),
        random_stats(0, rng),
        from_iq=False,
    )
    graph.n_outputs = 3
    example = (torch.from_numpy(random_scalars(3, rng)), torch.from_numpy(random_mask(3, rng)))
    path = export_onnx(graph.eval(), example, tmp_path / "exported.onnx", model_metadata(NETWORK, CFG, "odd"))
    mixed = _rewrite_metadata(path, tmp_path / "mixed.onnx", {"heimdall_onnx_contract": "1"})
    with pytest.raises(
        NotAHeimdallModelError,
        match=r"contract 1 needs outputs \['position_enu_m', 'covariance_enu_m2'\], the graph has",
    ):
        OnnxLocalizer(mixed)
    proto = onnx.load(str(scalar_model.path))
    proto.graph.output[2].name = "receiver_weight"  # a name the contract does not know
    for node in proto.graph.node:
        for names in (node.input, node.output):
            names[:] = ["receiver_weight" if o == "receiver_trust" else o for o in names]
    onnx.save(proto, str(tmp_path / "stranger.onnx"))
    OnnxLocalizer(scalar_model.path)  # the original loads
    with pytest.raises(
        NotAHeimdallModelError, match=r"contract 3 needs outputs .* the graph has \[.*'receiver_weight'\]"
    ):
        OnnxLocalizer(tmp_path / "stranger.onnx")
    claims_two = _rewrite_metadata(
        scalar_model.path, tmp_path / "claims-2.onnx", {"heimdall_onnx_contract": "2"}
    )
    with pytest.raises(
        NotAHeimdallModelError, match=r"contract 2 needs outputs .* the graph has .*receiver_trust"
    ):
        OnnxLocalizer(claims_two)
    claims_three = _rewrite_metadata(
        two_outputs[1], tmp_path / "claims-3.onnx", {"heimdall_onnx_contract": "3"}
    )
    with pytest.raises(NotAHeimdallModelError, match=r"contract 3 needs outputs \[.*'receiver_trust'\], the"):
        OnnxLocalizer(claims_three)


def test_the_graph_inputs_must_be_the_contracts(
    contract_one: tuple[_ContractOneGraph, Path], scalar_model: Exported, tmp_path: Path
) -> None:
    """Metadata that claims the other contract than the graph implements is refused on load."""
    _, v1 = contract_one
    claims_two = _rewrite_metadata(v1, tmp_path / "claims-2.onnx", {"heimdall_onnx_contract": "2"})
    with pytest.raises(
        NotAHeimdallModelError, match=r"contract 2 .* needs inputs \['scalars', 'receiver_mask', "
    ):
        OnnxLocalizer(claims_two)
    claims_one = _rewrite_metadata(
        scalar_model.path, tmp_path / "claims-1.onnx", {"heimdall_onnx_contract": "1"}
    )
    with pytest.raises(NotAHeimdallModelError, match=r"contract 1 .* the graph has .*frequency_hz"):
        OnnxLocalizer(claims_one)
    future = _rewrite_metadata(scalar_model.path, tmp_path / "future.onnx", {"heimdall_onnx_contract": "4"})
    with pytest.raises(NotAHeimdallModelError, match=r"contract '4', this code reads '1', '2', '3'"):
        OnnxLocalizer(future)
    with pytest.raises(NotAHeimdallModelError, match="not a Heimdall ONNX model"):
        upload_model(FileObjectStore(tmp_path / "store"), "models", "power-only", future)


def test_the_carrier_moves_the_onnx_prediction(scalar_model: Exported) -> None:
    """The power-only model was fitted with 433.5 MHz meaning 3 km further north: ONNX Runtime shows it,
    and agrees with torch for either band and for an unknown carrier."""
    loc = OnnxLocalizer(scalar_model.path)
    rng = np.random.default_rng(7)
    x, mask = random_scalars(64, rng), random_mask(64, rng)
    low, _ = loc.predict(x, mask, BANDS_HZ[0])
    high, _ = loc.predict(x, mask, np.full(64, BANDS_HZ[1]))
    shift = np.median((low - high)[:, 1])
    print(f"433.5 vs 145.5 MHz: {shift:.0f} m north (fitted: {BAND_SHIFT_M:.0f} m)")
    assert 0.6 * BAND_SHIFT_M < shift < 1.4 * BAND_SHIFT_M
    for carriers in (np.full(64, BANDS_HZ[0], np.float32), random_frequency(64, rng, p_unknown=0.5)):
        report = onnx_parity(scalar_model.path, scalar_model.graph, (x, mask, carriers))
        assert report["max_position_diff_m"] < 1.0 and report["max_covariance_rel_diff"] < 1e-3, report


def test_an_unknown_carrier_is_the_training_median(scalar_model: Exported) -> None:
    loc = OnnxLocalizer(scalar_model.path)
    assert loc.frequency_fill_hz == pytest.approx(BANDS_HZ[1])
    rng = np.random.default_rng(8)
    x, mask = random_scalars(5, rng), random_mask(5, rng)
    median = loc.predict(x, mask, loc.frequency_fill_hz)
    for unknown in (None, float("nan"), np.full(5, np.nan)):
        for got, want in zip(loc.predict(x, mask, unknown), median, strict=True):
            np.testing.assert_array_equal(got, want)
    inputs = model_inputs(loc.input_spec(features=False), power={3: x[0, 0], 5: x[0, 1]}, frequency_hz=None)
    carrier = predict_session(loc, inputs)["carrier"]
    assert carrier["frequency_hz"] is None and carrier["model_frequency_hz"] == pytest.approx(BANDS_HZ[1])
    assert "median carrier of its training sessions" in carrier["note"]
    known = predict_session(
        loc, model_inputs(loc.input_spec(features=False), power={3: x[0, 0]}, frequency_hz=433.92e6)
    )
    assert known["carrier"]["frequency_hz"] == known["carrier"]["model_frequency_hz"] == 433.92e6


@pytest.mark.parametrize(
    ("frequency", "match"),
    [
        (-433.92e6, "carrier > 0 Hz or NaN"),
        (0.0, "carrier > 0 Hz or NaN"),
        (float("inf"), "carrier > 0 Hz or NaN"),
        (np.full(4, 145.5e6), r"shape \(3,\)"),
        (np.full((3, 1), 145.5e6), r"shape \(3,\)"),
    ],
)
def test_a_bad_carrier_is_refused(scalar_model: Exported, frequency: object, match: str) -> None:
    loc = OnnxLocalizer(scalar_model.path)
    rng = np.random.default_rng(9)
    with pytest.raises(ValueError, match=match):
        loc.predict(random_scalars(3, rng), random_mask(3, rng), frequency)  # type: ignore[arg-type]


def test_a_band_blind_network_exports_the_same_three_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    net = small_net(False, embed_dim=16, pooling="mean", use_frequency=False)
    graph = InferenceGraph(net, random_stats(0, rng), from_iq=False)
    example = tuple(
        torch.from_numpy(a) for a in (random_scalars(3, rng), random_mask(3, rng), random_frequency(3, rng))
    )
    path = export_onnx(graph, example, tmp_path / "model.onnx", model_metadata(NETWORK, CFG, "blind"))
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["scalars", "receiver_mask", "frequency_hz"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "frequency_fill_hz" not in meta and "ignores it" in json.loads(meta["inputs_doc"])["frequency_hz"]
    loc = OnnxLocalizer(path)
    assert loc.reads_frequency and loc.frequency_fill_hz is None
    x, mask = random_scalars(4, rng), random_mask(4, rng)
    np.testing.assert_array_equal(loc.predict(x, mask, BANDS_HZ[0])[0], loc.predict(x, mask, BANDS_HZ[1])[0])
    inputs = model_inputs(
        InputSpec(NETWORK.station_ids, "scalars"), power={3: x[0, 0]}, frequency_hz=BANDS_HZ[0]
    )
    assert "trained without the carrier" in predict_session(loc, inputs)["carrier"]["note"]


def test_export_needs_the_carrier_example(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    graph = InferenceGraph(
        small_net(False, embed_dim=16, pooling="mean"), random_stats(0, rng), from_iq=False
    )
    two = (torch.zeros(2, R, 4), torch.ones(2, R))
    with pytest.raises(ValueError, match=r"example_inputs must be \(scalars, receiver_mask, frequency_hz\)"):
        export_onnx(graph, two, tmp_path / "model.onnx", model_metadata(NETWORK, CFG, "m"))
    assert list(tmp_path.iterdir()) == []
