"""`countycloud platform backup | recover`: the control plane's own database, copied offsite, and a
control plane started at the DR site from that copy. Parsing and printing only; the rules are in
controlplane.platform_ops and the platform_* modules it uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from controlplane import platform_ops
from controlplane.actors import cli_actor
from controlplane.cli.common import EXIT_FAILED, console, errors, user_errors

platform_app = typer.Typer(no_args_is_help=True,
                           help="The control plane's own database: copy it offsite, recover from the copy.")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(platform_app, name="platform")


@platform_app.command("backup")
def backup_command(as_json: JsonOption = False) -> None:
    """Copy the platform database now into the primary's repository and offsite (the schedule does
    it every 10 minutes)."""
    with user_errors():
        copied = platform_ops.back_up(cli_actor())
    if as_json:
        console.print_json(json.dumps(copied.__dict__))
    else:
        console.print(f"platform database: snapshot {copied.snapshot_id[:8]} ({copied.format}) at "
                      f"{copied.primary}" + ("" if copied.offsite_error else f", copied to {copied.offsite}"))
    if copied.offsite_error:
        errors.print(f"not copied to {copied.offsite}: {copied.offsite_error}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)


@platform_app.command("recover")
def recover_command(
    snapshot: Annotated[str | None, typer.Option(
        "--snapshot", help="The platform-db snapshot's id (8+ characters); default: the newest.")] = None,
    site: Annotated[str, typer.Option(
        "--site", help="The site whose own repository holds the offsite copies (this DR site).")
    ] = platform_ops.DEFAULT_DR_SITE,
    password_file: Annotated[Path | None, typer.Option(
        "--password-file", help="That repository's password (from the DR safe; mode 0600); default: the "
                                "site's own SITE/backup/password.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start this control plane from the offsite copy of the platform database: restore it into the
    configured database (only a missing or empty one), migrate it, and show what it holds."""
    with user_errors():
        found = platform_ops.recover(cli_actor(), snapshot=snapshot, site=site, password_file=password_file)
    if as_json:
        console.print_json(json.dumps(found.as_json(), ensure_ascii=False))
        return
    hours, rest = divmod(int(found.age_s), 3600)
    age = f"{hours} h {rest // 60} min {rest % 60} s"
    console.print(f"{found.database}: {found.done.value} from snapshot {found.snapshot_id[:8]} of "
                  f"{found.repository}, taken {found.taken_at:%Y-%m-%d %H:%M:%S} UTC ({age} ago): what was "
                  "written after it is not in this database")
    held = found.holding
    console.print("sites: " + ", ".join(f"{site['site']} ({site['role']}, {site['status']} in the copy)"
                                        for site in held.sites))
    table = Table("county", "name", "home", "runs at", "status")
    for county in held.counties:
        table.add_row(county.slug, county.name, county.home, county.runs_at, county.status)
    console.print(table)
    console.print("fenced copies: " + (", ".join(f"{copy['vm']} at {copy['site']} ({copy['how']})"
                                                 for copy in held.fenced) or "none"))
    if held.unfinished_jobs:
        console.print("jobs unfinished in the copy (their processes ran at the lost control plane): "
                      + ", ".join(f"{job['kind']} {job['target']} {job['job']}"
                                  for job in held.unfinished_jobs))
    if found.password_installed:
        console.print(f"the repository's password is now at {found.password_installed} "
                      "(the failover reads it)")
    if found.lost_anchor_seq is not None:
        console.print(f"the lost database's audit chain reached event {found.lost_anchor_seq}; its anchor "
                      "is kept aside (audit-anchor/*.lost-*)")
    for need in found.needs:
        if not need.present:
            console.print(f"[yellow]missing[/]: {need.what} ({need.path}): {need.without}")
    console.print(f"next: `countycloud dr failover --to {found.site}` (the counties above that run at the "
                  "failed site)")
