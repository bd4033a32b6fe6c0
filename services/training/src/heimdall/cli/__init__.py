"""The `heimdall` command line: one typer app, one sub-module per group of commands."""

from heimdall.cli.app import app

__all__ = ["app"]
