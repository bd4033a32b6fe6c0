"""The `heimdall` CLI and the seed's entry point, run as a user would."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.services import open_services
from heimdall.storage.schema import Base, Measurement, RecordingSession

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


# What each help page must list (the documented command line), written out rather than read from the app.
HELP = {
    (): (
        "simulate",
        "train",
        "evaluate",
        "predict",
        "locate",
        "db",
        "import",
        "export",
        "stations",
        "sessions",
        "models",
    ),
    ("simulate",): ("--scenario", "--sessions", "--seed", "--duration", "--start", "--dataset"),
    ("train",): ("--epochs", "--seed", "--config", "--dataset", "--resume", "--no-tracking"),
    ("db",): ("upgrade",),
    ("db", "upgrade"): ("--help",),
    ("import",): ("sigmf", "powder"),
    ("export",): ("sigmf",),
    ("locate",): ("--model", "--exclude", "--format"),
}


@pytest.mark.parametrize("args", sorted(HELP), ids=lambda a: " ".join(a) or "heimdall")
def test_help_everywhere(args: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert re.search(rf"Usage: heimdall {' '.join(args)}\s*\[OPTIONS\]", result.output), result.output
    missing = [n for n in HELP[args] if not re.search(rf"(^|\s){re.escape(n)}[\s,]", result.output, re.M)]
    assert missing == [], (missing, result.output)


def test_simulate_and_rerun_is_idempotent(embedded_env: Path) -> None:
    r = runner.invoke(
        app, ["simulate", "--sessions", "5", "--seed", "2", "--duration", "0.1", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert "5 written" in r.output
    r = runner.invoke(
        app, ["simulate", "--sessions", "5", "--seed", "2", "--duration", "0.1", "--no-progress"]
    )
    assert "0 written, 5 already present" in r.output
    # extending the run simulates only the new sessions; the --dataset label applies to them
    r = runner.invoke(
        app,
        [
            "simulate",
            "--sessions",
            "7",
            "--seed",
            "2",
            "--duration",
            "0.1",
            "--dataset",
            "held-out",
            "--no-progress",
        ],
    )
    assert "2 written, 5 already present" in r.output, r.output
    services = open_services()
    with services.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(RecordingSession)) == 7
        assert s.scalar(select(func.count()).select_from(Measurement)) == 49
        held = (
            select(func.count()).select_from(RecordingSession).where(RecordingSession.dataset == "held-out")
        )
        assert s.scalar(held) == 2
    assert len(services.store.list_keys("heimdall-raw-iq", "sessions/")) == 49
    services.close()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["simulate", "--sessions", "-1"], "--sessions must be ≥ 0"),
        (["simulate", "--scenario", "atlantis"], "nw-italy-v1"),
        (["simulate", "--duration", "0.001"], "samples"),
        (["simulate", "--duration", "-1"], "duration"),
        (["simulate", "--dataset", " "], "--dataset must be a non-empty label"),
    ],
)
def test_simulate_bad_input_writes_nothing(embedded_env: Path, args: list[str], match: str) -> None:
    r = runner.invoke(app, [*args, "--no-progress"])
    assert r.exit_code == 2
    (line,) = r.output.strip().splitlines()  # one line, the error naming the bad value
    assert line.startswith("error: ") and match in line
    assert not embedded_env.exists()  # refused before the database or the store was created


def test_malformed_scenario_file(embedded_env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nreceivers: 3\n")
    r = runner.invoke(app, ["simulate", "--scenario", str(bad), "--no-progress"])
    assert r.exit_code == 2 and str(bad) in r.output and "receivers" in r.output, r.output
    assert not embedded_env.exists()


def test_unreachable_database_is_named_without_password(embedded_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", "postgresql://heimdall:topsecret@127.0.0.1:1/h")
    r = runner.invoke(app, ["simulate", "--sessions", "1", "--no-progress"])
    assert r.exit_code == 2
    assert "127.0.0.1:1" in r.output and "topsecret" not in r.output


MIGRATIONS = SRC / "heimdall" / "storage" / "migrations" / "versions"


def _head_revision() -> str:
    """The one revision no migration file names as its down_revision, read from the files themselves."""
    revisions, parents = set(), set()
    for f in MIGRATIONS.glob("*.py"):
        text = f.read_text(encoding="utf-8")
        revisions.update(re.findall(r'^revision\s*(?::[^=]*)?=\s*"([^"]+)"', text, re.M))
        parents.update(re.findall(r'^down_revision\s*(?::[^=]*)?=\s*"([^"]+)"', text, re.M))
    (head,) = revisions - parents
    return head


def test_db_upgrade(embedded_env: Path) -> None:
    r = runner.invoke(app, ["db", "upgrade"])
    assert r.exit_code == 0 and "latest schema revision" in r.output
    db = embedded_env / "heimdall.db"
    assert f"sqlite:///{db}" in r.output
    with closing(sqlite3.connect(db)) as conn:  # read with sqlite3 itself, not through heimdall
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head_revision(),)]
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(Base.metadata.tables) <= tables
        stations = conn.execute("SELECT id, name FROM websdr_stations ORDER BY id").fetchall()
    assert [i for i, _ in stations] == list(range(1, 8)) and (3, "Torino") in stations
    again = runner.invoke(app, ["db", "upgrade"])
    assert again.exit_code == 0 and "latest schema revision" in again.output
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM websdr_stations").fetchone() == (7,)  # seeded once


def test_invalid_train_config_value(embedded_env: Path) -> None:
    r = runner.invoke(app, ["train", "--epochs", "0"])
    assert r.exit_code == 2 and "epochs" in r.output


def test_train_on_empty_database_is_clear(embedded_env: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "--epochs", "1", "--output-dir", str(tmp_path / "m")])
    assert r.exit_code == 2 and "no approved sessions" in r.output
    assert not (tmp_path / "m" / "model.onnx").exists()


@pytest.mark.slow
def test_seed_entry_point_verbatim(embedded_env: Path, tmp_path: Path) -> None:
    """`python services/training/src/train_model.py --epochs … --batch_size … --learning_rate …` after
    simulate: the seed's underscored flags reach the run (values other than the defaults, so it shows)."""
    r = runner.invoke(
        app, ["simulate", "--sessions", "12", "--seed", "4", "--duration", "0.1", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    env = {**os.environ, "HEIMDALL_DATA_DIR": str(embedded_env)}
    cmd = [
        sys.executable,
        str(SRC / "train_model.py"),
        "--epochs",
        "2",
        "--batch_size",
        "8",
        "--learning_rate",
        "5e-4",
        "--output-dir",
        str(tmp_path / "models"),
        "--no-progress",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "models" / "model.onnx").is_file()
    assert f"report: {tmp_path / 'models' / 'report.md'}" in done.stdout
    report = json.loads((tmp_path / "models" / "report.json").read_text())
    cfg = report["config"]
    assert (cfg["epochs"], cfg["batch_size"], cfg["learning_rate"]) == (2, 8, 5e-4)
    assert report["epochs_run"] == len(report["history"]) == 2
