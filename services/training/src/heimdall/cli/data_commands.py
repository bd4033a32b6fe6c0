"""Data commands: `simulate` and `db upgrade` (imports and exports live beside them)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from heimdall.cli.app import app, console, db_app, load_settings, user_errors
from heimdall.errors import UserError
from heimdall.services import open_services
from heimdall.simulate.scenario import load_scenario
from heimdall.simulate.session import session_id_for, simulate_sessions
from heimdall.storage.database import open_database
from heimdall.storage.queries import existing_session_ids
from heimdall.storage.recordings import missing_objects, write_sessions
from heimdall.storage.simulated import session_record

BATCH = 64


@app.command()
@user_errors
def simulate(
    scenario: str = typer.Option(
        "nw-italy-v1", "--scenario", help="Shipped scenario name or a scenario YAML path."
    ),
    sessions: int = typer.Option(300, "--sessions", help="Number of kept sessions (heard by ≥ 3 receivers)."),
    seed: int = typer.Option(0, "--seed", help="Draws sessions inside the scenario's fixed world."),
    duration: float | None = typer.Option(
        None, "--duration", help="Seconds of IQ per receiver (default 0.5)."
    ),
    start: int = typer.Option(0, "--start", help="First session index (to extend or shard a run)."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Dataset label (default sim:<scenario>), e.g. to hold a test campaign apart."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Simulate sessions into the configured database and object store (atomic per batch, idempotent)."""
    if sessions < 0:
        raise UserError(f"--sessions must be ≥ 0, got {sessions}")
    if dataset is not None and not dataset.strip():
        raise UserError("--dataset must be a non-empty label")
    spec = load_scenario(Path(scenario) if scenario.endswith((".yaml", ".yml")) else scenario)
    simulate_sessions(spec, sessions, seed, duration, start)  # validates the arguments before any I/O
    services = open_services(load_settings())
    written = skipped = 0
    t0 = time.perf_counter()
    try:
        with Progress(
            TextColumn("[bold]simulate[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not progress,
        ) as bar:
            task = bar.add_task(spec.name, total=sessions)
            for first in range(start, start + sessions, BATCH):
                count = min(BATCH, start + sessions - first)
                ids = [session_id_for(spec, seed, k) for k in range(first, first + count)]
                stored = existing_session_ids(services.db, ids)
                if len(stored) == count and not missing_objects(services.db, services.store, ids):
                    # a re-run with every row and object in place: nothing to simulate
                    skipped += count
                else:
                    batch = simulate_sessions(spec, count, seed, duration, first)
                    records = [session_record(s, spec.name, seed, dataset) for s in batch]
                    w, k = write_sessions(
                        services.db, services.store, services.settings.raw_iq_bucket, records
                    )
                    written, skipped = written + w, skipped + k
                bar.advance(task, count)
    finally:
        services.close()
    elapsed = time.perf_counter() - t0
    rate = sessions / elapsed if elapsed > 0 else float("inf")
    typer.echo(
        f"simulated {sessions} sessions of {spec.name} (seed {seed}): {written} written, "
        f"{skipped} already present, {elapsed:.1f} s ({rate:.0f} sessions/s) "
        f"into {services.db.safe_url} + {services.store.url}"
    )


@db_app.command("upgrade")
@user_errors
def db_upgrade() -> None:
    """Apply the schema migrations and seed the receiver network (also done automatically)."""
    settings = load_settings()
    db = open_database(settings.resolved_database_url, settings.connect_timeout_s)
    typer.echo(f"database {db.safe_url} is at the latest schema revision")
    db.dispose()
