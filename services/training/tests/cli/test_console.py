"""A console that informs: plain lines off a terminal, no third-party noise, a light `--help`, `--version`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.cli.summary import km, verdict
from heimdall.training.console import best_epoch, split_line, stop_line
from heimdall.training.report import TrainReport

runner = CliRunner()
HEAVY = ("torch", "mlflow", "pytorch_lightning", "onnx", "onnxruntime", "matplotlib")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEIMDALL_", "MLFLOW_", "AWS_"))}
    return {**env, "HEIMDALL_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def test_importing_the_cli_loads_no_heavy_library() -> None:
    probe = f"import sys, heimdall.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    shown = subprocess.run(
        [sys.executable, "-c", "from heimdall.cli import app; app()", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "Usage" in shown.stdout, shown.stderr


def test_version() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"heimdall {version('heimdall-training')}"


def test_sigmf_help_constants_agree_with_ingest() -> None:
    from heimdall.cli import interchange_commands
    from heimdall.ingest import sigmf

    assert interchange_commands.DEFAULT_DATASET == sigmf.DEFAULT_DATASET
    assert interchange_commands.TRUTH == sigmf.TRUTH


def _options(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """(command path, option) of every command; typer vendors click, so by duck type."""
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += _options(cmd, (*path, name))
        else:
            out += [(" ".join((*path, name)), p) for p in cmd.params if p.param_type_name == "option"]
    return out


def test_defaults_are_shown_one_way() -> None:
    """typer's `[default: …]` everywhere: no help text spells a default of its own."""
    options = _options(typer.main.get_command(app))
    assert options
    spelled = [f"{cmd} {o.opts[0]}" for cmd, o in options if "(default" in (o.help or "")]
    assert spelled == []
    train = {o.name: o for cmd, o in options if cmd == "train"}
    from heimdall.training.config import TrainConfig

    cfg = TrainConfig()
    for name in ("epochs", "batch_size", "learning_rate", "seed", "accelerator", "devices", "num_nodes"):
        assert train[name].show_default == str(getattr(cfg, name)), name
    assert train["strategy"].show_default == cfg.strategy and train["patience"].show_default == str(
        cfg.patience
    )
    assert train["output_dir"].show_default == str(cfg.output_dir)
    assert train["dataset"].show_default == ",".join(cfg.datasets)


def test_summary_lines() -> None:
    assert verdict(38_500, "weighted centroid", 42_200) == (
        "model RMSE 38.5 km vs weighted centroid 42.2 km: better by 3.7 km"
    )
    assert verdict(50_000, "kNN", 40_000).endswith("worse by 10.0 km")
    assert verdict(1000, "x", 1000.5).endswith("on par")
    assert km(42) == "0.04 km"
    history = [
        {"epoch": 0.0, "val_loss": 2.0},
        {"epoch": 1.0, "val_loss": 1.0},
        {"epoch": 2.0, "val_loss": 1.5},
    ]
    assert best_epoch(history) == 2 and best_epoch([{"epoch": 0.0}]) is None
    assert split_line({"train": 8, "val": 2, "test": 2}, {"too_few_receivers": 3}) == (
        "sessions train/val/test: 8/2/2; skipped: 3 too_few_receivers"
    )
    report = TrainReport.model_construct(epochs_run=3, best_epoch=2, stopped_early=True, history=history)
    assert stop_line(report) == "early stopping at epoch 3 (best epoch 2, val_loss 1)"
    report = TrainReport.model_construct(epochs_run=3, best_epoch=2, stopped_early=False, history=history)
    assert stop_line(report) == "ran all 3 epochs (best epoch 2, val_loss 1)"


@pytest.mark.slow
def test_train_off_a_terminal_prints_plain_informative_lines(tmp_path: Path) -> None:
    """simulate on SQLite + train --epochs 2 in subprocesses (stderr a pipe, not a TTY)."""
    env = _env(tmp_path / "heimdall-data")
    cli = [sys.executable, "-c", "from heimdall.cli import app; app()"]
    sim = subprocess.run(
        [*cli, "simulate", "--sessions", "12", "--seed", "4", "--duration", "0.1", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert sim.returncode == 0, sim.stderr
    out_dir = tmp_path / "m"
    done = subprocess.run(
        [*cli, "train", "--epochs", "2", "--output-dir", str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    everything = sim.stdout + sim.stderr + done.stdout + done.stderr
    for noise in ("\r", "Tip", "torchvision", "TimescaleDB", "litlogger", "GPU available", "Warning"):
        assert noise not in everything, (noise, everything)
    err = done.stderr.splitlines()
    assert [line.split(":")[0] for line in err if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    epochs = [line for line in err if line.startswith("epoch ")]
    assert all("train_loss" in line and "val median" in line and " km" in line for line in epochs)
    assert any(line.startswith("sessions train/val/test: ") and "skipped:" in line for line in err)
    report = json.loads((out_dir / "report.json").read_text())
    val = [h["val_loss"] for h in report["history"]]
    assert report["stopped_early"] is False and report["epochs_run"] == len(val) == 2
    assert report["best_epoch"] == 1 + val.index(min(val))  # 1-based epoch of the lowest val_loss
    ended = [line for line in err if line.startswith(("early stopping at epoch", "ran all"))]
    assert ended == [stop_line(TrainReport.model_validate(report))]
    assert "test RMSE" in done.stdout and " km" in done.stdout
    assert "vs weighted centroid" in done.stdout and "registered" in done.stdout
    assert f"next: heimdall evaluate --model {out_dir} --split test" in done.stdout


def test_loading_lines_say_the_progress_every_tenth_and_the_end() -> None:
    from heimdall.training.console import loading_lines

    said: list[str] = []
    report = loading_lines(said.append)
    for done in range(95):
        report(done, 95)
    assert said[0] == "loading sessions: 1/95" and said[-1] == "loading sessions: 95/95"
    assert len(said) == 12 and "loading sessions: 10/95" in said  # the first, every 9th, the last
