"""Session commands: `sessions list` and `sessions approve`."""

from __future__ import annotations

import json

import typer

from heimdall.cli.app import console, load_settings, sessions_app, user_errors
from heimdall.errors import UserError

STATUSES = ("pending", "approved", "rejected")


@sessions_app.command("list")
@user_errors
def sessions_list(
    dataset: list[str] = typer.Option([], "--dataset", help="Only this dataset label (repeatable)."),
    status: str | None = typer.Option(None, "--status", help="Only pending, approved or rejected sessions."),
    limit: int | None = typer.Option(None, "--limit", help="At most N sessions (earliest first)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON list on stdout."),
) -> None:
    """List sessions (id, dataset, start, status, receivers heard, truth); creates no database."""
    if status is not None and status not in STATUSES:
        raise UserError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
    from heimdall.jobs.sessions import ListSessionsRequest, list_sessions

    request = ListSessionsRequest(datasets=dataset, status=status, limit=limit)  # type: ignore[arg-type]
    out = list_sessions(request, load_settings())
    console.print(out.missing or f"sessions in {out.database}", highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in out.sessions], indent=2))
        return
    for s in out.sessions:
        typer.echo(
            f"{s.id}  {s.dataset:<20} {s.start.isoformat(timespec='seconds')}  {s.status:<8} "
            f"{s.receivers_heard:>2} rx  {'truth' if s.has_truth else 'no truth'}"
        )


@sessions_app.command("approve")
@user_errors
def sessions_approve(
    ids: list[str] = typer.Argument(..., help="Session ids (UUIDs)."),
    reject: bool = typer.Option(False, "--reject", help="Reject them instead (training skips them)."),
) -> None:
    """Approve (or --reject) sessions for training, all in one transaction: any unknown id, none changed."""
    from heimdall.jobs.sessions import ApproveRequest, approve

    out = approve(ApproveRequest(ids=ids, reject=reject), load_settings())
    typer.echo(f"{out.sessions} session(s) {out.status} ({out.changed} changed) in {out.database}")
