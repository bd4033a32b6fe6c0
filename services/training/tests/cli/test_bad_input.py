"""Every failure a user can cause: one line naming what was wrong, exit status 2, nothing half-written.

Each case runs the real CLI (in-process with typer's CliRunner; two through a subprocess, to see the
real stderr) and checks the exit status, that the one ``error:`` line names the bad flag, file or
value, that no traceback is printed, and that nothing was left behind (no output folder, no objects).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.simulate.scenario import available_scenarios

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parents[2] / "src" / "heimdall" / "scenarios" / "nw-italy-v1.yaml"
UNKNOWN_SESSION = "00000000-0000-0000-0000-000000000000"
UMASK = 0o002  # not mkstemp's 0600: a file left at 0600 fails the permission check


def _env(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    for var in ("HEIMDALL_DATABASE_URL", "HEIMDALL_OBJECT_STORE", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(data_dir))


def _fails_cleanly(args: list[str], *names: str) -> str:
    """Run the CLI; assert exit 2 and one error line naming every one of ``names``; return that line."""
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Trained:
    data_dir: Path
    model_dir: Path
    umask: int


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """12 short simulated sessions and one 1-epoch model, trained once for the module (umask 002)."""
    root = tmp_path_factory.mktemp("bad-input")
    model_dir = root / "model"
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, root / "heimdall-data")
        r = runner.invoke(
            app, ["simulate", "--sessions", "12", "--seed", "4", "--duration", "0.1", "--no-progress"]
        )
        assert r.exit_code == 0, r.output
        old = os.umask(UMASK)
        try:
            args = [
                "train",
                "--epochs",
                "1",
                "--no-tracking",
                "--no-progress",
                "--output-dir",
                str(model_dir),
            ]
            r = runner.invoke(app, args)
        finally:
            os.umask(old)
        assert r.exit_code == 0, r.output
    yield Trained(root / "heimdall-data", model_dir, UMASK)


# --------------------------------------------------------------------------------------------------------
# Model files: predict and evaluate
# --------------------------------------------------------------------------------------------------------

BAD_MODELS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda good: good[: len(good) // 3],
    "random-bytes": lambda good: os.urandom(4096),
    "text-renamed": lambda good: b"just some notes, renamed to .onnx\n",
}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_unreadable_model_file(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, kind: str
) -> None:
    _env(monkeypatch, trained.data_dir)
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("split.json", "network.json"):  # a run folder whose model.onnx alone is broken
        shutil.copy(trained.model_dir / name, folder / name)
    bad = folder / "model.onnx"
    bad.write_bytes(BAD_MODELS[kind]((trained.model_dir / "model.onnx").read_bytes()))
    out = tmp_path / "evaluation"
    if command == "predict":
        args = ["predict", "--session", UNKNOWN_SESSION, "--model", str(bad)]
    else:
        args = ["evaluate", "--model", str(folder), "--output-dir", str(out), "--no-oracle", "--no-outage"]
    _fails_cleanly(args, str(bad), "not a readable ONNX model")
    assert not out.exists()


def test_unknown_session(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, trained.data_dir)
    model = str(trained.model_dir / "model.onnx")
    _fails_cleanly(["predict", "--session", UNKNOWN_SESSION, "--model", model], UNKNOWN_SESSION)
    _fails_cleanly(["predict", "--session", "station-7", "--model", model], "'station-7'", "not a session id")


def test_export_sigmf_of_a_missing_session(trained: Trained, tmp_path: Path, monkeypatch) -> None:
    _env(monkeypatch, trained.data_dir)
    out = tmp_path / "sigmf"
    _fails_cleanly(["export", "sigmf", UNKNOWN_SESSION, str(out)], UNKNOWN_SESSION)
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "export"])
def test_output_dir_that_is_a_file(embedded_env: Path, tmp_path: Path, command: str) -> None:
    existing = tmp_path / "not-a-folder"
    existing.write_text("keep me\n")
    args = {
        "train": ["train", "--no-tracking", "--output-dir", str(existing)],
        "evaluate": ["evaluate", "--model", str(tmp_path), "--output-dir", str(existing)],
        "export": ["export", "sigmf", UNKNOWN_SESSION, str(existing)],
    }[command]
    _fails_cleanly(args, str(existing), "not a directory")
    assert existing.read_text() == "keep me\n"
    assert not embedded_env.exists()  # refused before the database or the store was opened


def test_output_dir_below_a_file(embedded_env: Path, tmp_path: Path) -> None:
    existing = tmp_path / "file"
    existing.write_text("x")
    _fails_cleanly(
        ["train", "--no-tracking", "--output-dir", str(existing / "models")], str(existing), "is a file"
    )


# --------------------------------------------------------------------------------------------------------
# train: flags, configuration files, checkpoints
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--devices", "abc"], ["devices", "'abc'"]),
        (["--devices", "0"], ["devices", "'0'"]),
        (["--devices", "-1"], ["devices '-1'", "accelerator is cpu"]),
        (["--devices", "0,0"], ["devices '0,0'"]),
        (["--epochs", "-1"], ["epochs", "greater than or equal to 1"]),
        (["--epochs", str(10**9)], ["epochs", "less than or equal to 100000"]),
        (["--batch-size", str(10**12)], ["batch_size", "less than or equal to 65536"]),
        (["--batch-size", "0"], ["batch_size"]),
        (["--max-sessions", str(10**20)], ["max_sessions"]),
        (["--num-nodes", str(10**6)], ["num_nodes"]),
        (["--seed", str(2**64)], ["seed"]),
    ],
)
def test_train_bad_flag(embedded_env: Path, tmp_path: Path, flags: list[str], names: list[str]) -> None:
    out = tmp_path / "models"
    _fails_cleanly(["train", "--no-tracking", "--output-dir", str(out), *flags], *names)
    assert not out.exists() and not embedded_env.exists()


CONFIGS: dict[str, tuple[str | bytes | None, list[str]]] = {
    # name: (file content, None = a directory; what the error must name besides the path)
    "a-directory": (None, ["is a directory"]),
    "invalid-yaml": ("epochs: [1\n", ["not valid YAML", "line 2"]),
    "not-a-mapping": ("- epochs\n", ["must hold a mapping"]),
    "binary": (b"\xff\xfe\x00binary", ["not a text"]),
    "absurd-n_fft": ("features:\n  n_fft: 1000000000\n", ["features.n_fft", "65536"]),
    "odd-n_fft": ("features:\n  n_fft: 257\n", ["n_fft must be an even integer"]),
    "absurd-spectrogram": ("features:\n  hop_length: 1\n  n_mels: 512\n", ["n_mels=512", "hop_length=1"]),
    "absurd-n_mels": ("features:\n  n_mels: 100000\n", ["features.n_mels"]),
    "absurd-workers": ("num_workers: 100000\n", ["num_workers"]),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_train_bad_config_file(embedded_env: Path, tmp_path: Path, case: str) -> None:
    content, names = CONFIGS[case]
    cfg = tmp_path / "run.yaml"
    if content is None:
        cfg.mkdir()
    elif isinstance(content, bytes):
        cfg.write_bytes(content)
    else:
        cfg.write_text(content)
    out = tmp_path / "models"
    _fails_cleanly(
        ["train", "--no-tracking", "--config", str(cfg), "--output-dir", str(out)], str(cfg), *names
    )
    assert not out.exists() and not embedded_env.exists()


def test_train_missing_config_file(embedded_env: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "nope.yaml"
    _fails_cleanly(["train", "--no-tracking", "--config", str(cfg)], str(cfg), "does not exist")


class NotWeights:
    """A custom class: pickled into a checkpoint it would run code when unpickled."""


CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "pickled-object": lambda p: torch.save({"state_dict": {}, "evil": NotWeights()}, p),
    "truncated": lambda p: p.write_bytes(b"PK\x03\x04" + os.urandom(2000)),
    "empty": lambda p: p.write_bytes(b""),
    "not-lightning": lambda p: torch.save({"weights": torch.zeros(3)}, p),
}
CHECKPOINT_NAMES = {
    "pickled-object": "pickled Python objects",
    "truncated": "truncated or not a PyTorch checkpoint",
    "empty": "truncated or not a PyTorch checkpoint",
    "not-lightning": "no state_dict",
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_resume_from_a_bad_checkpoint(embedded_env: Path, tmp_path: Path, case: str) -> None:
    out = tmp_path / "models"
    (out / "checkpoints").mkdir(parents=True)
    ckpt = out / "checkpoints" / "last.ckpt"
    CHECKPOINTS[case](ckpt)
    before = _listing(out)
    _fails_cleanly(
        ["train", "--no-tracking", "--resume", "--output-dir", str(out)], str(ckpt), CHECKPOINT_NAMES[case]
    )
    assert _listing(out) == before  # the checkpoint is kept, nothing is added


def test_resume_from_a_checkpoint_of_another_network(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, trained.data_dir)
    good = torch.load(trained.model_dir / "checkpoints" / "last.ckpt", weights_only=True)
    good["state_dict"] = {k: v[:1] if v.dim() else v for k, v in good["state_dict"].items()}
    out = tmp_path / "models"
    (out / "checkpoints").mkdir(parents=True)
    torch.save(good, out / "checkpoints" / "last.ckpt")
    before = _listing(out)
    _fails_cleanly(
        ["train", "--no-tracking", "--no-progress", "--resume", "--output-dir", str(out)],
        "does not fit this run's network",
    )
    assert _listing(out) == before


# --------------------------------------------------------------------------------------------------------
# simulate: every size bounded
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--duration", "1e9"], ["duration_s=1e+09", "637 TiB", "64 MiB per receiver"]),
        (["--duration", "inf"], ["duration_s"]),
        (["--sessions", str(10**12)], ["n_sessions=1000000000000", "1,000,000"]),
        (["--start", str(10**12)], ["largest session index"]),
    ],
)
def test_simulate_absurd_sizes(embedded_env: Path, flags: list[str], names: list[str]) -> None:
    _fails_cleanly(["simulate", "--no-progress", *flags], *names)
    assert not embedded_env.exists()


SCENARIO_EDITS: dict[str, tuple[tuple[str, str, str], list[str]]] = {
    # name: ((line prefix in the shipped scenario, old text, new text), what the error names)
    "station-id-out-of-range": (
        ("  - {id: 7,", "id: 7,", "id: 99999999999,"),
        ["receivers.6.id", "2147483647"],
    ),
    "absurd-sample-rate": (("sample_rate_hz:", "12500.0", "1.0e12"), ["sample_rate_hz", "64 MiB"]),
    "absurd-duration": (("default_duration_s:", "0.5", "1.0e9"), ["default_duration_s", "MiB"]),
    "absurd-grid": (("  grid_spacing_m:", "250.0", "0.5"), ["grid_spacing_m", "4 GiB"]),
    "absurd-area": (("area_margin_m:", "20000.0", "1.0e9"), ["area_margin_m", "4 GiB"]),
    "malformed-yaml": (("bands:", "bands:", "bands: [unclosed"), ["malformed YAML", "line"]),
}


@pytest.mark.parametrize("case", sorted(SCENARIO_EDITS))
def test_simulate_absurd_scenario(embedded_env: Path, tmp_path: Path, case: str) -> None:
    (prefix, old, new), names = SCENARIO_EDITS[case]
    lines = SHIPPED.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1 and old in lines[hits[0]], prefix
    lines[hits[0]] = lines[hits[0]].replace(old, new, 1)
    lines = [f"name: {case}" if line.startswith("name:") else line for line in lines]
    scenario = tmp_path / f"{case}.yaml"
    scenario.write_text("\n".join(lines) + "\n")
    _fails_cleanly(["simulate", "--scenario", str(scenario), "--no-progress"], str(scenario), *names)
    assert not embedded_env.exists()


def test_shipped_scenarios_fit_the_bounds() -> None:
    from heimdall.simulate.scenario import MAX_WORLD_BYTES, load_scenario

    for name in available_scenarios():
        assert load_scenario(name).world_bytes() < MAX_WORLD_BYTES / 10


# --------------------------------------------------------------------------------------------------------
# Permissions of what a run writes atomically
# --------------------------------------------------------------------------------------------------------


def test_training_outputs_have_ordinary_permissions(trained: Trained) -> None:
    expected = 0o666 & ~trained.umask
    for name in ("model.onnx", "report.json", "report.md", "config.yaml", "split.json"):
        mode = (trained.model_dir / name).stat().st_mode & 0o777
        assert mode == expected, f"{name}: {oct(mode)} != {oct(expected)}"
    assert not [p for p in trained.model_dir.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------------------
# The real process: stderr, exit status
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["truncated-model", "absurd-duration"])
def test_real_process_prints_one_line(embedded_env: Path, tmp_path: Path, case: str) -> None:
    if case == "truncated-model":
        bad = tmp_path / "model.onnx"
        bad.write_bytes(b"\x08\x07\x12\x04trun")
        args = ["predict", "--session", UNKNOWN_SESSION, "--model", str(bad)]
        name = str(bad)
    else:
        args = ["simulate", "--duration", "1e9", "--no-progress"]
        name = "64 MiB per receiver"
    env = {**os.environ, "HEIMDALL_DATA_DIR": str(embedded_env), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from heimdall.cli import app; app()", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], done.stderr[-3000:]
