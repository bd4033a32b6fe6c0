"""``--init-from``: a fine-tuning run starts from an earlier run's weights and normalisation, and refuses a
source trained for another network (one line, before any training). Real runs on the simulated set."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.data.normalization import NormStats
from heimdall.settings import Settings
from heimdall.training.config import load_config
from heimdall.training.init_from import InitFromError, load_init_source
from heimdall.training.runner import run_training

TRACKING_ENV = ("HEIMDALL_DATABASE_URL", "HEIMDALL_OBJECT_STORE", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL")


@dataclass
class Source:
    out: Path
    weights: dict[str, torch.Tensor]  # the network weights of the checkpoint the run shipped
    stats: dict[str, list[float]]  # its normalization.json


def _shipped_weights(out: Path) -> dict[str, torch.Tensor]:
    name = json.loads((out / "report.json").read_text())["best_checkpoint"]
    state = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


@pytest.fixture(scope="module")
def source(sim_services, tmp_path_factory) -> Source:
    out = tmp_path_factory.mktemp("source") / "src"
    cfg = load_config(None, {"epochs": 2, "batch_size": 16, "output_dir": out, "seed": 3})
    run_training(cfg, sim_services, progress=False)
    return Source(out, _shipped_weights(out), json.loads((out / "normalization.json").read_text()))


class FirstWeights(pl.Callback):
    """The network's weights and the data module's statistics when training starts (before any step)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        dm = trainer.datamodule
        train = dm.arrays.indices("train")
        self.stats = dm.stats.to_dict()
        self.own_stats = NormStats.fit(
            dm.arrays.spectrogram[train], dm.arrays.scalars[train], dm.arrays.mask[train]
        ).to_dict()


def _fine_tune(sim_services, out: Path, init_from: str, **extra) -> FirstWeights:
    seen = FirstWeights()
    cfg = load_config(
        None,
        {"epochs": 1, "batch_size": 4, "output_dir": out, "seed": 4, "init_from": init_from, **extra},
    )
    run_training(cfg, sim_services, progress=False, callbacks=[seen])
    return seen


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tuning_starts_from_the_source_weights_and_statistics(sim_services, source, tmp_path) -> None:
    """Few-shot (5 training sessions): epoch 0 is exactly the source model, inputs standardised with the
    source's statistics (not the 5 sessions' own), and the run then trains away from it."""
    out = tmp_path / "ft"
    seen = _fine_tune(sim_services, out, str(source.out), max_train_sessions=5)
    assert _same(seen.weights, source.weights)
    assert seen.stats == source.stats != seen.own_stats  # the tiny set's own statistics differ
    assert json.loads((out / "normalization.json").read_text()) == source.stats  # shipped with the model
    assert yaml.safe_load((out / "config.yaml").read_text())["init_from"] == str(source.out)
    report = json.loads((out / "report.json").read_text())
    assert report["n_train"] == 5 and report["config"]["init_from"] == str(source.out)
    assert not _same(_shipped_weights(out), source.weights)  # it did train


def test_a_fresh_run_does_not_start_from_the_source(sim_services, source, tmp_path) -> None:
    """The control of the test above: without --init-from, epoch 0 is a random initialisation."""
    seen = FirstWeights()
    cfg = load_config(None, {"epochs": 1, "batch_size": 16, "output_dir": tmp_path / "fresh", "seed": 3})
    run_training(cfg, sim_services, progress=False, callbacks=[seen])
    assert not _same(seen.weights, source.weights)


def _tampered(source: Source, tmp_path: Path, name: str, change) -> Path:  # type: ignore[no-untyped-def]
    copy = tmp_path / "tampered"
    shutil.copytree(source.out, copy)
    data = json.loads((copy / name).read_text())
    change(data)
    (copy / name).write_text(json.dumps(data))
    return copy


def _swap_first_two(d: dict) -> None:
    for key in ("station_ids", "names", "latitudes", "longitudes"):
        d[key][0], d[key][1] = d[key][1], d[key][0]


def _other_station(d: dict) -> None:
    d["station_ids"][-1] = 99_999


def _moved_receiver(d: dict) -> None:
    d["latitudes"][0] += 0.01  # about 1.1 km north


def _more_scalars(d: dict) -> None:
    d["scalar_mean"] += [0.0, 0.0]
    d["scalar_std"] += [1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("network.json", _swap_first_two, "the same stations in another order"),
        (
            "network.json",
            _other_station,
            r"other receivers \(only in the source: stations \[99999\]; "
            r"only in this data: stations \[\d+\]\)",
        ),
        (
            "network.json",
            _moved_receiver,
            r"receiver .+ \(station \d+\) is 1\d\d\d m from where it was in the source run \(at most 10 m\)",
        ),
        ("normalization.json", _more_scalars, "6 per-receiver scalars there, 4 here"),
    ],
)
def test_another_network_is_refused_before_training(
    sim_services, source, tmp_path, name, change, message
) -> None:
    src = _tampered(source, tmp_path, name, change)
    out = tmp_path / "never"
    cfg = load_config(None, {"epochs": 1, "output_dir": out, "init_from": str(src)})
    with pytest.raises(
        InitFromError, match=f"^--init-from {src}: trained for another network: {message}"
    ) as e:
        run_training(cfg, sim_services, progress=False)
    assert "\n" not in str(e.value)
    assert not out.exists()  # refused before the run's folder (checkpoints, report) was made


def test_another_model_configuration_is_refused_before_any_data_is_read(source, tmp_path) -> None:
    """The configuration check needs no data: services that cannot be used prove nothing was read."""
    cfg = load_config(
        None, {"output_dir": tmp_path / "never", "init_from": str(source.out), "model": {"embed_dim": 32}}
    )
    with pytest.raises(InitFromError, match=r"model\.embed_dim 64 there, 32 here.*--config"):
        run_training(cfg, services=None, progress=False)  # type: ignore[arg-type]


def test_model_dropout_may_change_for_fine_tuning(sim_services, source, tmp_path) -> None:
    seen = _fine_tune(sim_services, tmp_path / "ft", str(source.out), model={"dropout": 0.2})
    assert _same(seen.weights, source.weights)


def _without(source: Source, tmp_path: Path, *names: str) -> Path:
    copy = tmp_path / "partial"
    shutil.copytree(source.out, copy)
    for name in names:
        target = copy / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return copy


def test_missing_or_broken_sources_are_one_line_errors(source, tmp_path) -> None:
    missing = tmp_path / "no-such-run"
    with pytest.raises(InitFromError, match=f"{missing} does not exist .*MLflow run id"):
        load_init_source(missing)
    with pytest.raises(InitFromError, match="is a file, not a run folder"):
        load_init_source(source.out / "model.onnx")
    with pytest.raises(InitFromError, match=r"has no normalization\.json: not a run folder"):
        load_init_source(_without(source, tmp_path / "a", "normalization.json"))
    with pytest.raises(InitFromError, match=r"holds no best\.ckpt or last\.ckpt"):
        load_init_source(_without(source, tmp_path / "b", "checkpoints"))
    broken = _without(source, tmp_path / "c")
    name = json.loads((broken / "report.json").read_text())["best_checkpoint"]
    (broken / "checkpoints" / name).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(Exception, match="truncated or not a PyTorch checkpoint"):
        load_init_source(broken)
    (broken / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(InitFromError, match=r"config\.yaml is not readable"):
        load_init_source(broken)


# --------------------------------------------------------------------------------------------------------
# The command line and MLflow references
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(sim_services, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for var in TRACKING_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(sim_services.settings.data_dir))
    return sim_services.settings


def test_cli_fine_tunes_and_refuses_with_exit_2(cli_env, source, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-ft"
    args = ["train", "--no-tracking", "--no-progress", "--epochs", "1", "--batch-size", "8"]
    ok = runner.invoke(app, [*args, "--init-from", str(source.out), "--output-dir", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads((out / "normalization.json").read_text()) == source.stats
    assert yaml.safe_load((out / "config.yaml").read_text())["init_from"] == str(source.out)
    missing = tmp_path / "gone"
    bad = runner.invoke(app, [*args, "--init-from", str(missing), "--output-dir", str(tmp_path / "x")])
    assert bad.exit_code == 2
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and f"{missing} does not exist" in lines[0], bad.output


@dataclass
class Tracked:
    run_id: str
    out: Path
    settings: Settings


@pytest.fixture(scope="module")
def tracked(sim_services, tmp_path_factory) -> Iterator[Tracked]:
    """One tracked run on the embedded MLflow store (registered as heimdall-localizer version 1)."""
    from heimdall.jobs.train import TrainRequest, train

    out = tmp_path_factory.mktemp("tracked") / "src"
    with pytest.MonkeyPatch.context() as mp:
        for var in TRACKING_ENV:
            mp.delenv(var, raising=False)
        settings = Settings(data_dir=sim_services.settings.data_dir)
        done = train(TrainRequest(epochs=1, batch_size=16, seed=3, output_dir=out, progress=False), settings)
        assert done.mlflow_run_id and done.registered is not None
        yield Tracked(done.mlflow_run_id, out, settings)


@pytest.mark.parametrize(
    "reference",
    [
        "{run}",
        "runs:/{run}",
        "models:/heimdall-localizer/1",
        "models:/heimdall-localizer@champion",
        "heimdall-localizer@champion",
    ],
)
def test_mlflow_references_fetch_the_run_folder(tracked, reference) -> None:
    from heimdall.jobs.train import init_source_folder

    ref = reference.format(run=tracked.run_id)
    with ExitStack() as stack:
        folder, run_id = init_source_folder(ref, tracked.settings, stack)
        assert folder is not None and run_id == tracked.run_id
        got = load_init_source(folder, ref)
        assert _same(got.weights, _shipped_weights(tracked.out))
        assert got.stats.to_dict() == json.loads((tracked.out / "normalization.json").read_text())
    assert not folder.exists()  # the download is temporary


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("0" * 32, "no MLflow run 0{32}"),
        ("models:/heimdall-localizer/7", "no MLflow registered model models:/heimdall-localizer/7"),
        ("nothing@champion", "no MLflow registered model models:/nothing@champion"),
    ],
)
def test_missing_mlflow_sources_are_user_errors(tracked, reference, message) -> None:
    from heimdall.jobs.train import init_source_folder

    with ExitStack() as stack, pytest.raises(InitFromError, match=f"^--init-from {reference}: {message}"):
        init_source_folder(reference, tracked.settings, stack)


def test_tracked_fine_tune_records_the_reference_and_the_run_it_resolved_to(tracked, tmp_path) -> None:
    from mlflow import MlflowClient

    from heimdall.jobs.train import TrainRequest, train

    out = tmp_path / "ft"
    with pytest.MonkeyPatch.context() as mp:
        for var in TRACKING_ENV:
            mp.delenv(var, raising=False)
        done = train(
            TrainRequest(
                epochs=1,
                batch_size=8,
                output_dir=out,
                progress=False,
                init_from="heimdall-localizer@champion",
                receiver_dropout=0.3,
            ),
            tracked.settings,
        )
    uri = tracked.settings.resolved_mlflow_uri
    run = MlflowClient(tracking_uri=uri, registry_uri=uri).get_run(done.mlflow_run_id)
    assert run.data.params["init_from"] == "heimdall-localizer@champion"
    assert run.data.params["receiver_dropout"] == "0.3"
    assert run.data.tags["heimdall.init_from_run"] == tracked.run_id
    assert json.loads((out / "normalization.json").read_text()) == json.loads(
        (tracked.out / "normalization.json").read_text()
    )
    assert np.isfinite(done.report.test.rmse_m)
