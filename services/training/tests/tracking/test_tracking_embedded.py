"""MLflow tracking on the embedded default (sqlite:///heimdall-data/mlflow.db + local artifacts), run as a
user would through the CLI: what a run records, the registry, --from-run, predict and the example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from tracking_support import download, embedded_copy, great_circle_m, invoke, truth_of

from heimdall.inference.localizer import OnnxLocalizer
from heimdall.tracking.registry import CHAMPION, CHAMPION_URI, MODEL_NAME
from heimdall.tracking.run import EPOCH_METRICS, RUN_ARTIFACTS

TRAINING = Path(__file__).resolve().parents[2]
EXAMPLE = TRAINING / "examples" / "infer_sample.py"
SAMPLE = TRAINING / "examples" / "sample_session.npz"


@dataclass
class FirstRun:
    root: Path
    data_dir: Path
    out: Path
    run_id: str
    uri: str
    output: str


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def first(sim_template: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("embedded")
    with pytest.MonkeyPatch.context() as mp:
        data_dir = embedded_copy(sim_template, root, mp)
        out = root / "models"
        r = invoke(
            [
                "train",
                "--epochs",
                "2",
                "--batch-size",
                "64",
                "--seed",
                "3",
                "--output-dir",
                str(out),
                "--no-progress",
            ]
        )
        assert r.exit_code == 0, r.output
        report = json.loads((out / "report.json").read_text())
        uri = f"sqlite:///{(data_dir / 'mlflow.db').as_posix()}"
        yield FirstRun(root, data_dir, out, report["model_id"], uri, r.output)


def test_run_records_config_snapshot_metrics_tags_and_artifacts(first: FirstRun) -> None:
    report = json.loads((first.out / "report.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{32}", first.run_id)
    assert f"mlflow run {first.run_id}" in first.output
    client = _client(first.uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["epochs"] == "2" and p["seed"] == "3" and p["batch_size"] == "64"
    assert p["model.embed_dim"] == str(report["config"]["model"]["embed_dim"])
    assert p["features.n_fft"] == str(report["config"]["features"]["n_fft"])
    assert json.loads(p["datasets"]) == ["sim:nw-italy-v1"] == json.loads(p["data.datasets"])
    assert p["data.feature_config_hash"] == report["feature_config_hash"]
    for split, snap in report["data_snapshot"].items():
        assert p[f"data.{split}.n"] == str(snap["n"])
        assert p[f"data.{split}.ids_sha256_16"] == snap["ids_sha256_16"]
    tags = run.data.tags
    dists = {"torch": "torch", "lightning": "pytorch-lightning", "mlflow": "mlflow"}
    dists |= {"onnxruntime": "onnxruntime", "heimdall": "heimdall-training"}
    for label, dist in dists.items():  # the installed versions, asked of the package metadata here
        assert tags[f"heimdall.version.{label}"] == version(dist), label
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=TRAINING, capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["heimdall.git_commit"] == head.stdout.strip()
    assert tags["heimdall.test_ids_sha256_16"] == report["data_snapshot"]["test"]["ids_sha256_16"]
    # per-epoch metrics with step = epoch, equal to the module's history
    for key in EPOCH_METRICS:
        hist = client.get_metric_history(first.run_id, key)
        assert [m.step for m in hist] == [0, 1], key
        assert [m.value for m in hist] == pytest.approx([h[key] for h in report["history"]], rel=1e-6)
    metrics = run.data.metrics
    for key, value in report["test"].items():  # every final figure is the report's, under its name
        assert metrics[f"test_{key}"] == pytest.approx(value, rel=1e-12), key
    wc = report["baselines"]["weighted_centroid"]
    assert metrics["baseline_weighted_centroid_rmse_m"] == pytest.approx(wc["rmse_m"], rel=1e-12)
    for key in ("max_position_diff_m", "size_bytes"):
        assert metrics[f"onnx_{key}"] == pytest.approx(report["onnx"][key], rel=1e-12), key
    assert metrics["onnx_size_bytes"] == (first.out / "model.onnx").stat().st_size
    assert metrics["epochs_run"] == 2 == len(report["history"])
    # artifacts, under heimdall-data/mlartifacts
    names = {a.path for a in client.list_artifacts(first.run_id)}
    assert set(RUN_ARTIFACTS) <= names
    got = Path(client.download_artifacts(first.run_id, "split.json", str(first.root / "artifact-check")))
    assert got.read_bytes() == (first.out / "split.json").read_bytes()  # the run's files, not just names
    logged = json.loads(
        Path(client.download_artifacts(first.run_id, "report.json", str(got.parent))).read_text()
    )
    assert logged["test"] == report["test"] and logged["data_snapshot"] == report["data_snapshot"]
    assert {a.path for a in client.list_artifacts(first.run_id, "checkpoints")} == {"checkpoints/best.ckpt"}
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "heimdall"
    assert exp.artifact_location.startswith((first.data_dir / "mlartifacts").resolve().as_uri())
    assert (first.data_dir / "mlartifacts").is_dir()
    # the ONNX model object under the run id
    stored = first.data_dir / "objects" / "heimdall-models" / first.run_id / "model.onnx"
    assert stored.read_bytes() == (first.out / "model.onnx").read_bytes()


def test_first_version_is_champion_and_serves_the_exported_model(first: FirstRun, tmp_path: Path) -> None:

    client = _client(first.uri)
    mv = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(mv.version) == "1" and mv.run_id == first.run_id
    assert "champion moved to version 1" in first.output
    local = download(CHAMPION_URI, first.uri, tmp_path)
    assert {"MLmodel", "model.onnx", "input_example.json"} <= {f.name for f in local.iterdir()}
    mlmodel = (local / "MLmodel").read_text()
    assert "onnx" in mlmodel and '"name": "iq"' in mlmodel and "CPUExecutionProvider" in mlmodel
    assert (local / "model.onnx").read_bytes() == (first.out / "model.onnx").read_bytes()
    served = OnnxLocalizer(local / "model.onnx")
    exported = OnnxLocalizer(first.out / "model.onnx")
    assert served.model_id == first.run_id
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, exported.n_receivers, 2, exported.n_samples)) * 1e-6).astype(np.float32)
    mask = np.ones((3, exported.n_receivers), np.float32)
    for a, b in zip(served.predict(x, mask), exported.predict(x, mask), strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_json_and_geojson(first: FirstRun) -> None:
    from heimdall.jobs.predict import session_inputs
    from heimdall.services import open_services

    sid = json.loads((first.out / "split.json").read_text())["test"][0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEIMDALL_DATA_DIR", str(first.data_dir))
        r = invoke(["predict", "--session", sid])
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        g = invoke(
            ["predict", "--model", str(first.out / "model.onnx"), "--session", sid, "--format", "geojson"]
        )
        assert g.exit_code == 0, g.output
        geo = json.loads(g.stdout)
        missing = invoke(["predict", "--model", str(first.out), "--session", str(uuid.uuid4())])
        assert missing.exit_code == 2 and "no recording session" in missing.output
        services = open_services()
        loc = OnnxLocalizer(first.out / "model.onnx")
        inputs = session_inputs(services, sid, loc)
        services.close()
    pos, cov = loc.predict(inputs.inputs, inputs.receiver_mask)
    lat, lon = loc.to_latlon(pos[0])
    assert out["session_id"] == sid and out["model"]["model_id"] == first.run_id
    assert out["position"]["latitude"] == pytest.approx(float(lat), abs=1e-12)
    assert out["position"]["longitude"] == pytest.approx(float(lon), abs=1e-12)
    np.testing.assert_allclose(out["covariance_enu_m2"], cov[0], rtol=1e-12)
    one, two = out["ellipses"]["1sigma"], out["ellipses"]["2sigma"]
    assert two["semi_major_m"] == pytest.approx(2 * one["semi_major_m"]) and one["confidence"] == 0.3935
    assert one["semi_major_m"] ** 2 == pytest.approx(np.linalg.eigvalsh(cov[0])[1], rel=1e-9)
    db_truth = truth_of(first.data_dir, sid)
    assert (out["truth"]["latitude"], out["truth"]["longitude"]) == db_truth
    expected_error = great_circle_m(float(lat), float(lon), *db_truth)
    assert out["truth"]["error_m"] == pytest.approx(expected_error, rel=1e-9)
    assert sorted(out["receivers"]["used"]) == list(range(1, 8))
    # GeoJSON: a FeatureCollection with the position Point, 1σ/2σ/95 % Polygons, the receivers, the truth
    assert geo["type"] == "FeatureCollection"
    kinds = {f["properties"]["kind"]: f for f in geo["features"]}
    ellipses = {"ellipse_1sigma", "ellipse_2sigma", "ellipse_95pct"}
    assert set(kinds) == {"position", *ellipses, "receiver", "truth"}
    assert kinds["position"]["geometry"] == {
        "type": "Point",
        "coordinates": [out["position"]["longitude"], out["position"]["latitude"]],
    }
    ring = np.array(kinds["ellipse_1sigma"]["geometry"]["coordinates"][0])
    assert kinds["ellipse_1sigma"]["geometry"]["type"] == "Polygon" and (ring[0] == ring[-1]).all()
    x, y = ring[:, 0], ring[:, 1]
    assert 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0  # counter-clockwise (RFC 7946)
    enu = loc.frame.to_enu(ring[:, 1], ring[:, 0]) - pos[0]
    maha = np.einsum("ni,ij,nj->n", enu, np.linalg.inv(cov[0]), enu)
    np.testing.assert_allclose(maha, 1.0, rtol=1e-5)  # every vertex on the 1σ ellipse


def test_example_script_runs_on_the_sample_session(first: FirstRun) -> None:
    assert SAMPLE.stat().st_size < 400_000
    env = {**os.environ, "MLFLOW_TRACKING_URI": first.uri}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", str(first.out / "model.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    # the same numbers through heimdall's own OnnxLocalizer
    loc = OnnxLocalizer(first.out / "model.onnx")
    with np.load(SAMPLE, allow_pickle=False) as npz:
        iq, ids = npz["iq"], npz["station_ids"].tolist()
        truth = float(npz["truth_latitude"]), float(npz["truth_longitude"])
    assert iq.shape == (7, 6250) and iq.dtype == np.complex64  # 0.5 s: the quickstart's length
    n = int(loc.n_samples or iq.shape[1])
    first = (iq.shape[1] - n) // 2  # a model of shorter recordings reads the middle (centred crop)
    assert out["notes"] == ([f"cropped 6250 → {n} samples, centred (samples {first}…{first + n - 1})"]
                            if n < 6250 else [])  # fmt: skip
    order = [ids.index(s) for s in loc.station_ids]
    pos, cov = loc.predict(iq[order][None, :, first : first + n], np.ones((1, 7)))
    lat, lon = loc.to_latlon(pos[0])
    assert out["position"]["latitude"] == pytest.approx(float(lat), abs=1e-9)
    assert out["position"]["longitude"] == pytest.approx(float(lon), abs=1e-9)
    major, minor, azimuth = loc.ellipse(cov[0], 2.0)
    assert out["ellipses"]["2sigma"]["semi_major_m"] == pytest.approx(float(major), rel=1e-9)
    assert out["ellipses"]["2sigma"]["semi_minor_m"] == pytest.approx(float(minor), rel=1e-9)
    assert out["ellipses"]["2sigma"]["orientation_deg"] == pytest.approx(float(azimuth), abs=1e-6)
    assert (out["truth"]["latitude"], out["truth"]["longitude"]) == truth
    # and from the registry
    reg = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", CHAMPION_URI],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert reg.returncode == 0, reg.stderr[-3000:]
    assert json.loads(reg.stdout)["position"] == out["position"]


def test_from_run_reproduces_metrics_and_registry_rules(first: FirstRun) -> None:
    client = _client(first.uri)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEIMDALL_DATA_DIR", str(first.data_dir))
        mp.chdir(first.root)
        r = invoke(["train", "--from-run", first.run_id, "--no-progress"])
        assert r.exit_code == 0, r.output
        # same test split, equal RMSE: not better, so the champion stays
        assert "version 2; champion stays at version 1" in r.output and "does not beat" in r.output
        rerun_dir = first.out.with_name(f"models-rerun-{first.run_id[:8]}")
        old = json.loads((first.out / "report.json").read_text())
        new = json.loads((rerun_dir / "report.json").read_text())
        assert new["model_id"] != first.run_id
        for key, value in old["test"].items():
            assert new["test"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
        assert json.loads((rerun_dir / "split.json").read_text()) == json.loads(
            (first.out / "split.json").read_text()
        )
        run = client.get_run(new["model_id"])
        assert run.data.tags["heimdall.from_run"] == first.run_id
        old_params = client.get_run(first.run_id).data.params
        assert {k: v for k, v in run.data.params.items() if k != "output_dir"} == {
            k: v for k, v in old_params.items() if k != "output_dir"
        }

        listed = invoke(["models", "list"])
        assert listed.exit_code == 0, listed.output
        rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()[:1].isdigit()}
        assert set(rows) == {"1", "2"} and "champion" in rows["1"] and first.run_id in rows["1"]
        as_json = json.loads(invoke(["models", "list", "--json"]).stdout)
        assert [v["version"] for v in as_json] == ["2", "1"]
        assert as_json[1]["aliases"] == ["champion"] and as_json[0]["run_id"] == new["model_id"]
        assert as_json[1]["test_rmse_m"] == pytest.approx(old["test"]["rmse_m"])

        bad = invoke(["models", "promote", "99"])
        assert bad.exit_code == 2 and "no version '99'" in bad.output and "1, 2" in bad.output
        assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
        ok = invoke(["models", "promote", "2"])
        assert ok.exit_code == 0 and "version 2 (was 1)" in ok.output
        assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "2"


def test_from_run_of_unknown_run_is_clear(first: FirstRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(first.data_dir))
    r = invoke(["train", "--from-run", "0" * 32, "--no-progress"])
    assert r.exit_code == 2 and "no MLflow run" in r.output


def test_no_tracking_trains_without_mlflow(
    embedded: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/never-contacted")
    r = invoke(
        ["train", "--no-tracking", "--epochs", "1", "--output-dir", str(tmp_path / "m"), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert "mlflow run" not in r.output and (tmp_path / "m" / "model.onnx").is_file()
    assert not (embedded / "mlflow.db").exists() and not (embedded / "mlartifacts").exists()
    model_id = json.loads((tmp_path / "m" / "report.json").read_text())["model_id"]
    stored = embedded / "objects" / "heimdall-models" / model_id / "model.onnx"
    assert stored.read_bytes() == (tmp_path / "m" / "model.onnx").read_bytes()
    both = invoke(["train", "--no-tracking", "--promote"])
    assert both.exit_code == 2 and "--promote" in both.output
