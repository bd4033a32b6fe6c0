"""The console lines of a training run: loading progress, split sizes, one line per epoch, how it ended.

Plain lines (for logs, pipes and the job service's log), not a progress bar's control codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import pytorch_lightning as pl

from heimdall.training.report import TrainReport


def loading_lines(echo: Callable[[str], None], steps: int = 10) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` for a load that says ``loading sessions: 5,000/50,000`` ``steps`` times."""
    state = {"next": 0}

    def report(done: int, total: int) -> None:
        if done >= state["next"] or done == total - 1:
            echo(f"loading sessions: {done + 1:,}/{total:,}")
            state["next"] = done + max(1, total // steps)

    return report


class EpochLines(pl.Callback):
    """One plain line per epoch (for logs and pipes, where a progress bar's control codes are noise):
    ``epoch 3/50: train_loss 1.234, val_loss 1.456, val median 12.3 km, 0.8 s``."""

    def __init__(self, echo: Callable[[str], None], max_epochs: int) -> None:
        self.echo = echo
        self.max_epochs = max_epochs
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        parts = [f"{k} {float(m[k]):.4g}" for k in ("train_loss", "val_loss") if k in m]
        if "val_median_error_m" in m:
            parts.append(f"val median {float(m['val_median_error_m']) / 1000:.1f} km")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        self.echo(f"epoch {trainer.current_epoch + 1}/{self.max_epochs}: " + ", ".join(parts))


def best_epoch(history: Sequence[Mapping[str, float]]) -> int | None:
    """The 1-based epoch with the lowest val_loss (the one ``best.ckpt`` holds), None without one."""
    rows = [(r["val_loss"], int(r["epoch"])) for r in history if "val_loss" in r and "epoch" in r]
    return min(rows)[1] + 1 if rows else None


def split_line(counts: Mapping[str, int], skipped: Mapping[str, int]) -> str:
    """``sessions train/val/test: 28/6/6; skipped: 2 too_few_receivers`` (before fit)."""
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"
    return f"sessions train/val/test: {counts['train']}/{counts['val']}/{counts['test']}; skipped: {why}"


def stop_line(report: TrainReport) -> str:
    """How training ended: early stopping (and the best epoch) or all epochs run."""
    best = f"best epoch {report.best_epoch}" if report.best_epoch is not None else "no validation"
    val = next(
        (r.get("val_loss") for r in report.history if int(r.get("epoch", -1)) + 1 == report.best_epoch), None
    )
    val_text = f", val_loss {val:.4g}" if val is not None else ""
    if report.stopped_early:
        return f"early stopping at epoch {report.epochs_run} ({best}{val_text})"
    return f"ran all {report.epochs_run} epochs ({best}{val_text})"
