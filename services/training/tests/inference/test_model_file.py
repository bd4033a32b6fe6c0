"""A ``model.onnx`` alone — no database, no object store, no network.json — locates a session from IQ arrays.

The metadata written by export carries the receivers (ids, names, latitude/longitude/altitude), the
frame origin, the full feature configuration and the covariance calibration; OnnxLocalizer reads them.
"""

from __future__ import annotations

import dataclasses
import json
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


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    graph = InferenceGraph(net, stats, CFG, from_iq=True)
    meta = model_metadata(
        NETWORK,
        CFG,
        "alone-1",
        altitudes_m=ALTITUDES,
        calibration={"covariance_scale": SCALE, "fitted_on": "val"},
    )
    iq = 1e-6 * rng.normal(size=(2, R, 2, T)).astype(np.float32)
    example = (torch.from_numpy(iq), torch.ones(2, R))
    return export_onnx(graph, example, tmp_path_factory.mktemp("alone") / "model.onnx", meta)


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
    assert json.loads(meta["calibration"]) == {"covariance_scale": SCALE, "fitted_on": "val"}


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
        inputs = model_inputs(loc.input_spec(), recordings, session_id="s")
        out = as_json(predict_session(loc, inputs))
        pos, cov = loc.predict(inputs.inputs, inputs.receiver_mask)
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
    np.testing.assert_allclose(out["covariance_enu_m2"], SCALE * np.array(got["cov"]), rtol=1e-12)
    lat, lon = NETWORK.frame.to_latlon(np.array([out["position"]["east_m"], out["position"]["north_m"]]))
    assert out["position"]["latitude"] == pytest.approx(float(lat), abs=1e-12)
    assert out["position"]["longitude"] == pytest.approx(float(lon), abs=1e-12)
