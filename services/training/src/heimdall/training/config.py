"""One typed configuration per training run; every run saves it fully resolved.

Layers, later wins: defaults → `--config FILE` (YAML) → command-line options. Invalid values
fail before any data is read, with pydantic naming the field. Every size is bounded (epochs, batch,
feature shapes, devices…) so a typo cannot make a run allocate absurd memory or run for years.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from heimdall.atomic import check_output_dir
from heimdall.data.splits import DEFAULT_SITE_RADIUS_M
from heimdall.errors import UserError, validation_problem, yaml_problem
from heimdall.features import FeatureConfig

MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536  # also the largest batch an exported ONNX graph accepts
MAX_SESSIONS = 100_000_000
MAX_DEVICES = 1024
MAX_N_FFT = 65_536
MAX_N_MELS = 512
MAX_SITE_RADIUS_M = 100_000.0  # a "site" wider than 100 km would swallow a whole network
#: the spectrogram may hold at most this many times as many values as the IQ it is computed from
MAX_SPECTROGRAM_TO_IQ = 4
#: attention heads of the network's attention pooling (heimdall.model.LocalizationNet's default)
ATTENTION_HEADS = 4


class ConfigError(UserError):
    """The run configuration is invalid; the message names the field and the source."""


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_spectrogram: bool = True
    #: feed the session's carrier band to the network (heimdall.model.LocalizationNet use_frequency)
    use_frequency: bool = True
    #: what ships (heimdall.training.champion): "auto" = the network, the radio map or their fusion,
    #: whichever has the lowest validation RMSE; "network" / "radiomap" force one
    localizer: Literal["auto", "network", "radiomap"] = "auto"
    embed_dim: int = Field(64, ge=8, le=512)
    cnn_channels: int = Field(64, ge=4, le=512)
    pooling: Literal["attention", "mean"] = "attention"
    covariance: Literal["full", "diagonal"] = "full"
    n_attention_layers: int = Field(1, ge=0, le=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    position_scale_m: float = Field(50_000.0, gt=0)

    @model_validator(mode="after")
    def _heads_divide_embedding(self) -> ModelConfig:
        if self.pooling == "attention" and self.embed_dim % ATTENTION_HEADS:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be a multiple of {ATTENTION_HEADS} (the attention heads) "
                "with pooling: attention"
            )
        return self


class FeatureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_fft: int = Field(256, ge=16, le=MAX_N_FFT)
    hop_length: int = Field(128, ge=1, le=MAX_N_FFT)
    n_mels: int = Field(32, ge=2, le=MAX_N_MELS)
    n_mfcc: int = Field(20, ge=1, le=2 * MAX_N_MELS)

    @model_validator(mode="after")
    def _consistent_and_bounded(self) -> FeatureSettings:
        self.to_feature_config()  # FeatureConfig's own checks (even n_fft, hop_length <= n_fft, …)
        # IQ has 2 values per sample, the spectrogram 2·n_mels per hop_length samples
        if self.n_mels > MAX_SPECTROGRAM_TO_IQ * self.hop_length:
            raise ValueError(
                f"n_mels={self.n_mels} with hop_length={self.hop_length} makes the spectrogram "
                f"{self.n_mels / self.hop_length:g}x the size of the IQ (at most {MAX_SPECTROGRAM_TO_IQ}x: "
                f"n_mels <= {MAX_SPECTROGRAM_TO_IQ}·hop_length)"
            )
        return self

    def to_feature_config(self, sample_rate: float = 12_500.0) -> FeatureConfig:
        return FeatureConfig(
            sample_rate=sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            n_mfcc=min(self.n_mfcc, 2 * self.n_mels),
        )


class TrainConfig(BaseModel):
    """Everything that defines a training run (servers and credentials come from Settings instead)."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[str] = Field(default_factory=lambda: ["sim:nw-italy-v1"], min_length=1)
    max_sessions: int | None = Field(None, ge=1, le=MAX_SESSIONS)
    min_receivers: int = Field(3, ge=1)
    # train/val/test assignment (heimdall.data.splits): "hash" of each transmitter site, or a published
    # test set recorded in the sessions' notes (POWDER), with validation carved from train by time blocks
    # ("powder-grid" and "powder_grid" are the same)
    split: Literal["hash", "powder_random", "powder_grid"] = "hash"
    # labels held out whole as the test / validation split (e.g. a simulation run with another seed)
    test_datasets: list[str] = Field(default_factory=list)
    val_datasets: list[str] = Field(default_factory=list)
    # truths closer than this (chained) are one transmitter site, never split across train/val/test
    site_radius_m: float = Field(DEFAULT_SITE_RADIUS_M, ge=0.0, le=MAX_SITE_RADIUS_M)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_train_sessions: int | None = Field(None, ge=1, le=MAX_SESSIONS)
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE)
    learning_rate: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0)
    gradient_clip: float = Field(1.0, gt=0)
    patience: int = Field(15, ge=1, le=MAX_EPOCHS)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    accelerator: str = "cpu"
    devices: str = "1"
    num_nodes: int = Field(1, ge=1, le=MAX_DEVICES)
    strategy: str = "auto"
    num_workers: int = Field(0, ge=0, le=256)
    # fine-tuning: start from the weights (and normalisation) of an earlier run of the same network: a
    # run folder written by `heimdall train`, an MLflow run id, or a registered model (models:/NAME/VERSION,
    # models:/NAME@ALIAS, NAME@ALIAS); heimdall.training.init_from checks it fits before any training
    init_from: str | None = Field(None, min_length=1, max_length=4096)
    # outage augmentation: each present receiver of a training session is hidden with this probability
    # (at least min_receivers heard kept per session; never in validation/test), heimdall.data.augment
    receiver_dropout: float = Field(0.0, ge=0.0, le=0.9)
    output_dir: Path = Path("models")
    model: ModelConfig = Field(default_factory=ModelConfig)
    features: FeatureSettings = Field(default_factory=FeatureSettings)

    @field_validator("datasets", "test_datasets", "val_datasets")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("dataset labels must be non-empty")
        return v

    @field_validator("split", mode="before")
    @classmethod
    def _split_spelling(cls, v: Any) -> Any:
        return v.replace("-", "_") if isinstance(v, str) else v

    @field_validator("init_from")
    @classmethod
    def _init_from(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("init_from must name a run folder, an MLflow run id or a registered model")
        return v.strip() if v is not None else v

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, v: Any) -> str:
        text = str(v).strip()
        if text == "auto" or text == "-1":
            return text
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 1:
            if not text.isdigit() or not 1 <= int(text) <= MAX_DEVICES:
                raise ValueError(
                    f"devices must be a count 1..{MAX_DEVICES}, -1 (every GPU), auto, or GPU indices "
                    f"such as 0,1; got {text!r}"
                )
            return str(int(text))
        indices = [p for p in parts if p]  # Lightning reads "0," as GPU index 0
        if not indices or not all(p.isdigit() for p in indices) or len(set(indices)) != len(indices):
            raise ValueError(f"devices {text!r} is not a list of distinct GPU indices such as 0,1")
        return text

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, v: Path) -> Path:
        return check_output_dir(v, "output_dir")

    @model_validator(mode="after")
    def _devices_fit_accelerator(self) -> TrainConfig:
        if self.accelerator == "cpu" and not (self.devices == "auto" or self.devices.isdigit()):
            raise ValueError(
                f"devices {self.devices!r} selects GPUs, but accelerator is cpu: give a process count "
                "(e.g. --devices 2) or --accelerator gpu"
            )
        return self

    @model_validator(mode="after")
    def _held_out_labels_are_selected(self) -> TrainConfig:
        for name in ("test_datasets", "val_datasets"):
            missing = sorted(set(getattr(self, name)) - set(self.datasets))
            if missing:
                raise ValueError(f"{name} {missing} must also be listed in datasets")
        both = sorted(set(self.test_datasets) & set(self.val_datasets))
        if both:
            raise ValueError(f"dataset(s) {both} cannot be both test_datasets and val_datasets")
        if not set(self.datasets) - set(self.test_datasets) - set(self.val_datasets):
            raise ValueError("every dataset is held out as test or validation: none is left to train on")
        if self.split != "hash" and (self.test_datasets or self.val_datasets):
            raise ValueError(
                f"split {self.split} takes its test set from the sessions' notes: test_datasets/val_datasets "
                "only combine with split hash"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _format(err: ValidationError, source: str) -> str:
    return f"invalid training configuration ({source}): {validation_problem(err)}"


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then explicit overrides (None values are ignored)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"configuration file {path} is a directory, not a YAML file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"configuration file {path} is not a text (UTF-8 YAML) file") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {yaml_problem(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    if clean:
        source += " + command line"
    try:
        return TrainConfig.model_validate(_merge(data, clean))
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None
