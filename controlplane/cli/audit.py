"""`countycloud audit verify|list`: check the audit log's hash chain, read its newest events."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from controlplane import audit
from controlplane.cli.common import EXIT_FAILED, console, errors

audit_app = typer.Typer(no_args_is_help=True, help="The audit log: who changed what, hash-chained.")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _engine() -> Engine:
    from controlplane import bootstrap

    audit.configure(bootstrap.settings().state_dir)
    return bootstrap.engine()


@audit_app.command("verify")
def verify_command(as_json: JsonOption = False) -> None:
    """Check every event's hash, the chain's links, and its head against the anchor file."""
    engine = _engine()
    path = audit.anchor_path(engine)
    try:
        report = audit.verify(engine, path)
    except ValueError as error:
        errors.print(str(error), markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        console.print_json(json.dumps({
            "ok": report.ok, "events": report.events, "anchor_file": str(path),
            "head": report.head.__dict__ if report.head else None,
            "anchor": report.anchor.__dict__ if report.anchor else None, "problems": report.problems}))
    elif report.ok:
        anchored = f", anchored at event {report.anchor.seq}" if report.anchor else ", no anchor file yet"
        console.print(f"audit log intact: {report.events} events{anchored} ({path})", markup=False)
    else:
        for problem in report.problems:
            errors.print(f"audit log broken: {problem}", markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@audit_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many of the newest events.")] = 50,
    target: Annotated[str | None, typer.Option(help="Only events about this target.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The newest events first."""
    rows = audit.list_events(_engine(), limit=limit, target=target)
    if as_json:
        console.print_json(json.dumps([audit.event_json(row) for row in rows], ensure_ascii=False))
        return
    table = Table("seq", "at", "who", "role", "from", "action", "target", "job")
    for row in rows:
        who = f"{row.actor_kind}:{row.actor_name}" + (f" ({row.token_id})" if row.token_id else "")
        table.add_row(str(row.seq), audit.event_json(row)["at"][:19], escape(who), str(row.role),
                      escape(row.source), escape(row.action), escape(row.target), escape(row.job_id or ""))
    console.print(table)
