"""Run configuration: layering and clear errors for invalid values."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdall.training.config import ConfigError, load_config


def test_defaults_file_and_overrides(tmp_path: Path) -> None:
    assert load_config().epochs == 100 and load_config().batch_size == 32
    f = tmp_path / "run.yaml"
    f.write_text("epochs: 5\nmodel:\n  pooling: mean\nfeatures:\n  n_mels: 16\n")
    cfg = load_config(f, {"epochs": 7, "learning_rate": None})
    assert cfg.epochs == 7 and cfg.model.pooling == "mean" and cfg.features.n_mels == 16
    assert cfg.learning_rate == 1e-3 and cfg.model.embed_dim == 64
    assert cfg.resolved()["model"]["pooling"] == "mean"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs: 0\n", "epochs"),
        ("batch_size: -1\n", "batch_size"),
        ("learning_rate: 5\n", "learning_rate"),
        ("model:\n  pooling: max\n", "model.pooling"),
        ("bogus_key: 1\n", "bogus_key"),
        ("datasets: []\n", "datasets"),
        ("- a list\n", "must hold a mapping"),
        ("epochs: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(f)
    assert str(f) in str(err.value)


def test_invalid_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="epochs"):
        load_config(None, {"epochs": -3})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
