"""Tracking and registry rules without training: URI handling, fail-fast preflight, champion decisions."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from tracking_support import free_port, invoke

import heimdall
from heimdall.settings import Settings
from heimdall.tracking.connection import TrackingError, TrackingTarget, preflight
from heimdall.tracking.registry import (
    CHAMPION,
    MODEL_NAME,
    TAG_TEST_IDS,
    TAG_TEST_RMSE,
    RegistryError,
    VersionInfo,
    decide,
    promote,
    update_champion,
    version_info,
)
from heimdall.tracking.run import flatten_params


def test_targets_resolve_and_hide_passwords(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "hd", mlflow_tracking_uri="", mlflow_artifact_root="")
    t = TrackingTarget.from_settings(s)
    assert t.uri == f"sqlite:///{(tmp_path / 'hd' / 'mlflow.db').as_posix()}" and t.kind == "sqlite"
    assert t.artifact_root == (tmp_path / "hd" / "mlartifacts").resolve().as_uri()
    pg = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri="postgresql://u:hunter2@db:5432/mlflow",
        mlflow_artifact_root="s3://mlflow/artifacts",
    )
    t = TrackingTarget.from_settings(pg)
    # MLflow's own engine gets the fail-fast connect timeout (whole seconds, >= 2)
    assert t.uri == "postgresql+psycopg://u:hunter2@db:5432/mlflow?connect_timeout=3"
    assert t.kind == "postgresql"
    assert "hunter2" not in t.display and "db:5432" in t.display
    assert t.artifact_root == "s3://mlflow/artifacts"
    http = TrackingTarget.from_settings(
        Settings(mlflow_tracking_uri="http://mlflow:5000", mlflow_artifact_root="")
    )
    assert http.kind == "http" and http.artifact_root is None  # the server decides


def test_target_comes_from_settings_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read by Settings (pydantic-settings), never by TrackingTarget itself."""
    monkeypatch.setenv("HEIMDALL_MLFLOW_EXPERIMENT", "from-env")
    monkeypatch.setenv("HEIMDALL_MLFLOW_ARTIFACT_ROOT", "s3://env-bucket/art")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://mlflow-s3:9000")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-endpoint:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-south-1")
    from_env = TrackingTarget.from_settings(Settings(data_dir=tmp_path))
    assert from_env.experiment == "from-env" and from_env.artifact_root == "s3://env-bucket/art"
    assert from_env.s3_endpoint_url == "http://mlflow-s3:9000"  # MLflow's own endpoint wins
    assert from_env.s3_region == "eu-south-1"
    explicit = TrackingTarget.from_settings(
        Settings(
            data_dir=tmp_path,
            mlflow_experiment="explicit",
            mlflow_artifact_root=str(tmp_path / "art"),
            mlflow_s3_endpoint_url="",
            s3_endpoint_url="http://explicit:9000",
            aws_region="us-west-2",
        )
    )
    assert explicit.experiment == "explicit" and explicit.artifact_root == (tmp_path / "art").as_uri()
    assert explicit.s3_endpoint_url == "http://explicit:9000" and explicit.s3_region == "us-west-2"
    monkeypatch.setenv("HEIMDALL_MLFLOW_EXPERIMENT", "")
    assert TrackingTarget.from_settings(Settings()).experiment == "heimdall"


def test_flatten_params() -> None:
    flat = flatten_params({"a": 1, "b": {"c": [1, 2], "d": None, "e": {"f": True}}})
    assert flat == {"a": "1", "b.c": "[1, 2]", "b.d": "null", "b.e.f": "True"}


@pytest.mark.parametrize("kind", ["closed-http", "silent-http", "closed-postgres"])
def test_unreachable_tracking_fails_fast_before_training(
    kind: str, silent_tcp_server: int, embedded: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = silent_tcp_server if kind == "silent-http" else free_port()
    uri = {
        "closed-http": f"http://alice:s3cr3tpw@127.0.0.1:{port}",
        "silent-http": f"http://alice:s3cr3tpw@127.0.0.1:{port}",
        "closed-postgres": f"postgresql://alice:s3cr3tpw@127.0.0.1:{port}/mlflow",
    }[kind]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HEIMDALL_CONNECT_TIMEOUT_S", "1")

    def no_training(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("data was opened or training started before the tracking preflight")

    monkeypatch.setattr("heimdall.jobs.train.open_services", no_training)
    monkeypatch.setattr("heimdall.jobs.train.run_training", no_training)
    t0 = time.monotonic()
    r = invoke(["train", "--epochs", "1", "--output-dir", str(tmp_path / "m"), "--no-progress"])
    elapsed = time.monotonic() - t0
    assert r.exit_code == 2, r.output
    assert f"127.0.0.1:{port}" in r.output and "s3cr3tpw" not in r.output
    assert "unreachable" in r.output and "--no-tracking" in r.output
    assert elapsed < 15, elapsed
    assert not (tmp_path / "m").exists()


def test_preflight_names_an_unreachable_s3_artifact_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    s = Settings(
        data_dir=tmp_path,
        s3_endpoint_url=f"http://127.0.0.1:{port}",
        mlflow_s3_endpoint_url=None,
        mlflow_artifact_root="s3://mlflow/art",
        connect_timeout_s=1,
    )
    t = TrackingTarget.from_settings(s)
    with pytest.raises(TrackingError, match=r"s3://mlflow/art.*unreachable"):
        preflight(t)


def _top_level_imports(tree: ast.Module) -> set[str]:
    """Modules a file imports when it is imported (module level, outside `if TYPE_CHECKING:`)."""
    found: set[str] = set()
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            nodes.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            nodes.extend(node.body)
    return found


def test_mlflow_is_imported_lazily() -> None:
    """`heimdall --help` and commands that never track must not pay for importing mlflow."""
    package = Path(heimdall.__file__).resolve().parent
    eager = [
        str(f.relative_to(package))
        for f in sorted(package.rglob("*.py"))
        if any(m == "mlflow" or m.startswith("mlflow.") for m in _top_level_imports(ast.parse(f.read_text())))
    ]
    assert eager == []


def test_tracking_never_imports_the_layers_above_it() -> None:
    """No cycle with predict, no CLI, no evaluation job: not at import time, not lazily either."""
    package = Path(heimdall.__file__).resolve().parent / "tracking"
    above = ("heimdall.jobs", "heimdall.cli", "heimdall.evaluate.job")
    found: dict[str, list[str]] = {}
    for f in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n in above or n.startswith(tuple(f"{m}." for m in above))]
            if bad:
                found.setdefault(f.name, []).extend(bad)
    assert found == {}


# --------------------------------------------------------------------------------------------------------
# The champion rule
# --------------------------------------------------------------------------------------------------------


def _v(version: str, rmse: float | None, ids: str | None = "abc") -> VersionInfo:
    return VersionInfo(version=version, run_id=f"run{version}", test_rmse_m=rmse, test_ids_sha256_16=ids)


def test_decide_rules() -> None:
    assert decide(_v("1", 100.0), None) == (True, "version 1 is the first champion")
    moved, why = decide(_v("2", 90.0), _v("1", 100.0))
    assert moved and "beats" in why
    moved, why = decide(_v("2", 100.0), _v("1", 100.0))
    assert not moved and "does not beat" in why
    moved, why = decide(_v("2", 110.0), _v("1", 100.0))
    assert not moved and "does not beat" in why
    moved, why = decide(_v("2", 10.0, ids="xyz"), _v("1", 100.0))
    assert not moved and "different test split" in why and "--promote" in why
    moved, why = decide(_v("2", 500.0, ids="xyz"), _v("1", 100.0), promote=True)
    assert moved and "on request" in why
    moved, why = decide(_v("2", None), _v("1", 100.0))
    assert not moved and "missing" in why


@pytest.fixture
def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A sqlite-backed registry with hand-made versions (no training needed)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL_NAME)

    def add(rmse: float, ids: str = "abc") -> VersionInfo:
        mv = client.create_model_version(
            MODEL_NAME,
            source="s3://nowhere/model",
            tags={TAG_TEST_RMSE: repr(rmse), TAG_TEST_IDS: ids},
        )
        return version_info(client, client.get_model_version(MODEL_NAME, mv.version))

    return client, add


def _champion(client) -> str:  # type: ignore[no-untyped-def]
    return str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)


def test_alias_moves_only_when_better_and_promote_checks_the_version(registry) -> None:  # type: ignore[no-untyped-def]
    client, add = registry
    assert update_champion(client, add(100.0)).moved and _champion(client) == "1"
    worse = update_champion(client, add(120.0))
    assert not worse.moved and worse.previous == "1" and _champion(client) == "1"
    other_split = update_champion(client, add(50.0, ids="other"))
    assert not other_split.moved and "different test split" in other_split.reason and _champion(client) == "1"
    better = update_champion(client, add(80.0))
    assert better.moved and better.previous == "1" and _champion(client) == "4"
    forced = update_champion(client, add(500.0), promote=True)
    assert forced.moved and _champion(client) == "5"
    # `heimdall models promote`: an unknown version is a clear error and leaves the alias alone
    with pytest.raises(RegistryError, match=r"no version '7'.*1, 2, 3, 4, 5"):
        promote(client, "7")
    assert _champion(client) == "5"
    assert promote(client, "2").moved and _champion(client) == "2"
    assert not promote(client, "2").moved
