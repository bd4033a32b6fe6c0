"""The options of ``heimdall train`` that any caller may set: the one list the CLI and the job API share.

:class:`heimdall.jobs.train.TrainRequest` adds what only a local caller may choose (the output folder, a
configuration file, resuming, a progress bar); :class:`heimdall.jobs.service.JobSubmission` is these
options as a client submits them. A new training option added here reaches both front doors. Kept free of
torch and Lightning so the HTTP API imports it cheaply.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

_RUN_ID = re.compile(r"[0-9a-f]{32}")


class TrainOptions(BaseModel):
    """None leaves the configuration's value (or its default)."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int | None = None
    datasets: list[str] | None = None
    max_sessions: int | None = None
    accelerator: str | None = None
    devices: str | None = None
    num_nodes: int | None = None
    strategy: str | None = None
    patience: int | None = None
    split: str | None = None
    val_datasets: list[str] | None = None
    test_datasets: list[str] | None = None
    site_radius_m: float | None = None
    tracking: bool = True
    promote: bool = False
    from_run: str | None = None
    init_from: str | None = None  # a run folder, or an MLflow run / registered model (mlflow_reference)
    receiver_dropout: float | None = None
    localizer: str | None = None  # "auto" | "network" | "radiomap" (model.localizer)

    def config_overrides(self) -> dict[str, Any]:
        """The training configuration's values these options set (None: not set)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "datasets": self.datasets or None,
            "max_sessions": self.max_sessions,
            "accelerator": self.accelerator,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "strategy": self.strategy,
            "patience": self.patience,
            "split": self.split,
            "val_datasets": self.val_datasets,
            "test_datasets": self.test_datasets,
            "site_radius_m": self.site_radius_m,
            "init_from": self.init_from,
            "receiver_dropout": self.receiver_dropout,
            "model": {"localizer": self.localizer} if self.localizer is not None else None,
        }


def mlflow_reference(reference: str) -> tuple[str, str] | None:
    """``("run", RUN_ID)`` or ``("model", "models:/…")`` for an MLflow reference, None for anything else.

    ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` and a logged ``models:/m-…`` are models; so is a bare
    ``NAME@ALIAS``. ``runs:/RUN_ID[/…]`` and 32 hex digits are runs.
    """
    if reference.startswith("models:/"):
        return "model", reference
    if reference.startswith("runs:/"):
        return "run", reference.removeprefix("runs:/").split("/")[0]
    if _RUN_ID.fullmatch(reference):
        return "run", reference
    if "@" in reference and "/" not in reference and not reference.startswith("@"):
        return "model", f"models:/{reference}"
    return None
