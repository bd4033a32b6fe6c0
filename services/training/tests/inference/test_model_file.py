"""A ``model.onnx`` alone — no database, no object store, no network.json — locates a session from IQ arrays.

The metadata written by export carries the receivers (ids, names, latitude/longitude/altitude), the
frame origin, the full feature configuration and the covariance calibration; OnnxLocalizer reads them.
The calibration is a graph constant: bare ONNX Runtime already returns the calibrated covariance, and
no consumer applies it a second time; files from before (metadata only, or none) still load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from heimdall.data.network import ReceiverNetwork
from heimdall.data.normalization import NormStats
from heimdall.features import FeatureConfig
from heimdall.inference.graph import InferenceGraph, model_metadata
from heimdall.inference.localizer import OnnxLocalizer, ort_session
from heimdall.inference.onnx_export import export_onnx
from heimdall.model import LocalizationNet

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

R, T = 4, 1024
CFG = FeatureConfig()
NETWORK = ReceiverNetwork(
    station_ids=(11, 12, 13, 14),
    names=("a", "b", "c", "d"),
    latitudes=(45.0, 45.2, 44.9, 45.1),
    longitudes=(7.6, 7.9, 7.8, 7.5),
)
ALTITUDES = (240.0, None, 310.5, 198.0)
SCALE = 2.5
CALIBRATION = {"covariance_scale": SCALE, "fitted_on": "val", "applied_in_graph": True}


def _net_and_stats() -> tuple[LocalizationNet, NormStats]:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = LocalizationNet(
        R,
        NETWORK.positions_enu_m() / 1000.0,
        4,
        CFG.n_bands,
        True,
        position_scale_m=30_000.0,
        embed_dim=16,
        cnn_channels=16,
        id_embed_dim=4,
        n_heads=2,
    ).eval()
    n = 50
    spec = rng.normal(-150.0, 8.0, (n, R, CFG.n_bands, 5)).astype(np.float32)
    scalars = rng.normal(-120.0, 10.0, (n, R, 4)).astype(np.float32)
    stats = NormStats.fit(spec, scalars, rng.random((n, R)) < 0.8)
    return net, stats


#: the carrier of the sessions below (the model's ``frequency_hz`` input)
CARRIER = np.array([868.3e6], np.float32)


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    iq = 1e-6 * np.random.default_rng(1).normal(size=(2, R, 2, T)).astype(np.float32)
    return torch.from_numpy(iq), torch.ones(2, R), torch.tensor([433.92e6, 868.3e6])


def _session(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """IQ (1, R, 2, T) of noise at -120 dBm with a tone on two receivers, and a full mask."""
    rng = np.random.default_rng(seed)
    x = 1e-6 * (rng.normal(size=(R, T)) + 1j * rng.normal(size=(R, T)))
    x[:2] += 3e-5 * np.exp(2j * np.pi * 0.1 * np.arange(T))
    return np.stack([x.real, x.imag], axis=-2)[None].astype(np.float32), np.ones((1, R), np.float32)


def _bare(path: Path, iq: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, cov, _ = ort_session(path).run(None, {"iq": iq, "receiver_mask": mask, "frequency_hz": CARRIER})
    return pos.astype(np.float64), cov.astype(np.float64)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net, stats = _net_and_stats()
    graph = InferenceGraph(net, stats, CFG, from_iq=True, covariance_scale=SCALE)
    meta = model_metadata(NETWORK, CFG, "alone-1", altitudes_m=ALTITUDES, calibration=CALIBRATION)
    return export_onnx(graph, _example(), tmp_path_factory.mktemp("alone") / "model.onnx", meta)


def _with_metadata(src: Path, dst: Path, change: dict[str, str | None]) -> Path:
    """A copy of ``src`` with metadata keys replaced (None removes the key), graph untouched."""
    import onnx

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in change.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return dst


def test_metadata_carries_receivers_frame_features_and_calibration(model_file: Path) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_file)).metadata_props}
    receivers = json.loads(meta["receivers"])
    assert [r["station_id"] for r in receivers] == list(NETWORK.station_ids)
    assert [r["latitude"] for r in receivers] == list(NETWORK.latitudes)
    assert [r["longitude"] for r in receivers] == list(NETWORK.longitudes)
    assert [r["altitude_m"] for r in receivers] == list(ALTITUDES)
    assert float(meta["frame_origin_lat"]) == NETWORK.frame.origin_lat
    assert json.loads(meta["feature_config"]) == dataclasses.asdict(CFG)
    assert json.loads(meta["calibration"]) == CALIBRATION


def test_the_scale_is_a_graph_constant_applied_once(model_file: Path, tmp_path: Path) -> None:
    """Bare ONNX Runtime returns SCALE × the network's covariance; OnnxLocalizer does not multiply again."""
    net, stats = _net_and_stats()
    unscaled = InferenceGraph(net, stats, CFG, from_iq=True)
    iq, mask = _session(7)
    pos, cov = _bare(model_file, iq, mask)
    with torch.no_grad():
        want_pos, want_cov, _ = (
            t.double().numpy()
            for t in unscaled(torch.from_numpy(iq), torch.from_numpy(mask), torch.from_numpy(CARRIER))
        )
    np.testing.assert_allclose(pos, want_pos, atol=1.0)
    np.testing.assert_allclose(cov, SCALE * want_cov, rtol=1e-3)
    loc = OnnxLocalizer(model_file)
    assert loc.covariance_scale == SCALE and loc.calibrated
    np.testing.assert_array_equal(loc.predict(iq, mask, CARRIER)[1], cov)
    # an older file whose metadata records a scale its graph does not apply: OnnxLocalizer applies it
    older = InferenceGraph(net, stats, CFG, from_iq=True)
    legacy_meta = model_metadata(
        NETWORK, CFG, "legacy", calibration={"covariance_scale": SCALE, "fitted_on": "val"}
    )
    legacy = export_onnx(older, _example(), tmp_path / "legacy.onnx", legacy_meta)
    _, legacy_raw = _bare(legacy, iq, mask)
    np.testing.assert_allclose(
        OnnxLocalizer(legacy).predict(iq, mask, CARRIER)[1], SCALE * legacy_raw, rtol=1e-12
    )
    np.testing.assert_allclose(SCALE * legacy_raw, cov, rtol=1e-3)


def test_export_refuses_a_scale_applied_twice_or_unrecorded(tmp_path: Path) -> None:
    net, stats = _net_and_stats()
    scaled = InferenceGraph(net, stats, CFG, from_iq=True, covariance_scale=SCALE)
    for calibration, match in [
        (None, "applied in the graph"),  # metadata says 1.0 in the graph, the graph applies 2.5
        ({"covariance_scale": SCALE, "fitted_on": "val"}, "apply it twice"),
    ]:
        meta = model_metadata(NETWORK, CFG, "m", calibration=calibration)
        with pytest.raises(ValueError, match=match):
            export_onnx(scaled, _example(), tmp_path / "model.onnx", meta)
    with pytest.raises(ValueError, match="covariance_scale"):
        InferenceGraph(net, stats, CFG, covariance_scale=0.0)
    assert not (tmp_path / "model.onnx").exists()


def test_a_model_without_calibration_loads_with_scale_one_and_one_warning(
    model_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net, stats = _net_and_stats()
    plain = export_onnx(
        InferenceGraph(net, stats, CFG, from_iq=True),
        _example(),
        tmp_path / "plain.onnx",
        model_metadata(NETWORK, CFG, "never-calibrated"),
    )
    old = _with_metadata(plain, tmp_path / "old.onnx", {"calibration": None})
    iq, mask = _session(8)
    caplog.set_level(logging.WARNING, logger="heimdall.inference")
    for _ in range(3):
        loc = OnnxLocalizer(old)
        assert loc.covariance_scale == 1.0 and not loc.calibrated
        np.testing.assert_array_equal(loc.predict(iq, mask, CARRIER)[1], _bare(old, iq, mask)[1])
    said = [r for r in caplog.records if "no fitted covariance calibration" in r.getMessage()]
    assert len(said) == 1 and "never-calibrated" in said[0].getMessage()


def test_default_calibration_is_scale_one() -> None:
    meta = model_metadata(NETWORK, CFG, "m")
    assert json.loads(meta["calibration"])["covariance_scale"] == 1.0
    assert [r["altitude_m"] for r in json.loads(meta["receivers"])] == [None] * R
    with pytest.raises(ValueError, match="covariance_scale"):
        model_metadata(NETWORK, CFG, "m", calibration={"covariance_scale": 0.0})


def test_the_model_file_alone_locates_a_session_from_iq(model_file: Path, tmp_path: Path) -> None:
    """In a fresh interpreter, with only the file's bytes: nothing of storage, data or a database loads."""
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes(model_file.read_bytes())
    rng = np.random.default_rng(5)
    recordings = {
        sid: (1e-6 * (rng.normal(size=T) + 1j * rng.normal(size=T))).astype(np.complex64)
        for sid in (11, 13, 14, 77)
    }
    np.savez(tmp_path / "session.npz", **{str(k): v for k, v in recordings.items()})
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from heimdall.inference.formats import as_json, predict_session
        from heimdall.inference.inputs import model_inputs
        from heimdall.inference.localizer import OnnxLocalizer

        loc = OnnxLocalizer(open({str(alone)!r}, "rb").read())
        with np.load({str(tmp_path / "session.npz")!r}) as npz:
            recordings = {{int(k): npz[k] for k in npz.files}}
        inputs = model_inputs(loc.input_spec(), recordings, session_id="s", frequency_hz=433.92e6)
        out = as_json(predict_session(loc, inputs))
        feeds = {{"iq": inputs.inputs, "receiver_mask": inputs.receiver_mask}}
        pos, cov, _ = loc.session.run(None, {{**feeds, "frequency_hz": inputs.frequencies}})
        loaded = sorted(m for m in sys.modules if m.startswith(("heimdall.storage", "heimdall.data",
                        "heimdall.services", "sqlalchemy", "boto3")))
        print(json.dumps({{"out": out, "cov": cov[0].tolist(), "loaded": loaded,
                          "receivers": loc.receivers, "scale": loc.covariance_scale,
                          "features": loc.feature_config().config_hash()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert got["loaded"] == []
    assert got["scale"] == SCALE and got["features"] == CFG.config_hash()
    assert [r["altitude_m"] for r in got["receivers"]] == list(ALTITUDES)
    out = got["out"]
    assert out["receivers"] == {"used": [11, 13, 14], "absent": [12], "ignored": [77]}
    # bare ONNX Runtime already gives the calibrated covariance; predict_session reports it unchanged
    np.testing.assert_allclose(out["covariance_enu_m2"], np.array(got["cov"]), rtol=1e-7)
    assert out["model"]["covariance_scale"] == SCALE and out["model"]["calibrated"] is True
    assert out["carrier"]["frequency_hz"] == out["carrier"]["model_frequency_hz"] == 433.92e6
    lat, lon = NETWORK.frame.to_latlon(np.array([out["position"]["east_m"], out["position"]["north_m"]]))
    assert out["position"]["latitude"] == pytest.approx(float(lat), abs=1e-12)
    assert out["position"]["longitude"] == pytest.approx(float(lon), abs=1e-12)
