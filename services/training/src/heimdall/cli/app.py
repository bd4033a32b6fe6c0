"""Root typer app, its sub-apps and the error handling every command shares.

The command modules attach their commands to these apps; :mod:`heimdall.cli` imports them after this
module, so nothing here imports a command module.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from heimdall.cli.noise import silence_third_party
from heimdall.errors import HeimdallError, UserError

if TYPE_CHECKING:
    from heimdall.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

EXIT_STATUS_HELP = (
    "Exit status: 0 done; 2 a usage error, or a failure the one `error: <kind>: <message>` line explains "
    "(a bad flag, file, configuration or reference, wrong stored or imported data, an unreachable "
    "database, object store or MLflow); 1 a bug, shown with its traceback."
)

app = typer.Typer(
    name="heimdall",
    help="Heimdall training pipeline: simulate, import, train, evaluate and export RF localisation models.",
    epilog=EXIT_STATUS_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
import_app = typer.Typer(help="Import recordings: SigMF, POWDER, RSS CSV.", no_args_is_help=True)
export_app = typer.Typer(help="Export sessions or models.", no_args_is_help=True)
stations_app = typer.Typer(help="Your receiver network: add from a file, list.", no_args_is_help=True)
sessions_app = typer.Typer(help="List sessions; approve or reject them for training.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(stations_app, name="stations")
app.add_typer(sessions_app, name="sessions")

console = Console(stderr=True)

# Errors a user can act on (heimdall.errors): one clear line, the class's exit status, no traceback.
# Usage errors (typer/click: a bad option type, a missing argument) are click's own, also exit status 2.
# Anything else is a bug: it propagates with its traceback (exit status 1).
USER_ERRORS: tuple[type[BaseException], ...] = (HeimdallError,)


def error_line(exc: BaseException) -> str:
    """``<kind>: <message>`` on one line, any URL password masked."""
    from heimdall.settings import redact_text

    message = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {redact_text(message)}"


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a HeimdallError into one line ``error: <kind>: <message>`` and its ``exit_code``."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            console.print(f"[bold red]error:[/] {escape(error_line(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=getattr(exc, "exit_code", 2)) from None

    return wrapper


def load_settings() -> Settings:
    """Settings from the environment; an invalid variable is a UserError naming it."""
    from pydantic import ValidationError

    from heimdall.settings import Settings

    try:
        return Settings()
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            field = Settings.model_fields.get(name)
            alias = field.validation_alias if field is not None else None
            var = alias if isinstance(alias, str) else name if name.isupper() else f"HEIMDALL_{name.upper()}"
            problems.append(f"{var}: {e['msg'].removeprefix('Value error, ')}")
        raise UserError("invalid environment: " + "; ".join(problems)) from None


def _version(value: bool) -> None:
    """``--version``: the installed package's version, then exit."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"heimdall {version('heimdall-training')}")
        except PackageNotFoundError:
            typer.echo("heimdall (not installed: version unknown)")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Configure logging once for every command."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    silence_third_party()
