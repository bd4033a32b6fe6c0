"""Data commands: `simulate` and `db upgrade` (imports and exports live beside them)."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from heimdall.cli.app import app, console, db_app, load_settings, user_errors


@app.command()
@user_errors
def simulate(
    scenario: str = typer.Option(
        "nw-italy-v1", "--scenario", help="Shipped scenario name or a scenario YAML path."
    ),
    sessions: int = typer.Option(300, "--sessions", help="Number of kept sessions (heard by ≥ 3 receivers)."),
    seed: int = typer.Option(0, "--seed", help="Draws sessions inside the scenario's fixed world."),
    duration: float | None = typer.Option(
        None, "--duration", help="Seconds of IQ per receiver.", show_default="0.5"
    ),
    start: int = typer.Option(0, "--start", help="First session index (to extend or shard a run)."),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="Dataset label, e.g. to hold a test campaign apart.",
        show_default="sim:<scenario>, with --sites sim:<scenario>:sites-<hash8>",
    ),
    sites: str | None = typer.Option(
        None,
        "--sites",
        help="CSV (latitude,longitude[,power_w][,name]) or YAML file of fixed transmitter sites: "
        "every session is at one of them, picked uniformly.",
    ),
    power_only: bool = typer.Option(
        False,
        "--power-only",
        help="Store power and SNR rows only, no IQ (an RSS network's sessions; label sim:<scenario>:power).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    workers: int = typer.Option(
        1, "--workers", help="Processes simulating batches in parallel (same sessions and bytes as 1)."
    ),
) -> None:
    """Simulate sessions into the configured database and object store (atomic per batch, idempotent)."""
    from heimdall.jobs.simulate import SimulateRequest
    from heimdall.jobs.simulate import simulate as run_simulate

    request = SimulateRequest(
        scenario=scenario,
        sessions=sessions,
        seed=seed,
        duration=duration,
        start=start,
        dataset=dataset,
        workers=workers,
        sites=sites,
        power_only=power_only,
    )
    with Progress(
        TextColumn("[bold]simulate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    ) as bar:
        task = bar.add_task("", total=sessions, start=False, visible=False)

        def advance(name: str, done: int, total: int) -> None:
            bar.update(task, description=name, completed=done, total=total, visible=True)
            bar.start_task(task)

        out = run_simulate(request, load_settings(), progress=advance)
    at = "" if out.sites is None else f" at {out.sites} fixed sites"
    at += f" into dataset {out.dataset}" if out.sites is not None or power_only else ""
    typer.echo(
        f"simulated {out.sessions} sessions of {out.scenario} (seed {out.seed}){at}: {out.written} written, "
        f"{out.skipped} already present, {out.elapsed_s:.1f} s ({out.sessions_per_s:.0f} sessions/s) "
        f"into {out.database} + {out.object_store}"
    )


@db_app.command("upgrade")
@user_errors
def db_upgrade() -> None:
    """Apply the schema migrations and seed the receiver network (also done automatically)."""
    from heimdall.jobs.database import upgrade

    out = upgrade(load_settings())
    typer.echo(f"database {out.database} is at the latest schema revision")
