"""Fine-tuning: the weights of an earlier run (``heimdall train --init-from``), and the check that they fit.

A source is a run folder as ``heimdall train`` writes it (``config.yaml``, ``network.json``,
``normalization.json``, ``checkpoints/``; ``heimdall.jobs.train`` downloads the same files of an MLflow run
or registered model into a temporary folder first). Its weights fit this run only for the **same
network**: the same receivers in the same order at the same places, the same per-receiver scalars and
spectrogram bands, the same model and feature configuration (``model.dropout`` may differ: it shapes
no weight). Anything else is refused with one line naming what differs, before any training.

The source's normalisation is kept, not refitted: the network's weights are a function of the inputs
*as standardised by the source's statistics* (``normalization.json``; the receiver positions and the
band constants are buffers of the state dict and come along too). Refitting them on a few labelled
sessions would move every input under the loaded weights (a tiny set's means and spreads are noisy),
so the epoch-0 model would no longer be the source model; with them kept, fine-tuning starts from
exactly the model that was trained, and the shipped ``model.onnx`` and ``normalization.json`` carry the
source's statistics.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from heimdall.data.arrays import SessionArrays
from heimdall.data.network import ReceiverNetwork
from heimdall.data.normalization import NormStats
from heimdall.errors import UserError
from heimdall.training.config import FeatureSettings, ModelConfig, TrainConfig

__all__ = [
    "POSITION_TOLERANCE_M",
    "RUN_FILES",
    "InitFromError",
    "InitSource",
    "check_checkpoint",
    "check_config",
    "check_fits",
    "load_init_source",
    "shipped_checkpoint",
    "source_for_run",
]

#: The files of a run folder a source needs besides its checkpoint.
RUN_FILES = ("config.yaml", "network.json", "normalization.json")
#: A receiver farther than this from its place in the source run is another network (the model's
#: receiver positions and metric frame come from the source).
POSITION_TOLERANCE_M = 10.0
#: Model settings that shape no weight and may change for fine-tuning (dropout; which localiser ships).
FREE_MODEL_FIELDS = frozenset({"dropout", "localizer"})


class InitFromError(UserError):
    """``--init-from`` names no usable source, or one trained for another network."""


def check_checkpoint(path: Path) -> dict[str, Any]:
    """The ``state_dict`` of a Lightning checkpoint, loaded weights-only; UserError if unusable.

    A checkpoint holding pickled Python objects is refused without unpickling it (that could run
    arbitrary code); a truncated or foreign file fails here with its name, not deep inside Lightning.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"checkpoint {path} holds pickled Python objects, not only weights: refused "
            "(loading it could run arbitrary code); resume or fine-tune only from checkpoints "
            "heimdall train wrote"
        ) from None
    except Exception as exc:  # truncated zip, empty file, …: torch raises many unrelated types
        first = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
        raise UserError(
            f"checkpoint {path} is truncated or not a PyTorch checkpoint ({type(exc).__name__}: {first})"
        ) from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} is not a Lightning training checkpoint (no state_dict)")
    return state


@dataclass(frozen=True)
class InitSource:
    """What a fine-tuning run starts from: the source's network weights and what they were trained for."""

    reference: str  # as the user gave it (recorded in the run's config as ``init_from``)
    folder: Path
    checkpoint: Path
    weights: dict[str, torch.Tensor]  # the network's state dict (the LightningModule's ``net.`` removed)
    stats: NormStats
    network: ReceiverNetwork
    model: dict[str, Any]  # the source's resolved ``model`` configuration
    features: dict[str, Any]

    def load_into(self, net: torch.nn.Module) -> None:
        """Copy the weights into ``net`` (every one: :func:`check_fits` has compared them)."""
        net.load_state_dict(self.weights, strict=True)


def _fail(reference: str, what: str) -> InitFromError:
    return InitFromError(f"--init-from {reference}: {what}")


def _read(folder: Path, name: str, reference: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise _fail(reference, f"{folder} has no {name}: not a run folder written by heimdall train")
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:200]
        raise _fail(reference, f"{path} is not readable: {reason}") from None


def shipped_checkpoint(folder: Path) -> str | None:
    """The checkpoint file name the run shipped (its report.json's ``best_checkpoint``), None if unknown."""
    try:
        name = json.loads((folder / "report.json").read_text(encoding="utf-8")).get("best_checkpoint")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name and "/" not in name and "\\" not in name else None


def _checkpoint_of(folder: Path) -> Path | None:
    """The checkpoint the run shipped, else best.ckpt, else last.ckpt."""
    names = [n for n in (shipped_checkpoint(folder), "best.ckpt", "last.ckpt") if n]
    return next((folder / "checkpoints" / n for n in names if (folder / "checkpoints" / n).is_file()), None)


def load_init_source(folder: Path, reference: str | None = None) -> InitSource:
    """Read the run folder ``folder`` (``reference``: what the user named, for the messages)."""
    ref = reference or str(folder)
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a run folder" if folder.exists() else "does not exist"
        raise _fail(
            ref,
            f"{folder} {what} (give a folder written by heimdall train, an MLflow run id or "
            "a registered model such as models:/heimdall-localizer/3)",
        )
    config, network, stats = (_read(folder, name, ref) for name in RUN_FILES)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise _fail(ref, f"{folder / 'config.yaml'} is not a heimdall training configuration")
    try:
        net_spec = ReceiverNetwork.from_dict(network)
        norm = NormStats.from_dict(stats)
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(ref, f"network.json or normalization.json of {folder} is malformed ({exc})") from None
    ckpt = _checkpoint_of(folder)
    if ckpt is None:
        raise _fail(ref, f"{folder / 'checkpoints'} holds no best.ckpt or last.ckpt")
    state = check_checkpoint(ckpt)
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not weights:
        raise _fail(ref, f"checkpoint {ckpt} holds no network weights")
    features = config.get("features") if isinstance(config.get("features"), dict) else {}
    return InitSource(ref, folder, ckpt, weights, norm, net_spec, dict(config["model"]), dict(features))


def source_for_run(config: TrainConfig, folder: Path | None = None) -> InitSource | None:
    """The source ``config.init_from`` names (read from ``folder`` when given, e.g. downloaded from MLflow),
    checked against the configuration before any data is read; None without ``init_from``."""
    if config.init_from is None:
        return None
    source = load_init_source(folder if folder is not None else Path(config.init_from), config.init_from)
    check_config(source, config)
    return source


def _differences(
    prefix: str, there: Mapping[str, Any], here: Mapping[str, Any], free: frozenset[str]
) -> list[str]:
    return [
        f"{prefix}.{k} {there.get(k, '(unset)')!r} there, {here.get(k, '(unset)')!r} here"
        for k in sorted(set(there) | set(here))
        if k not in free and there.get(k) != here.get(k)
    ]


def check_config(source: InitSource, config: TrainConfig) -> None:
    """The model and feature configuration must be the source's (before any data is read)."""
    model_there = {**ModelConfig().model_dump(mode="json"), **source.model}
    features_there = {**FeatureSettings().model_dump(mode="json"), **source.features}
    diff = _differences("model", model_there, config.model.model_dump(mode="json"), FREE_MODEL_FIELDS)
    diff += _differences("features", features_there, config.features.model_dump(mode="json"), frozenset())
    if diff:
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise _fail(
            source.reference,
            f"trained with another configuration ({shown}); train with its config.yaml (--config) or "
            "the same model and feature settings",
        )


def _network_difference(there: ReceiverNetwork, here: ReceiverNetwork) -> str | None:
    if there.station_ids != here.station_ids:
        only_there = sorted(set(there.station_ids) - set(here.station_ids))
        only_here = sorted(set(here.station_ids) - set(there.station_ids))
        if not only_there and not only_here:
            return "the same stations in another order"
        parts = [f"only in the source: stations {only_there}"] if only_there else []
        parts += [f"only in this data: stations {only_here}"] if only_here else []
        return f"other receivers ({'; '.join(parts)})"
    frame = there.frame
    a = frame.to_enu(there.latitudes, there.longitudes)
    b = frame.to_enu(here.latitudes, here.longitudes)
    moved = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1)
    worst = int(np.argmax(moved))
    if moved[worst] > POSITION_TOLERANCE_M:
        return (
            f"receiver {here.names[worst]} (station {here.station_ids[worst]}) is {moved[worst]:.0f} m from "
            f"where it was in the source run (at most {POSITION_TOLERANCE_M:g} m)"
        )
    return None


def check_fits(source: InitSource, config: TrainConfig, arrays: SessionArrays, net: torch.nn.Module) -> None:
    """The source must be for this run's network: configuration, receivers, input shapes, every weight."""
    check_config(source, config)
    what = _network_difference(source.network, arrays.network)
    n_scalars, n_bands = len(source.stats.scalar_mean), len(source.stats.spec_mean)
    if what is None and n_scalars != arrays.scalars.shape[2]:
        names = ", ".join(arrays.scalar_names)
        what = f"{n_scalars} per-receiver scalars there, {arrays.scalars.shape[2]} here ({names})"
    if what is None and n_bands != arrays.spectrogram.shape[2]:
        here = arrays.spectrogram.shape[2]
        what = f"{n_bands} spectrogram bands there, {here} here" + (" (power-only data)" if here == 0 else "")
    if what is None:
        own = net.state_dict()
        bad = sorted(
            k
            for k in set(own) | set(source.weights)
            if k not in own
            or k not in source.weights
            or tuple(source.weights[k].shape) != tuple(own[k].shape)
        )
        if bad:
            shown = ", ".join(bad[:3]) + (" …" if len(bad) > 3 else "")
            what = f"{len(bad)} weights do not fit this run's network ({shown})"
    if what is not None:
        raise _fail(source.reference, f"trained for another network: {what}")
