"""`countycloud site list | start NAME | stop NAME`: the site daemons (stop is a real outage)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from controlplane import bootstrap
from controlplane.cli.common import EXIT_USAGE, console, errors, user_errors
from inventory.db import session_scope
from inventory.enums import SiteStatus
from inventory.queries import get_site, list_sites
from provisioning import sites

site_app = typer.Typer(no_args_is_help=True, help="The two sites: list, start, stop (an outage).")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(site_app, name="site")


def _known(name: str) -> None:
    if name not in bootstrap.site_names():
        errors.print(f"unknown site {name!r}; sites: {', '.join(bootstrap.site_names())}")
        raise typer.Exit(EXIT_USAGE)


def _record(name: str, state: sites.SiteState) -> None:
    """Mirror the daemons' state into the inventory's site status (journaled)."""
    with session_scope(bootstrap.engine()) as session:
        declared = {site.name for site in list_sites(session)}
        if name in declared:
            from inventory.queries import set_status

            status = SiteStatus.UP if state is sites.SiteState.UP else SiteStatus.DOWN
            set_status(get_site(session, name), status, actor="cli:site")


@site_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Each site with its daemon state, socket and the VMs libvirt runs there."""
    rows: list[dict[str, Any]] = []
    for name in bootstrap.site_names():
        paths = bootstrap.platform().site(name)
        state = sites.state(paths)
        domains: list[str] = []
        if state is sites.SiteState.UP:
            with user_errors(), bootstrap.platform().hypervisor(name) as hv:
                domains = hv.names()
        rows.append({"site": name, "state": state.value, "uri": paths.uri, "domains": domains})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("site", "state", "domains", "libvirt URI")
    for row in rows:
        colour = "green" if row["state"] == "up" else "red"
        table.add_row(row["site"], f"[{colour}]{row['state']}[/]", str(len(row["domains"])), row["uri"])
    console.print(table)


@site_app.command("start")
def start_command(name: str) -> None:
    """Start the site's libvirtd + virtlogd (idempotent)."""
    _known(name)
    with user_errors():
        sites.start(bootstrap.platform().site(name))
        _record(name, sites.SiteState.UP)
    console.print(f"site {name}: [green]up[/]")


@site_app.command("stop")
def stop_command(name: str, as_json: JsonOption = False) -> None:
    """Site outage: kill -9 the site's daemons and every QEMU process it runs."""
    _known(name)
    with user_errors():
        # When the outage began, for whoever measures a failover's RTO from it: this command's own
        # start (its imports) takes 1-2 s before the kill.
        at = time.time()
        killed = sites.stop(bootstrap.platform().site(name))
        _record(name, sites.SiteState.DOWN)
    if as_json:
        console.print_json(json.dumps({"site": name, "state": sites.SiteState.DOWN.value,
                                       "killed": len(killed), "at": at}))
        return
    console.print(f"site {name}: [red]down[/] ({len(killed)} process(es) killed)")
