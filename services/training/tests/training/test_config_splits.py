"""The split options of the run configuration: spellings, held-out labels, the site radius."""

from __future__ import annotations

import pytest

from heimdall.data.splits import DEFAULT_SITE_RADIUS_M
from heimdall.training.config import ConfigError, load_config


def test_split_spellings_and_defaults() -> None:
    cfg = load_config(None, {})
    assert cfg.split == "hash" and cfg.val_datasets == [] and cfg.site_radius_m == DEFAULT_SITE_RADIUS_M
    assert load_config(None, {"split": "powder-grid"}).split == "powder_grid"
    assert load_config(None, {"split": "powder_random"}).split == "powder_random"


def test_validation_labels() -> None:
    cfg = load_config(None, {"datasets": ["a", "v", "t"], "val_datasets": ["v"], "test_datasets": ["t"]})
    assert cfg.val_datasets == ["v"] and cfg.resolved()["val_datasets"] == ["v"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"split": "powder-walk"}, "split"),
        ({"datasets": ["a"], "val_datasets": ["v"]}, r"val_datasets \['v'\] must also be listed in datasets"),
        ({"datasets": ["a", "v"], "val_datasets": ["v"], "test_datasets": ["v"]}, "both test_datasets and"),
        ({"datasets": ["a", "v"], "val_datasets": ["a"], "test_datasets": ["v"]}, "none is left to train on"),
        (
            {"datasets": ["a", "v"], "val_datasets": ["v"], "split": "powder-grid"},
            "only combine with split hash",
        ),
        ({"datasets": ["a", "v"], "val_datasets": [" "]}, "non-empty"),
        ({"site_radius_m": -5}, "site_radius_m"),
        ({"site_radius_m": 1e9}, "site_radius_m"),
    ],
)
def test_bad_split_options_name_the_field(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)
