"""`countycloud backup list | now | verify | restore`: a county's restore points and the jobs on them.

Parsing and printing only; the rules are in controlplane.backup_ops.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from backup.steps import RestoreMode
from controlplane import backup_ops, operations
from controlplane.actors import cli_actor
from controlplane.cli.common import console, user_errors
from controlplane.cli.tenant import run_job

backup_app = typer.Typer(no_args_is_help=True,
                         help="Backups: list restore points, back up now, verify, restore.")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Queue the job for the service's workers; "
                                                        "print its id.")]
SnapshotOption = Annotated[str | None, typer.Option("--snapshot", help="A restore point's id (either "
                                                    "repository's, 8+ characters); default: the newest.")]


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")


def _go(request: operations.JobRequest, no_wait: bool) -> str:
    if no_wait:
        with user_errors():
            ref = operations.submit(request)
        console.print(f"{ref.target} {ref.id}")
        return ref.id
    return run_job(request)


@backup_app.command("list")
def list_command(tenant: str, as_json: JsonOption = False) -> None:
    """A county's restore points, newest first: time, size, offsite, verified, figures."""
    with user_errors():
        found = backup_ops.list_restore_points(cli_actor(), tenant)
    if as_json:
        console.print_json(json.dumps(found, ensure_ascii=False))
        return
    table = Table("restore point", "taken", "bytes", found["primary_site"], found["offsite_site"], "verified",
                  "vouchers", "certified", "journal")
    for point in found["points"]:
        figures = point["figures"]
        table.add_row(point["short_id"], point["taken_at"], str(point["bytes"] or ""),
                      "yes" if point["primary"] else "-", "yes" if point["offsite"] else "-",
                      "yes" if point["verified"] else "-", figures.get("vouchers", ""),
                      figures.get("certified", ""), figures.get("journal", ""))
    console.print(table)
    for site, why in found["unreachable"].items():
        console.print(f"[yellow]{site}'s repository could not be read[/]: {why}")


@backup_app.command("now")
def now_command(tenant: str, no_wait: NoWait = False) -> None:
    """Back a county up now: app-consistent copy, snapshot, offsite copy, retention."""
    with user_errors():
        request = backup_ops.request_backup(cli_actor(), tenant)
    job_id = _go(request, no_wait)
    if not no_wait:
        console.print(f"[green]{tenant} backed up[/] (job {job_id})")


@backup_app.command("verify")
def verify_command(tenant: str, snapshot: SnapshotOption = None, no_wait: NoWait = False) -> None:
    """Prove a restore point: restore it at the offsite site onto a clone, check /healthz and figures."""
    with user_errors():
        request = backup_ops.request_restore(cli_actor(), tenant, mode=RestoreMode.VERIFY, snapshot=snapshot)
    job_id = _go(request, no_wait)
    if not no_wait:
        console.print(f"[green]{tenant}: restore point verified[/] (job {job_id})")


@backup_app.command("restore")
def restore_command(
    tenant: str, snapshot: SnapshotOption = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Restore the county's own VM (stop, swap "
                                                              "its data disk, start, probe).")] = False,
    site: Annotated[str | None, typer.Option(help="For a copy: the site it runs at (default: offsite).")
                    ] = None,
    name: Annotated[str | None, typer.Option(help="For a copy: its own name (default SLUG-copy-XXXXXX).")
                    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Restore a county's restore point in place, or (default) as a copy under a name of its own."""
    mode = RestoreMode.IN_PLACE if in_place else RestoreMode.COPY
    with user_errors():
        request = backup_ops.request_restore(cli_actor(), tenant, mode=mode, snapshot=snapshot, site=site,
                                             name=name)
    job_id = _go(request, no_wait)
    if not no_wait:
        console.print(f"[green]{tenant} restored ({mode.value})[/] (job {job_id})")
