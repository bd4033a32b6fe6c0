"""Tests for heimdall.inference graph, onnx_export, verify, localizer and publish: one-graph ONNX export,
parity, metadata, serving helpers and upload (loading bad files and permissions: test_model_io.py)."""

from __future__ import annotations

import json
import math
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.helper
import pytest
import torch
from exported_models import (
    BANDS_HZ,
    CFG,
    NETWORK,
    Exported,
    R,
    T,
    random_frequency,
    random_iq,
    random_mask,
    random_scalars,
    random_stats,
    scalar_example,
    small_net,
    tiny_graph,
)

from heimdall.data.normalization import NormStats
from heimdall.features import TorchFeatureExtractor
from heimdall.inference.contract import NotAHeimdallModelError
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.localizer import OnnxLocalizer, ellipse
from heimdall.inference.onnx_export import export_onnx
from heimdall.inference.publish import upload_model
from heimdall.inference.verify import measure_latency, onnx_parity
from heimdall.model import LocalizationNet
from heimdall.storage.objectstore import FileObjectStore, ObjectStoreError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["position_enu_m", "covariance_enu_m2"], feeds)


# --------------------------------------------------------------------------------------------------------
# IQ graph
# --------------------------------------------------------------------------------------------------------


def test_iq_graph_replicates_features_normstats_and_net(iq_model: Exported) -> None:
    """The fused graph equals the training path: features → NormStats.apply (numpy) → net → L Lᵀ."""
    rng = np.random.default_rng(3)
    iq, mask, freq = random_iq(6, rng), random_mask(6, rng), random_frequency(6, rng, p_unknown=0.3)
    graph = iq_model.graph
    with torch.no_grad():
        feats = TorchFeatureExtractor(CFG)(torch.from_numpy(iq.reshape(-1, 2, T)))
        log_mel = feats.log_mel.numpy().reshape(6, R, CFG.n_bands, -1)
        scalars = feats.scalars.numpy().reshape(6, R, 4)
        stats = NormStats(
            graph.spec_mean[:, 0].numpy(),
            graph.spec_std[:, 0].numpy(),
            graph.scalar_mean.numpy(),
            graph.scalar_std.numpy(),
        )
        spec, sc = stats.apply(log_mel, scalars, mask > 0.5)
        f = torch.from_numpy(freq)
        pos_ref, tril = graph.net(torch.from_numpy(spec), torch.from_numpy(sc), torch.from_numpy(mask), f)
        pos, cov, _ = graph(torch.from_numpy(iq), torch.from_numpy(mask), f)
    torch.testing.assert_close(pos, pos_ref, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(cov, tril @ tril.mT, rtol=1e-4, atol=1e-2)
    assert pos.dtype == cov.dtype == torch.float32


def test_iq_onnx_parity_over_many_sessions(iq_model: Exported) -> None:
    rng = np.random.default_rng(4)
    iq, mask, freq = random_iq(64, rng), random_mask(64, rng), random_frequency(64, rng)
    report = onnx_parity(iq_model.path, iq_model.graph, (iq, mask, freq), chunk_size=24)  # 3 uneven chunks
    assert report["n_sessions"] == 64
    assert report["max_position_diff_m"] < 1.0, report
    assert report["max_covariance_rel_diff"] < 1e-3, report


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_axis(iq_model: Exported, batch: int) -> None:
    rng = np.random.default_rng(10 + batch)
    iq, mask, freq = random_iq(batch, rng), random_mask(batch, rng), random_frequency(batch, rng)
    position, covariance = _ort(iq_model.path, {"iq": iq, "receiver_mask": mask, "frequency_hz": freq})
    assert position.shape == (batch, 2) and covariance.shape == (batch, 2, 2)
    assert position.dtype == covariance.dtype == np.float32
    with torch.no_grad():
        want_pos, want_cov, _ = iq_model.graph(*(torch.from_numpy(a) for a in (iq, mask, freq)))
    np.testing.assert_allclose(position, want_pos.numpy(), atol=1.0)
    np.testing.assert_allclose(
        covariance, want_cov.numpy(), rtol=1e-3, atol=1e-3 * float(want_cov.abs().max())
    )


@pytest.mark.parametrize("fill", ["zeros", "huge", "other_noise"])
def test_absent_receivers_iq_does_not_matter(iq_model: Exported, fill: str) -> None:
    rng = np.random.default_rng(20)
    iq, mask = random_iq(4, rng), random_mask(4, rng)
    mask[:, 0] = 0.0
    mask[:, 1:4] = 1.0
    changed = iq.copy()
    if fill == "zeros":
        changed[:, 0] = 0.0
    elif fill == "huge":
        changed[:, 0] = 1e3  # 1e6 mW = +60 dBm, far outside any real recording
    else:
        changed[:, 0] = random_iq(4, rng)[:, 0] * 100.0
    localizer = OnnxLocalizer(iq_model.path)
    base_pos, base_cov = localizer.predict(iq, mask, BANDS_HZ[0])
    pos, cov = localizer.predict(changed, mask, BANDS_HZ[0])
    assert np.isfinite(pos).all() and np.isfinite(cov).all()
    np.testing.assert_allclose(pos, base_pos, rtol=1e-4, atol=1e-4 * np.abs(base_pos).max())
    np.testing.assert_allclose(cov, base_cov, rtol=1e-4, atol=1e-4 * np.abs(base_cov).max())


def test_metadata_contract(iq_model: Exported) -> None:
    model = onnx.load(str(iq_model.path))
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in iq_model.metadata.items():
        assert meta[key] == value
    assert meta["heimdall_onnx_contract"] == "3"
    assert meta["input_kind"] == "iq" and meta["n_receivers"] == "7" and meta["n_samples"] == str(T)
    assert float(meta["frequency_fill_hz"]) == pytest.approx(BANDS_HZ[1])  # the training median carrier
    assert set(json.loads(meta["inputs_doc"])) == {"iq", "receiver_mask", "frequency_hz"}
    assert "NaN = unknown" in json.loads(meta["inputs_doc"])["frequency_hz"]
    assert set(json.loads(meta["outputs_doc"])) == {"position_enu_m", "covariance_enu_m2", "receiver_trust"}
    assert "metres" in meta["outputs_doc"] and "mW" in meta["inputs_doc"]
    assert meta["feature_config_hash"] == CFG.config_hash()
    assert json.loads(meta["station_ids"]) == list(NETWORK.station_ids)
    assert [i.name for i in model.graph.input] == ["iq", "receiver_mask", "frequency_hz"]
    (carrier,) = [i for i in model.graph.input if i.name == "frequency_hz"]
    assert carrier.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(carrier.type.tensor_type.shape.dim) == 1  # (B,)
    assert [o.name for o in model.graph.output] == ["position_enu_m", "covariance_enu_m2", "receiver_trust"]
    for out in model.graph.output:
        assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert out.type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert sorted(p.name for p in iq_model.path.parent.iterdir()) == ["model.onnx"]  # no side files


def test_localizer_round_trips_the_frame(iq_model: Exported) -> None:
    frame = NETWORK.frame
    for source in (iq_model.path, iq_model.path.read_bytes()):
        localizer = OnnxLocalizer(source)
        assert localizer.frame == frame
        assert localizer.station_ids == NETWORK.station_ids and localizer.station_names == NETWORK.names
        assert localizer.input_kind == "iq" and localizer.n_samples == T and localizer.model_id == "iq-test_1"
        assert localizer.contract == "3" and localizer.reads_frequency and localizer.reports_trust
        assert localizer.frequency_fill_hz == pytest.approx(BANDS_HZ[1])
        lat, lon = localizer.to_latlon(np.zeros(2))
        assert lat == pytest.approx(frame.origin_lat, abs=1e-12)
        assert lon == pytest.approx(frame.origin_lon, abs=1e-12)
        lat, lon = localizer.to_latlon(frame.to_enu(NETWORK.latitudes, NETWORK.longitudes))
        np.testing.assert_allclose(lat, NETWORK.latitudes, atol=1e-9)
        np.testing.assert_allclose(lon, NETWORK.longitudes, atol=1e-9)


def test_localizer_predict_matches_graph_and_accepts_complex_iq(iq_model: Exported) -> None:
    rng = np.random.default_rng(30)
    iq, mask, freq = random_iq(3, rng), random_mask(3, rng), random_frequency(3, rng)
    localizer = OnnxLocalizer(iq_model.path)
    pos, cov = localizer.predict(iq, mask > 0.5, freq)
    assert pos.dtype == cov.dtype == np.float64 and pos.shape == (3, 2) and cov.shape == (3, 2, 2)
    with torch.no_grad():
        want_pos = iq_model.graph(*(torch.from_numpy(a) for a in (iq, mask, freq)))[0]
    np.testing.assert_allclose(pos, want_pos.numpy(), atol=1.0)
    pos_c, cov_c = localizer.predict(iq[:, :, 0] + 1j * iq[:, :, 1], mask, freq)
    np.testing.assert_array_equal(pos_c, pos)
    np.testing.assert_array_equal(cov_c, cov)
    major, minor, _ = localizer.ellipse(cov)
    np.testing.assert_allclose(major**2 + minor**2, np.trace(cov, axis1=-2, axis2=-1), rtol=1e-9)


def test_wrong_receiver_count_is_a_clear_error(iq_model: Exported) -> None:
    rng = np.random.default_rng(40)
    iq, mask = random_iq(2, rng), random_mask(2, rng)
    localizer = OnnxLocalizer(iq_model.path)
    with pytest.raises(ValueError, match=r"expects 7 receivers.*got 5"):
        localizer.predict(iq[:, :5], mask[:, :5])
    with pytest.raises(ValueError, match=r"receiver_mask must have shape \(2, 7\)"):
        localizer.predict(iq, mask[:, :5])
    with pytest.raises(ValueError, match=r"does not match"):
        localizer.predict(iq[..., : T // 2], mask)
    with pytest.raises(ValueError, match=r"expects 7 receivers"):
        iq_model.graph(torch.from_numpy(iq[:, :5]), torch.from_numpy(mask[:, :5]), torch.full((2,), 145.5e6))
    with pytest.raises(ValueError, match=r"frequency_hz must have shape \(B,\)"):
        iq_model.graph(torch.from_numpy(iq), torch.from_numpy(mask), torch.full((2, 1), 145.5e6))


# --------------------------------------------------------------------------------------------------------
# Power-only graph
# --------------------------------------------------------------------------------------------------------


def test_power_only_graph_matches_normstats_and_exports(scalar_model: Exported) -> None:
    rng = np.random.default_rng(50)
    scalars, mask, freq = random_scalars(64, rng), random_mask(64, rng), random_frequency(64, rng)
    graph = scalar_model.graph
    stats = NormStats(np.zeros(0), np.ones(0), graph.scalar_mean.numpy(), graph.scalar_std.numpy())
    _, sc = stats.apply(np.zeros((64, R, 0, 1)), scalars, mask > 0.5)
    with torch.no_grad():
        f = torch.from_numpy(freq)
        pos_ref, tril = graph.net(torch.zeros(1), torch.from_numpy(sc), torch.from_numpy(mask), f)
        pos, cov, _ = graph(torch.from_numpy(scalars), torch.from_numpy(mask), f)
    torch.testing.assert_close(pos, pos_ref)
    torch.testing.assert_close(cov, tril @ tril.mT)

    report = onnx_parity(scalar_model.path, graph, (scalars, mask, freq))
    assert report["max_position_diff_m"] < 1.0 and report["max_covariance_rel_diff"] < 1e-3, report
    localizer = OnnxLocalizer(scalar_model.path)
    assert localizer.input_kind == "scalars" and localizer.n_samples is None
    for batch in (1, 5):
        p, c = localizer.predict(scalars[:batch], mask[:batch], freq[:batch])
        assert p.shape == (batch, 2) and c.shape == (batch, 2, 2)
        assert np.isfinite(p).all() and np.isfinite(c).all()
    all_nan = np.full((2, R, 4), np.nan, np.float32)
    p, c = localizer.predict(all_nan, np.ones((2, R), np.float32))
    assert np.isfinite(p).all() and np.isfinite(c).all()


def test_inference_graph_rejects_inconsistent_parts() -> None:
    rng = np.random.default_rng(60)
    with pytest.raises(ValueError, match="from_iq=True"):
        InferenceGraph(small_net(True, embed_dim=16), random_stats(CFG.n_bands, rng), CFG, from_iq=False)
    with pytest.raises(ValueError, match="band mismatch"):
        InferenceGraph(small_net(True, embed_dim=16), random_stats(10, rng), CFG)
    with pytest.raises(ValueError, match="scalars"):
        stats = random_stats(CFG.n_bands, rng)
        InferenceGraph(
            small_net(True, embed_dim=16), NormStats(stats.spec_mean, stats.spec_std, np.zeros(3), np.ones(3))
        )


# --------------------------------------------------------------------------------------------------------
# Atomic writes and metadata validation
# --------------------------------------------------------------------------------------------------------


def _raise(*args: object, **kwargs: object) -> None:
    raise RuntimeError("exporter exploded")


@pytest.mark.parametrize("stage", ["export", "check"])
def test_failed_export_leaves_old_model_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous model")
    if stage == "export":
        monkeypatch.setattr(torch.onnx, "export", _raise)
        error: type[Exception] = RuntimeError
    else:  # the exporter "succeeds" with an invalid model: the temp file exists when the checker fails
        fake = types.SimpleNamespace(model_proto=onnx.ModelProto())
        monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: fake)
        error = onnx.checker.ValidationError
    with pytest.raises(error):
        export_onnx(tiny_graph(), scalar_example(), target, model_metadata(NETWORK, CFG, "m"))
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.pop("frame_origin_lat"), "missing"),
        (lambda m: m.update(heimdall_onnx_contract="2"), "written by export_onnx"),
        (lambda m: m.update(station_ids="[1, 2]"), "2 entries.*7 receivers"),
        (lambda m: m.update(extra=3), "must be str"),
        (lambda m: m.update(model_id="a/b"), "invalid model_id"),
    ],
)
def test_export_validates_metadata_before_writing(
    tmp_path: Path, change: Callable[[dict[str, object]], object], match: str
) -> None:
    metadata: dict[str, object] = dict(model_metadata(NETWORK, CFG, "m"))
    change(metadata)
    with pytest.raises((ValueError, TypeError), match=match):
        export_onnx(tiny_graph(), scalar_example(), tmp_path / "model.onnx", metadata)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_batch_of_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        export_onnx(
            tiny_graph(), scalar_example(1), tmp_path / "model.onnx", model_metadata(NETWORK, CFG, "m")
        )


# --------------------------------------------------------------------------------------------------------
# Serving helpers and publishing
# --------------------------------------------------------------------------------------------------------


def test_ellipse_hand_computed_cases() -> None:
    s2 = math.sqrt(2.0)
    cases = [
        ([[9.0, 0.0], [0.0, 4.0]], 3.0, 2.0, 90.0),  # long axis east-west
        ([[4.0, 0.0], [0.0, 9.0]], 3.0, 2.0, 0.0),  # long axis north-south
        ([[5.0, 3.0], [3.0, 5.0]], 2.0 * s2, s2, 45.0),  # eigenvalues 8 along (1, 1), 2 along (1, -1)
        ([[5.0, -3.0], [-3.0, 5.0]], 2.0 * s2, s2, 135.0),  # long axis north-west / south-east
    ]
    for cov, major, minor, azimuth in cases:
        a, b, theta = ellipse(np.array(cov))
        assert (float(a), float(b), float(theta)) == pytest.approx((major, minor, azimuth), abs=1e-9)
    a, b, theta = ellipse(np.array([case[0] for case in cases]), n_sigma=2.0)
    np.testing.assert_allclose(a, [2 * c[1] for c in cases], rtol=1e-12)
    np.testing.assert_allclose(b, [2 * c[2] for c in cases], rtol=1e-12)
    np.testing.assert_allclose(theta, [c[3] for c in cases], atol=1e-9)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        ellipse(np.eye(3))


def _foreign_model(path: Path) -> Path:
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [tensor("x", onnx.TensorProto.FLOAT, [1])], [tensor("y", onnx.TensorProto.FLOAT, [1])]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_foreign_onnx_file_is_rejected(tmp_path: Path) -> None:
    path = _foreign_model(tmp_path / "other.onnx")
    with pytest.raises(NotAHeimdallModelError, match=r"not a Heimdall model.*frame_origin_lat"):
        OnnxLocalizer(path)
    with pytest.raises(NotAHeimdallModelError):
        upload_model(FileObjectStore(tmp_path / "store"), "models", "m1", path)


def test_upload_model_key_layout_and_validation(scalar_model: Exported, tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path / "store")
    key = upload_model(store, "models", "power-only", scalar_model.path)
    assert key == "power-only/model.onnx"
    assert store.list_keys("models") == [key]
    assert store.get_bytes("models", key) == scalar_model.path.read_bytes()
    assert OnnxLocalizer(store.get_bytes("models", key)).model_id == "power-only"
    for bad in ("", "../x", "a/b", "a.b", "a b", "x" * 129):
        with pytest.raises(ValueError, match="invalid model_id"):
            upload_model(store, "models", bad, scalar_model.path)
    with pytest.raises(ValueError, match="exported as model_id 'power-only'"):
        upload_model(store, "models", "other", scalar_model.path)
    with pytest.raises(ObjectStoreError):
        upload_model(store, "Bad_Bucket", "power-only", scalar_model.path)
    assert store.list_keys("models") == [key]


def test_default_size_model_is_small_and_fast_enough_to_time(tmp_path: Path) -> None:
    """Default LocalizationNet (R=7, S=4, 64 bands) with full 6250-sample recordings: ≤ 5 MB."""
    n_samples = 6250
    rng = np.random.default_rng(80)
    net = LocalizationNet(R, NETWORK.positions_enu_m() / 1000.0, 4).eval()
    graph = InferenceGraph(net, random_stats(CFG.n_bands, rng), CFG)
    iq, mask, freq = random_iq(2, rng, n_samples), random_mask(2, rng), random_frequency(2, rng)
    path = export_onnx(
        graph,
        (torch.from_numpy(iq), torch.from_numpy(mask), torch.from_numpy(freq)),
        tmp_path / "model.onnx",
        model_metadata(NETWORK, CFG, "d"),
    )
    size_mb = path.stat().st_size / 1e6
    timing = measure_latency(path, (iq[:1], mask[:1], freq[:1]), runs=20, warmup=3)
    print(f"default model: {size_mb:.2f} MB, p50 {timing['p50_ms']:.2f} ms (one session, one thread)")
    assert size_mb <= 5.0
    assert set(timing) == {"p50_ms", "p90_ms", "mean_ms"}
    assert 0.0 < timing["p50_ms"] <= timing["p90_ms"]
