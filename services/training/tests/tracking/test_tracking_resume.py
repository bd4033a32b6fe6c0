"""Interrupted runs are visible: `heimdall train` killed with SIGKILL, then `--resume`, is one MLflow run
that ends FINISHED with every epoch once, and report.json says it resumed and from which epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heimdall.tracking.run import EPOCH_METRICS, RUN_MARKER

EPOCHS = 5
# The first process sleeps 1 s at the end of every epoch (before its checkpoint is written), so the
# test can kill it mid-run; everything else is the real `heimdall train`.
SLOW_TRAIN = """
import sys, time
from heimdall.training.module import LocalizationModule
from heimdall.cli import app

_end = LocalizationModule.on_train_epoch_end
def _slow(self):
    _end(self)
    time.sleep(1.0)
LocalizationModule.on_train_epoch_end = _slow
sys.argv = ["heimdall", *sys.argv[1:]]
app()
"""


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _checkpoint_epoch(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except (OSError, EOFError, RuntimeError, KeyError):
        return None


def test_killed_run_is_resumed_as_the_same_mlflow_run(embedded: Path, tmp_path: Path) -> None:
    out = tmp_path / "models"
    args = ["train", "--epochs", str(EPOCHS), "--batch-size", "64", "--seed", "3"]
    args += ["--output-dir", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log1 = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_TRAIN, *args],
        cwd=tmp_path,
        env=env,
        stdout=log1,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 90
    try:
        while (epoch := _checkpoint_epoch(last) if last.is_file() else None) is None or epoch < 1:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint for epoch >= 1 within 90 s"
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9: no handler, no finally, no MLflow end_run
        first.wait(timeout=30)
        log1.close()
    assert first.returncode == -signal.SIGKILL
    done = _checkpoint_epoch(last)  # the epoch the checkpoint completed (0-based)
    assert done is not None and 1 <= done < EPOCHS - 1, done

    uri = f"sqlite:///{(embedded / 'mlflow.db').as_posix()}"
    marker = json.loads((out / RUN_MARKER).read_text())
    run_id = marker["run_id"]
    client = _client(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # what a kill -9 leaves behind

    heimdall = Path(sys.executable).parent / "heimdall"
    second = subprocess.run(
        [str(heimdall), *args, "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] is True
    assert report["resumed_from_epoch"] == done + 1  # first epoch trained after the kill
    assert [int(h["epoch"]) for h in report["history"]] == list(range(EPOCHS))
    assert report["epochs_run"] == EPOCHS
    assert report["model_id"] == run_id  # same run, same model id
    assert json.loads((out / RUN_MARKER).read_text())["run_id"] == run_id

    runs = client.search_runs([marker["experiment_id"]])
    assert [r.info.run_id for r in runs] == [run_id]  # exactly one run for the training
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["heimdall.resumed"] == "true"
    assert run.data.tags["heimdall.resumed_from_epoch"] == str(done + 1)
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), (key, steps)  # every epoch, once


def test_log_history_fills_in_only_the_missing_epochs(tmp_path: Path) -> None:
    from heimdall.settings import Settings
    from heimdall.tracking.connection import TrackingTarget, mlflow_client
    from heimdall.tracking.run import TrackedRun, _metric_batch

    target = TrackingTarget.from_settings(Settings(data_dir=tmp_path, mlflow_tracking_uri=""))
    client = mlflow_client(target)
    exp = client.create_experiment("resume-unit", artifact_location=target.artifact_root)
    run = TrackedRun(target, client, client.create_run(exp).info.run_id, exp)
    history = [{"epoch": float(e), "train_loss": 1.0 + e, "val_loss": 2.0 + e} for e in range(4)]
    client.log_batch(run.run_id, metrics=_metric_batch({"train_loss": 1.0, "val_loss": 2.0}, 0))
    assert run.log_history(history) == 3
    assert run.log_history(history) == 0
    for key in ("train_loss", "val_loss"):
        steps = sorted(m.step for m in client.get_metric_history(run.run_id, key))
        assert steps == [0, 1, 2, 3]


@pytest.mark.parametrize("status", ["RUNNING", "FINISHED"])
def test_fresh_run_in_a_used_folder_ends_a_stale_run(status: str, tmp_path: Path) -> None:
    """Without --resume a RUNNING run recorded in the folder is ended KILLED; a FINISHED one is kept."""
    from heimdall.settings import Settings
    from heimdall.tracking.connection import TrackingTarget, mlflow_client
    from heimdall.tracking.run import TrackedRun, start_run, write_run_marker
    from heimdall.training.config import load_config

    target = TrackingTarget.from_settings(Settings(data_dir=tmp_path / "hd", mlflow_tracking_uri=""))
    client = mlflow_client(target)
    cfg = load_config(None, {"epochs": 1, "output_dir": tmp_path / "m"})
    with start_run(target, client, cfg) as old:
        pass
    if status == "RUNNING":
        client.update_run(old.run_id, status="RUNNING")
    write_run_marker(cfg.output_dir, TrackedRun(target, client, old.run_id, old.experiment_id))
    with start_run(target, client, cfg) as new:
        assert new.run_id != old.run_id
        assert json.loads((cfg.output_dir / RUN_MARKER).read_text())["run_id"] == new.run_id
    assert client.get_run(old.run_id).info.status == ("KILLED" if status == "RUNNING" else "FINISHED")
    assert client.get_run(new.run_id).info.status == "FINISHED"
