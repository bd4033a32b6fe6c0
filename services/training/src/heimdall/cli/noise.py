"""Third-party chatter the CLI silences: Lightning's tips, torch.onnx's notes, MLflow's deprecations.

Set once from the root callback (``heimdall.cli.app.main``), for the CLI only: the library keeps every
warning for other callers. ``--verbose`` still shows INFO from heimdall's own loggers.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

#: Loggers that speak at INFO/WARNING about things a user cannot act on ("💡 Tip", "GPU available but
#: not used", litlogger adverts, torch.onnx's "torchvision is not installed").
QUIET_LOGGERS = {
    "pytorch_lightning": logging.ERROR,
    "lightning": logging.ERROR,
    "lightning.pytorch": logging.ERROR,
    "lightning_fabric": logging.ERROR,
    "lightning.fabric": logging.ERROR,
    "torch.onnx": logging.ERROR,
    "torch._dynamo": logging.ERROR,
    "torch.export": logging.ERROR,
    "mlflow": logging.ERROR,
    "alembic": logging.WARNING,
}

#: Warnings (message regex, category, module regex) that are noise on the command line.
QUIET_WARNINGS: list[tuple[str, type[Warning], str]] = [
    (".*", DeprecationWarning, ""),
    (".*", FutureWarning, "mlflow"),
    (".*", UserWarning, "mlflow"),
    (".*", UserWarning, "pytorch_lightning"),
    (".*", UserWarning, "lightning"),
    (".*", UserWarning, "torch.onnx"),
    (".*does not have many workers.*", UserWarning, ""),
    (".*GPU available but not used.*", UserWarning, ""),
    (".*torchvision.*", UserWarning, ""),
]


#: Where a UserWarning comes from a library whose usage advice the CLI does not relay.
QUIET_PATHS = ("pytorch_lightning", "lightning_fabric", "lightning", "mlflow", "torch/onnx", "onnxscript")


def _quiet_showwarning(show: Any) -> Any:
    def quiet(
        message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kw: Any
    ) -> None:
        if issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning):
            return
        path = filename.replace("\\", "/")
        if any(f"/{p}/" in path for p in QUIET_PATHS) and "/heimdall/" not in path:
            return
        show(message, category, filename, lineno, *args, **kw)

    quiet._heimdall_quiet = True  # type: ignore[attr-defined]
    return quiet


class QuietFilter(logging.Filter):
    """Drops records of :data:`QUIET_LOGGERS` (and their children) below the level set there.

    Set on the root handlers too, because Lightning resets its logger to INFO when it is imported, which
    (imports being lazy) happens after the CLI's callback ran.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, level in QUIET_LOGGERS.items():
            if record.name == name or record.name.startswith(name + "."):
                return record.levelno >= level
        return True


def silence_third_party() -> None:
    """Lower the chatty libraries' loggers and ignore their deprecation/usage warnings."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, QuietFilter) for f in handler.filters):
            handler.addFilter(QuietFilter())
    for message, category, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    # Lightning adds its own warning filters when it is imported (after this ran), so the last word is a
    # showwarning that drops deprecations and the quiet libraries' usage warnings whatever the filters say
    if not getattr(warnings.showwarning, "_heimdall_quiet", False):
        warnings.showwarning = _quiet_showwarning(warnings.showwarning)


def quiet_mlflow() -> None:
    """Import MLflow now and lower its logger: importing it installs its own INFO handler (its "Creating
    initial MLflow database tables…" lines), so the level set by :func:`silence_third_party` does not hold.
    Called by the commands that track, just before their job, so ``heimdall --help`` never loads MLflow."""
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(QUIET_LOGGERS["mlflow"])
