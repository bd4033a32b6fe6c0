"""Root typer app and the error handling every command shares."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="heimdall",
    help="Heimdall training pipeline: simulate, import, train, evaluate and export RF localisation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
import_app = typer.Typer(help="Import recordings from outside (SigMF, POWDER).", no_args_is_help=True)
export_app = typer.Typer(help="Export sessions or models.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

console = Console(stderr=True)

# Errors a user can act on: printed as one clear line, exit status 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, RuntimeError, FileNotFoundError, PermissionError)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures (bad input, unreachable services) into a one-line error and exit 2."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    """Configure logging once for every command."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def register_commands() -> None:
    """Import the command modules so their decorators attach to the apps above."""
    from heimdall.cli import (  # noqa: F401
        data_commands,
        evaluate_commands,
        interchange_commands,
        models_commands,
        powder_commands,
        train_commands,
    )


register_commands()
