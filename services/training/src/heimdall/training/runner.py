"""One training run end to end: data → LocalizationNet → checkpoints → calibration → test → ONNX → report.

What happens after fitting (calibration on validation, test figures, export, parity) is
:mod:`heimdall.training.shipping`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from heimdall.atomic import atomic_write_text, check_output_dir
from heimdall.data.arrays import DatasetError, SessionArrays, load_session_arrays
from heimdall.data.splits import apply_split_override
from heimdall.errors import UserError
from heimdall.evaluate.plots import plot_loss_curves
from heimdall.model import LocalizationNet
from heimdall.services import Services
from heimdall.training.champion import choose_localizer, localizer_line
from heimdall.training.config import ATTENTION_HEADS, ConfigError, TrainConfig
from heimdall.training.console import EpochLines, best_epoch, loading_lines, split_line, stop_line
from heimdall.training.distributed import (
    end_non_zero_rank,
    is_rank_zero,
    limit_torch_threads,
    processes_per_node,
)
from heimdall.training.init_from import check_checkpoint, check_fits, source_for_run
from heimdall.training.module import LocalizationModule
from heimdall.training.report import TrainReport
from heimdall.training.report_md import render_report_md
from heimdall.training.shipping import finish_run
from heimdall.training.train_data import TrainingDataModule

log = logging.getLogger("heimdall.training")


@dataclass
class TrainResult:
    model_id: str
    output_dir: Path
    report: TrainReport
    history: list[dict[str, float]] = field(default_factory=list)


def build_net(config: TrainConfig, arrays: SessionArrays) -> LocalizationNet:
    m = config.model
    return LocalizationNet(
        n_receivers=arrays.network.size,
        receiver_positions_km=arrays.network.positions_enu_m() / 1000.0,
        n_scalars=arrays.scalars.shape[2],
        n_bands=max(arrays.spectrogram.shape[2], 1),
        use_spectrogram=m.use_spectrogram and arrays.has_spectrogram,
        embed_dim=m.embed_dim,
        pooling=m.pooling,
        n_heads=ATTENTION_HEADS,
        covariance=m.covariance,
        position_scale_m=m.position_scale_m,
        dropout=m.dropout,
        cnn_channels=m.cnn_channels,
        n_attention_layers=m.n_attention_layers,
        use_frequency=m.use_frequency,
        **LocalizationNet.band_constants(
            None if arrays.frequency_hz is None else arrays.frequency_hz[arrays.indices("train")]
        ),
    )


def _check_splits(arrays: SessionArrays) -> dict[str, int]:
    counts = arrays.counts()
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(
            f"too few usable sessions ({len(arrays.session_ids)}) for train/val/test: {', '.join(empty)} "
            f"split(s) empty; simulate or import at least 3 sessions"
        )
    return counts


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed into place: a run killed mid-save
    (``kill -9``) leaves the previous ``last.ckpt`` intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class RunHistory(pl.Callback):
    """Keeps the per-epoch history in every checkpoint, so a resumed run reports all its epochs.

    ``resumed_from_epoch`` is the 0-based index of the first epoch trained after resuming, i.e. the
    number of epochs the checkpoint had completed; None when training started fresh.
    """

    KEY = "heimdall_history"

    def __init__(self) -> None:
        self.resumed_from_epoch: int | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[self.KEY] = [dict(row) for row in getattr(pl_module, "history", [])]

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        history = [dict(row) for row in checkpoint.get(self.KEY, [])]
        pl_module.history = history  # type: ignore[assignment]
        # checkpoints are written at the end of epoch `checkpoint["epoch"]` (0-based)
        self.resumed_from_epoch = int(checkpoint.get("epoch", len(history) - 1)) + 1


def _trainer(
    config: TrainConfig,
    ckpt_dir: Path,
    progress: bool,
    extra: Sequence[pl.Callback] = (),
    echo: Callable[[str], None] | None = None,
) -> tuple[pl.Trainer, ModelCheckpoint]:
    """``progress``: a TQDM bar on a terminal (stderr a TTY), else one :class:`EpochLines` line per epoch."""
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_loss", mode="min", save_last=True)
    callbacks: list[pl.Callback] = [
        best,
        EarlyStopping(monitor="val_loss", mode="min", patience=config.patience),
        RunHistory(),
        *extra,
    ]
    from heimdall.training.cancel import ambient_callbacks  # a job service's cancel/progress hook

    callbacks.extend(ambient_callbacks())
    bar = progress and sys.stderr.isatty()
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    elif progress:
        callbacks.append(EpochLines(echo or log.info, config.epochs))
    devices: int | str = int(config.devices) if config.devices.isdigit() else config.devices
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        callbacks=callbacks,
        gradient_clip_val=config.gradient_clip,
        deterministic=True,
        logger=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        default_root_dir=str(ckpt_dir.parent),
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # ShardedDataModule shares out the global batches itself
    )
    return trainer, best


def resume_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` continues from (``output_dir/checkpoints/last.ckpt``), if any."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def _check_resumable(state: Mapping[str, Any], module: torch.nn.Module, path: Path) -> None:
    """The checkpoint's weights must fit the network built for this run (same receivers and shapes)."""
    own = module.state_dict()
    bad = sorted(
        k
        for k in set(own) | set(state)
        if k not in own or k not in state or getattr(state[k], "shape", None) != own[k].shape
    )
    if bad:
        shown = ", ".join(bad[:3]) + (" …" if len(bad) > 3 else "")
        raise UserError(
            f"checkpoint {path} does not fit this run's network ({len(bad)} mismatched weights: {shown}); "
            "resume with the configuration and data it was trained with"
        )


def _load_weights(net: torch.nn.Module, ckpt: Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def run_training(
    config: TrainConfig,
    services: Services,
    resume: bool = False,
    progress: bool = True,
    model_id: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
    split_override: Mapping[str, Sequence[str]] | None = None,
    echo: Callable[[str], None] | None = None,
    init_dir: Path | None = None,
) -> TrainResult:
    """Train, evaluate on the held-out split, export and verify ONNX, write the report.

    ``callbacks`` join the Lightning trainer (e.g. per-epoch MLflow metrics); ``split_override``
    (``{"train"|"val"|"test": [session ids]}``) replaces the hash-based split with a recorded one.

    ``resume`` continues from ``output_dir/checkpoints/last.ckpt`` when it exists: the report then has
    ``resumed: true``, ``resumed_from_epoch`` (first epoch trained after resuming) and the complete
    ``history`` (epochs before the interruption come from the checkpoint); ``epochs_run`` counts them all.

    ``echo`` receives the console lines (split sizes before fit, one line per epoch when ``progress`` and
    stderr is not a terminal, how training ended); by default they go to the ``heimdall.training`` log.

    ``config.init_from`` starts from an earlier run's weights and normalisation
    (:mod:`heimdall.training.init_from`), read from ``init_dir`` (its run folder, e.g. downloaded from
    MLflow by :mod:`heimdall.jobs.train`), else from the folder ``config.init_from`` names.
    """
    say = echo or log.info
    out = check_output_dir(Path(config.output_dir), "output_dir")
    # validate what --resume continues from before any data is read
    resume_ckpt = resume_checkpoint(out) if resume else None
    resume_state = check_checkpoint(resume_ckpt) if resume_ckpt is not None else None
    source = source_for_run(config, init_dir)
    pl.seed_everything(config.seed, workers=True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # the ranks of this node share the cores this process may really use (affinity, cgroup quota)
    limit_torch_threads(processes_per_node(config.accelerator, config.devices, config.strategy))
    feature_config = config.features.to_feature_config()
    t_load = time.perf_counter()
    arrays = load_session_arrays(
        services.db,
        services.store,
        config.datasets,
        feature_config,
        services.settings.data_dir / "feature-cache",
        max_sessions=config.max_sessions,
        min_receivers=config.min_receivers,
        split=config.split,
        test_datasets=config.test_datasets,
        val_fraction=config.val_fraction,
        max_train=config.max_train_sessions,
        val_datasets=config.val_datasets,
        site_radius_m=config.site_radius_m,
        store_root=services.settings.data_dir / "array-store",
        progress=loading_lines(say) if progress and is_rank_zero() else None,
    )
    load_s = time.perf_counter() - t_load
    if split_override is not None:
        arrays = apply_split_override(arrays, split_override)
    counts = _check_splits(arrays)
    batch_size = min(config.batch_size, counts["train"])
    if batch_size < config.batch_size:
        log.warning(
            "batch size %d > %d training sessions: using %d", config.batch_size, counts["train"], batch_size
        )
    net = build_net(config, arrays)
    if source is not None:  # before any training: one line naming what differs
        check_fits(source, config, arrays, net)
        source.load_into(net)
    dm = TrainingDataModule(
        arrays,
        batch_size=batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
        stats=source.stats if source is not None else None,  # fine-tuning keeps the source's inputs
        receiver_dropout=config.receiver_dropout,
        min_heard=config.min_receivers,
    )
    module = LocalizationModule(net, config.learning_rate, config.weight_decay, config.epochs)
    ckpt_dir = out / "checkpoints"
    try:
        trainer, best_cb = _trainer(config, ckpt_dir, progress, callbacks, say)
    except (MisconfigurationException, TypeError, ValueError) as exc:
        raise ConfigError(
            f"accelerator={config.accelerator!r}, devices={config.devices!r}, num_nodes={config.num_nodes}, "
            f"strategy={config.strategy!r}: {exc}"
        ) from None
    history_cb = next(cb for cb in trainer.callbacks if isinstance(cb, RunHistory))
    last = ckpt_dir / "last.ckpt"
    resumed = resume and resume_checkpoint(out) is not None
    if resume and not resumed:
        log.warning("--resume: no checkpoint at %s, training from scratch", last)
    if resumed and resume_state is not None:
        _check_resumable(resume_state, module, last)
    try:
        out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves no empty folder
    except OSError as exc:
        raise UserError(f"cannot create output_dir {out}: {exc.strerror or exc}") from None
    if is_rank_zero():
        say(split_line(counts, arrays.skipped))
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resumed else None)
    fit_s = time.perf_counter() - t_fit
    end_non_zero_rank(trainer)  # other DDP ranks stop here: rank 0 alone evaluates, exports and reports
    early = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    resumed_from = history_cb.resumed_from_epoch if resumed else None
    epochs_now = len(module.history) - (resumed_from or 0)
    best_path = Path(best_cb.best_model_path) if best_cb.best_model_path else last
    _load_weights(net, best_path)
    model_id = model_id or uuid.uuid4().hex
    shipped, localizer = choose_localizer(net, dm, arrays, config.model.localizer)
    if is_rank_zero():
        say(localizer_line(localizer))
    figures = finish_run(config, services, arrays, dm, shipped, out, model_id)
    figures.update(
        {
            "localizer": localizer,
            "n_train": counts["train"],
            "n_val": counts["val"],
            "n_test": counts["test"],
            "skipped_sessions": arrays.skipped,
            # one optimiser step sees batch_size sessions on each of the run's processes
            "effective_batch_size": batch_size * trainer.num_devices * trainer.num_nodes,
            "epochs_run": len(module.history),
            "best_epoch": best_epoch(module.history),
            "stopped_early": bool(early.stopped_epoch),
            "resumed": resumed,
            "resumed_from_epoch": resumed_from,
            "best_checkpoint": best_path.name,
            "timing": {
                "load_seconds": round(load_s, 3),
                "fit_seconds": round(fit_s, 3),
                "seconds_per_epoch": round(fit_s / max(1, epochs_now), 4),
            },
            "history": module.history,
        }
    )
    report = TrainReport.model_validate(figures)
    say(stop_line(report))
    plot_loss_curves(module.history, out / "loss_curves.png")
    _write_json(out / "report.json", report.as_json())
    atomic_write_text(out / "report.md", render_report_md(report))
    return TrainResult(model_id, out, report, module.history)
