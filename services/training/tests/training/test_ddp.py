"""``heimdall train --accelerator cpu --devices 2 --strategy ddp``: two real gloo processes train the
model one process trains with the same effective batch size, and only rank 0 records anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heimdall.services import open_services
from heimdall.settings import Settings

HEIMDALL = Path(sys.executable).with_name("heimdall")
#: Relative tolerance on test metrics and losses. The two runs take the same optimiser steps on the
#: same global batches (GlobalBatchShards); they differ only in float32 summation order (gloo's
#: all-reduce of two half-batch gradients vs one full-batch sum), ~1e-7 relative per step, which two
#: epochs of AdamW do not amplify past 1e-4 (measured: 1e-10 on test RMSE, 1e-7 on train loss).
REL_TOL = 1e-4


def _train(data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HEIMDALL_", "AWS_"))}
    env |= {"HEIMDALL_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [str(HEIMDALL), "train", "--epochs", "2", "--seed", "5", "--output-dir", str(out), "--no-progress"]
    return subprocess.run(
        [*cmd, *extra], env=env, cwd=out.parent, capture_output=True, text=True, timeout=300
    )


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_two_gloo_processes_match_one_process_and_log_one_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from simdata import simulate_into

    data_dir = tmp_path / "heimdall-data"
    services = open_services(Settings(data_dir=data_dir))
    simulate_into(services, 40, seed=11)
    services.close()
    ddp_out = tmp_path / "ddp"
    ddp = _train(
        data_dir, ddp_out, "--batch-size", "5", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert _processes_mentioning(str(ddp_out)) == []  # rank 1 ended with rank 0: no leftover process
    uri = f"sqlite:///{(data_dir / 'mlflow.db').as_posix()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    report = json.loads((ddp_out / "report.json").read_text())
    assert [r.info.run_id for r in runs] == [report["model_id"]]  # exactly one run, rank 0's
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss")] == [0, 1]
    assert len(client.search_registered_models()[0].latest_versions or []) == 1
    assert (ddp.stdout + ddp.stderr).count("sessions train/val/test") == 1  # rank 1 printed nothing
    assert sorted(p.name for p in ddp_out.glob("*.json")) == [
        "mlflow_run.json",
        "network.json",
        "normalization.json",
        "report.json",
        "split.json",
    ]
    assert report["effective_batch_size"] == 10

    one_out = tmp_path / "one"
    one = _train(data_dir, one_out, "--batch-size", "10", "--no-tracking")
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads((one_out / "report.json").read_text())
    # 32 training sessions in global batches of 10: four steps per epoch, the last one of 2 sessions
    assert report["n_train"] == single["n_train"] == 32
    assert json.loads((ddp_out / "split.json").read_text()) == json.loads(
        (one_out / "split.json").read_text()
    )
    for key in ("rmse_m", "median_error_m", "nll"):
        assert report["test"][key] == pytest.approx(single["test"][key], rel=REL_TOL), key
    for got, want in zip(report["history"], single["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_median_error_m"):
            assert got[key] == pytest.approx(want[key], rel=REL_TOL), key
