"""How the CLI maps exceptions: a HeimdallError is one line and its exit status; anything else is a bug.

The CLI catches only :class:`heimdall.errors.HeimdallError` (and leaves click's usage errors to click):
a plain ``ValueError`` or ``KeyError`` from deep inside a command is not dressed up as a user error, it
propagates with its traceback (exit status 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import heimdall.jobs.simulate as simulate_job
from heimdall.cli import app
from heimdall.errors import DataError, HeimdallError, ServiceUnavailableError, UserError
from heimdall.simulate.scenario import ScenarioError
from heimdall.storage.database import DatabaseError

runner = CliRunner()
SIMULATE = ["simulate", "--sessions", "1", "--duration", "0.1", "--no-progress"]


class PretendError(UserError):
    """A HeimdallError subclass the CLI has never heard of."""


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _raising(exc: BaseException):  # type: ignore[no-untyped-def]
    def fail(*_args: object, **_kwargs: object) -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    "exc",
    [
        PretendError("--thing 'x' is not a thing"),
        DataError("session 1234: IQ is corrupt\n(second line of detail)"),
        ScenarioError("mine.yaml: invalid scenario: bands: field required"),
    ],
    ids=["user-subclass", "data-two-lines", "scenario"],
)
def test_heimdall_error_is_one_line_and_exit_2(
    embedded_env: Path, monkeypatch: pytest.MonkeyPatch, exc: HeimdallError
) -> None:
    monkeypatch.setattr(simulate_job, "simulate_sessions", _raising(exc))
    r = runner.invoke(app, SIMULATE)
    assert r.exit_code == 2 == type(exc).exit_code, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    errors = _error_lines(r.output)
    assert len(errors) == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert errors[0].startswith(f"error: {type(exc).__name__}: ")
    assert " ".join(str(exc).split()) in errors[0]
    assert not (embedded_env / "objects").exists()  # refused before the store was opened


def test_real_user_error_from_a_command(embedded_env: Path) -> None:
    r = runner.invoke(app, ["simulate", "--scenario", "atlantis", "--no-progress"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    assert len(_error_lines(r.output)) == 1, r.output
    assert "ScenarioError" in r.output and "atlantis" in r.output and "Traceback" not in r.output


def test_service_unavailable_masks_the_password(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a message that (wrongly) carries a password: the CLI masks it all the same
    exc = ServiceUnavailableError("cannot reach postgresql://heimdall:hunter2@db.example:5432/heimdall")
    monkeypatch.setattr(simulate_job, "open_services", _raising(exc))
    r = runner.invoke(app, SIMULATE)
    assert r.exit_code == ServiceUnavailableError.exit_code, r.output
    assert "hunter2" not in r.output and "heimdall:***@db.example:5432" in r.output
    assert len(_error_lines(r.output)) == 1 and "Traceback" not in r.output


def test_unreachable_database_is_a_service_error(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", "postgresql://heimdall:topsecret@127.0.0.1:1/h")
    monkeypatch.setenv("HEIMDALL_CONNECT_TIMEOUT_S", "1")
    r = runner.invoke(app, SIMULATE)
    assert r.exit_code == DatabaseError.exit_code, r.output
    (line,) = _error_lines(r.output)
    assert line.startswith("error: DatabaseError: ") and "127.0.0.1:1" in line
    assert "topsecret" not in r.output and "Traceback" not in r.output
    assert issubclass(DatabaseError, ServiceUnavailableError)


def test_invalid_environment_names_the_variable(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIMDALL_CONNECT_TIMEOUT_S", "soon")
    r = runner.invoke(app, SIMULATE)
    assert r.exit_code == 2, r.output
    (line,) = _error_lines(r.output)
    assert "HEIMDALL_CONNECT_TIMEOUT_S" in line and "Traceback" not in r.output


@pytest.mark.parametrize("exc", [ValueError("an internal invariant broke"), KeyError("station_ids")])
def test_other_exceptions_are_bugs_and_propagate(
    embedded_env: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    monkeypatch.setattr(simulate_job, "simulate_sessions", _raising(exc))
    r = runner.invoke(app, SIMULATE)
    assert r.exit_code == 1, r.output
    assert r.exception is exc  # not swallowed, not re-wrapped
    assert not _error_lines(r.output)


def test_usage_errors_stay_clicks(embedded_env: Path) -> None:
    r = runner.invoke(app, ["simulate", "--sessions", "many"])
    assert r.exit_code == 2 and "Usage" in r.output and "--sessions" in r.output


def test_help_documents_the_exit_status() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "Exit status" in r.output


def test_a_bug_shows_its_traceback_in_a_real_process(embedded_env: Path) -> None:
    code = (
        "import heimdall.jobs.simulate as d\n"
        "def boom(*a, **k):\n"
        "    raise ValueError('an internal invariant broke')\n"
        "d.simulate_sessions = boom\n"
        "from heimdall.cli import app\n"
        "app()\n"
    )
    env = {**os.environ, "HEIMDALL_DATA_DIR": str(embedded_env), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *SIMULATE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" in done.stderr and "ValueError: an internal invariant broke" in done.stderr
    assert not _error_lines(done.stderr)
