"""The `heimdall` command line: one typer app, one sub-module per group of commands.

A thin adapter over :mod:`heimdall.jobs`: each command parses its flags into a request, calls the job and
prints the outcome. :mod:`heimdall.cli.app` defines the apps and the error mapping; the command modules,
imported here after it, attach their commands to them.
"""

from heimdall.cli import (  # noqa: F401  (their decorators register the commands)
    data_commands,
    evaluate_commands,
    interchange_commands,
    locate_commands,
    models_commands,
    powder_commands,
    rss_commands,
    service_commands,
    sessions_commands,
    stations_commands,
    train_commands,
)
from heimdall.cli.app import app

__all__ = ["app"]
