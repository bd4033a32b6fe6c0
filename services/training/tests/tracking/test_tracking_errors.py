"""MLflow failures reach the user as one-line Heimdall errors: the user's mistake, bad data, or an outage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from heimdall.errors import DataError, UserError
from heimdall.tracking import registry
from heimdall.tracking.connection import TrackingError
from heimdall.tracking.replay import RunNotFoundError, fetch_run_spec
from heimdall.tracking.run import log_onnx_model

SECRET_CAUSE = "upstream http://ci:s3cret@mlflow:5000/api failed\n  and a second line"
TARGET = SimpleNamespace(display="http://mlflow:5000", uri="http://mlflow:5000")


class Missing(Exception):
    error_code = "RESOURCE_DOES_NOT_EXIST"


class Failing:
    """A client whose every call raises ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name: str):
        def call(*_a, **_k):
            raise self.exc

        return call


def _one_redacted_line(err: Exception) -> None:
    text = str(err)
    assert "\n" not in text and "s3cret" not in text and "ci:***@" in text, text


def test_unknown_run_is_a_user_error_and_an_outage_is_not(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match=r"no MLflow run '0+'") as err:
        fetch_run_spec(TARGET, Failing(Missing("Run '000' not found")), "0" * 32, tmp_path)
    assert isinstance(err.value, UserError) and not isinstance(err.value, TrackingError)
    with pytest.raises(TrackingError, match="cannot look up MLflow run") as err:
        fetch_run_spec(TARGET, Failing(ConnectionError(SECRET_CAUSE)), "abc", tmp_path)
    _one_redacted_line(err.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe not json", "not readable JSON"),
        (b"{not json", "not readable JSON"),
        (b"[1]", "is not {split"),
    ],
)
def test_bad_split_json_of_a_run_is_a_data_error(
    tmp_path: Path, monkeypatch, content: bytes, match: str
) -> None:
    import heimdall.tracking.replay as replay

    def download(target, client, run_id: str, name: str, dst: Path) -> Path:  # type: ignore[no-untyped-def]
        dst.mkdir(parents=True, exist_ok=True)
        (dst / name).write_bytes(content if name == "split.json" else b"epochs: 1\n")
        return dst / name

    monkeypatch.setattr(replay, "download_run_artifact", download)
    client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace())
    with pytest.raises(DataError, match=match) as err:
        fetch_run_spec(TARGET, client, "r1", tmp_path / "dst")
    assert "r1" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "call",
    [
        registry.champion,
        registry.list_versions,
        lambda c: registry.register(c, "models:/m-1", "r1", {"test": {}, "data_snapshot": {}}),
    ],
    ids=["champion", "list_versions", "register"],
)
def test_registry_failures_are_tracking_errors(call) -> None:
    with pytest.raises(TrackingError, match="MLflow model registry: cannot") as err:
        call(Failing(RuntimeError(SECRET_CAUSE)))
    _one_redacted_line(err.value)
    assert "RuntimeError" in str(err.value)


def test_registry_still_reads_missing_as_empty() -> None:
    assert registry.champion(Failing(Missing("not found"))) is None
    assert registry.list_versions(Failing(Missing("not found"))) == []


def test_failed_model_upload_is_a_tracking_error_and_marks_the_model_failed(tmp_path: Path) -> None:
    finalized = []

    class Client:
        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(params={}, metrics={}))

        def create_logged_model(self, *_a, **_k):
            return SimpleNamespace(model_id="m-1", artifact_location=str(tmp_path))

        def log_outputs(self, *_a, **_k):
            raise RuntimeError(SECRET_CAUSE)

        def finalize_logged_model(self, model_id, status):
            finalized.append((model_id, str(status)))

    with pytest.raises(TrackingError, match="cannot log the ONNX model to MLflow run r1") as err:
        log_onnx_model(Client(), "r1", "0", tmp_path / "model.onnx")
    _one_redacted_line(err.value)
    assert finalized and finalized[0][0] == "m-1" and "FAILED" in finalized[0][1]
