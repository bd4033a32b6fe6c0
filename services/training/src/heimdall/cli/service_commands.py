"""`heimdall serve` (the HTTP API of the job service) and `heimdall worker` (the Celery worker)."""

from __future__ import annotations

import typer

from heimdall.cli.app import app, load_settings, user_errors
from heimdall.errors import UserError

LOOPBACK = "127.0.0.1"


@app.command()
@user_errors
def serve(
    host: str = typer.Option(LOOPBACK, "--host", help="Address to bind (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    local_only: bool = typer.Option(
        False,
        "--local-only",
        help="Run without HEIMDALL_API_TOKEN, bound to 127.0.0.1 only (also HEIMDALL_LOCAL_ONLY=1).",
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Server processes (each its own database pool); 1 on 2 cores."
    ),
) -> None:
    """Serve the training job API (OpenAPI at /docs); every /api/v1 call needs the bearer token."""
    import uvicorn

    from heimdall.api import create_app
    from heimdall.cli.noise import quiet_mlflow

    settings = load_settings()
    local_only = local_only or settings.local_only
    if settings.api_token is None or not settings.api_token.get_secret_value():
        if not local_only:
            raise UserError(
                "HEIMDALL_API_TOKEN is not set: set it (clients send 'Authorization: Bearer <token>') "
                "or run with --local-only, which binds 127.0.0.1 only"
            )
        settings = settings.model_copy(update={"api_token": None})
    if local_only and host != LOOPBACK:
        raise UserError(f"--local-only binds {LOOPBACK} only; drop --host {host} or set HEIMDALL_API_TOKEN")
    quiet_mlflow()
    typer.echo(f"heimdall serve: http://{host}:{port} (OpenAPI at /docs)", err=True)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=True)
        return
    if settings.api_token is None and not settings.local_only:
        raise UserError("--workers with --local-only: set HEIMDALL_LOCAL_ONLY=1 (each process reads it)")
    uvicorn.run(
        "heimdall.api.app:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
        access_log=True,
    )


@app.command()
@user_errors
def worker(
    loglevel: str = typer.Option("INFO", "--loglevel", help="Celery's log level."),
) -> None:
    """Run queued trainings (Celery, one at a time per worker) from HEIMDALL_BROKER_URL."""
    from heimdall.cli.noise import quiet_mlflow, silence_third_party
    from heimdall.worker.app import run_worker

    silence_third_party()
    quiet_mlflow()
    run_worker(load_settings(), loglevel.upper())
