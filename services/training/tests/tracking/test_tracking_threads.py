"""Tracking is safe from several threads: two threads connect, record a run (params, metrics, an
artifact, an ONNX model, a registered version) and download their champion at the same time, each
against its own embedded store, and nothing lands in the other's store or in process-wide state."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from heimdall.settings import Settings
from heimdall.tracking.connection import PROCESS_ENV_KEYS, connect
from heimdall.tracking.models import download_model, download_run_artifacts
from heimdall.tracking.registry import CHAMPION_URI, register, update_champion
from heimdall.tracking.run import log_onnx_model, start_run
from heimdall.training.config import load_config

N_THREADS = 2


def _tiny_onnx(path: Path, tag: str) -> bytes:
    """An Identity model whose bytes differ per thread (doc string), so downloads can be told apart."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity-{tag}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=tag)
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path.read_bytes()


@dataclass
class Outcome:
    run_id: str = ""
    uri: str = ""
    model_bytes: bytes = b""
    downloaded: bytes = b""
    by_run: bytes = b""
    meta: str = ""
    artifact: str = ""
    error: BaseException | None = None


def _settings(root: Path, i: int) -> Settings:
    return Settings(
        data_dir=root / "hd",
        mlflow_tracking_uri="",
        mlflow_artifact_root="",
        mlflow_experiment=f"threads-{i}",
        s3_endpoint_url=None,
        mlflow_s3_endpoint_url=None,
        connect_timeout_s=3.0,
    )


def _track(i: int, root: Path, barrier: threading.Barrier, out: Outcome) -> None:
    try:
        settings = _settings(root, i)
        barrier.wait(timeout=60)
        target, client = connect(settings)
        out.uri = target.uri
        cfg = load_config(None, {"epochs": 1, "output_dir": root / "m"})
        onnx_path = root / "model.onnx"
        out.model_bytes = _tiny_onnx(onnx_path, f"thread-{i}")
        with start_run(target, client, cfg, tags={"test.thread": str(i)}) as run:
            out.run_id = run.run_id
            run.log_params({"test.thread": str(i)})
            client.log_metric(run.run_id, "test_rmse_m", 100.0 + i, step=0)
            note = root / "m" / "note.txt"
            note.write_text(f"thread {i}")
            client.log_artifact(run.run_id, str(note))
            model_uri = log_onnx_model(
                client, run.run_id, run.experiment_id, onnx_path, metadata={"test_thread": str(i)}
            )
            report = {
                "test": {"rmse_m": 100.0 + i, "median_error_m": 50.0},
                "data_snapshot": {"test": {"ids_sha256_16": "same-split", "n": 1}},
            }
            assert update_champion(client, register(client, model_uri, run.run_id, report)).moved
        barrier.wait(timeout=60)  # both runs exist before either downloads
        local = download_model(CHAMPION_URI, settings, root / "champion")
        out.downloaded = (local / "model.onnx").read_bytes()
        out.meta = (local / "registered_model_meta").read_text()
        by_run = download_model(f"runs:/{out.run_id}/model", settings, root / "by-run")
        out.by_run = next(by_run.rglob("model.onnx")).read_bytes()
        (got,) = download_run_artifacts(settings, out.run_id, ["note.txt"], root / "run")
        out.artifact = got.read_text()
    except BaseException as exc:  # reported by the main thread
        out.error = exc
        barrier.abort()


def test_two_threads_track_to_their_own_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    for var in ("MLFLOW_TRACKING_URI", "HEIMDALL_MLFLOW_ARTIFACT_ROOT", "HEIMDALL_MLFLOW_EXPERIMENT"):
        monkeypatch.delenv(var, raising=False)
    global_uri = mlflow.get_tracking_uri()
    before = dict(os.environ)
    roots = [tmp_path / f"t{i}" for i in range(N_THREADS)]
    outcomes = [Outcome() for _ in roots]
    barrier = threading.Barrier(N_THREADS)
    threads = [
        threading.Thread(target=_track, args=(i, root, barrier, out), name=f"track-{i}")
        for i, (root, out) in enumerate(zip(roots, outcomes, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a tracking thread hung"
    for out in outcomes:
        if out.error is not None:
            raise out.error

    assert len({out.uri for out in outcomes}) == N_THREADS
    for i, (root, out) in enumerate(zip(roots, outcomes, strict=True)):
        assert out.uri == f"sqlite:///{(root / 'hd' / 'mlflow.db').as_posix()}"
        client = MlflowClient(tracking_uri=out.uri, registry_uri=out.uri)
        exp = client.get_experiment_by_name(f"threads-{i}")
        assert exp is not None and exp.artifact_location.startswith((root / "hd" / "mlartifacts").as_uri())
        assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [out.run_id]
        run = client.get_run(out.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["test.thread"] == str(i) and run.data.tags["test.thread"] == str(i)
        assert run.data.metrics["test_rmse_m"] == 100.0 + i
        (other,) = [o for o in outcomes if o is not out]
        assert client.search_runs([exp.experiment_id], f"attributes.run_id = '{other.run_id}'") == []
        assert [str(v.version) for v in client.search_model_versions("name = 'heimdall-localizer'")] == ["1"]
        assert out.downloaded == out.model_bytes and out.downloaded != other.model_bytes
        assert out.by_run == out.model_bytes and "heimdall-localizer" in out.meta
        assert out.artifact == f"thread {i}"
        assert run.outputs is not None and [m.model_id for m in run.outputs.model_outputs]
        logged = client.get_logged_model(run.outputs.model_outputs[0].model_id)
        assert (
            str(logged.status) in ("READY", "LoggedModelStatus.READY") and logged.source_run_id == out.run_id
        )

    # no process-wide MLflow state and no environment change beyond the documented process options
    assert mlflow.get_tracking_uri() == global_uri
    after = dict(os.environ)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= set(PROCESS_ENV_KEYS), sorted(changed - set(PROCESS_ENV_KEYS))
