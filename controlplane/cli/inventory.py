"""`countycloud inventory plan [FILE] | apply [FILE] | show`: the declared inventory and its state.

FILE defaults to the embedded demo.yaml. Exit codes scripts can trust: 0 done (or nothing to do),
2 the declaration is invalid (each problem printed as FILE:LINE: message, no traceback), 1 anything
else (a refused change, ports exhausted, the database unreachable).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from inventory.db import session_scope
from inventory.declare import ApplyRefused, Change, apply, plan
from inventory.enums import ChangeAction
from inventory.loader import DeclarationError, load_file, sample_path
from inventory.placement import NoHostFits
from inventory.ports import PortRanges, PortsExhausted
from inventory.report import snapshot
from inventory.schemas import Declaration

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

inventory_app = typer.Typer(
    no_args_is_help=True, help="The inventory: plan and apply a declaration, show its state."
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # one problem per line, greppable by scripts

ACTION_STYLE = {ChangeAction.ADD: "green", ChangeAction.CHANGE: "yellow", ChangeAction.REMOVE: "red"}
ACTION_MARK = {ChangeAction.ADD: "+", ChangeAction.CHANGE: "~", ChangeAction.REMOVE: "-"}

FileArgument = Annotated[
    Path | None,
    typer.Argument(help="The declaration (YAML). Default: the embedded demo inventory.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    app.add_typer(inventory_app, name="inventory")


# --- wiring --------------------------------------------------------------------------------------


def _engine() -> Engine:
    from controlplane import bootstrap

    return bootstrap.engine()


def _port_ranges() -> PortRanges:
    from controlplane import inventory_ops

    return inventory_ops.port_ranges()


def _declaration(file: Path | None) -> Declaration:
    try:
        return load_file(file if file is not None else sample_path())
    except DeclarationError as error:
        for line in error.lines():
            errors.print(line, markup=False, highlight=False)
        errors.print(f"{len(error.problems)} problem(s); nothing was changed.", style="red")
        raise typer.Exit(EXIT_INVALID) from None


@contextmanager
def _failures() -> Iterator[None]:
    """Turn the failures a user can act on into a message and exit code 1, never a traceback."""
    try:
        yield
    except (ApplyRefused, PortsExhausted, NoHostFits) as error:
        errors.print(str(error), markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except SQLAlchemyError as error:
        errors.print(f"the platform database failed: {error}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None


def _refuse_backup_ports(declaration: Declaration) -> None:
    """Sites whose backup REST servers could not all listen: said, nothing changed (exit 1)."""
    from controlplane import inventory_ops

    found = inventory_ops.backup_port_problems(declaration)
    if found:
        for line in found:
            errors.print(line, markup=False, highlight=False)
        errors.print("settings COUNTYCLOUD_BACKUP_REST_PORT, COUNTYCLOUD_BACKUP_REST_PORTS; "
                     "nothing was changed.", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


# --- output --------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _details(change: Change) -> str:
    if change.action is ChangeAction.CHANGE:
        return "\n".join(f"{d.field}: {_value(d.before)} → {_value(d.after)}" for d in change.diffs)
    if change.action is ChangeAction.ADD:
        return ", ".join(f"{d.field}={_value(d.after)}" for d in change.diffs)
    return ""


def _running_elsewhere(session: Any) -> dict[str, dict[str, str]]:
    """Counties that run away from their declared home (after a failover): not a change to apply."""
    return {t.slug: {"home": t.site, "running_at": t.running_site}
            for t in snapshot(session).tenants if t.running_site}


def _print_changes(changes: list[Change], as_json: bool, *, applied: bool, source: str,
                   elsewhere: dict[str, dict[str, str]]) -> None:
    if as_json:
        print(json.dumps({"source": source, "applied": applied, "changes": [c.to_dict() for c in changes],
                          "running_elsewhere": elsewhere}, ensure_ascii=False, indent=2))
        return
    for slug, where in elsewhere.items():
        console.print(f"{slug}: running at {where['running_at']} after failover (declared home "
                      f"{where['home']}); failback returns it")
    if not changes:
        console.print(f"{source}: no changes; the inventory matches the declaration.")
        return
    table = Table("", "kind", "name", "details", title=f"{source}: {len(changes)} change(s)")
    for change in changes:
        style = ACTION_STYLE[change.action]
        table.add_row(f"[{style}]{ACTION_MARK[change.action]}[/]", change.kind.value,
                      f"[{style}]{change.name}[/]", _details(change))
    console.print(table)
    added, changed, removed = (sum(1 for c in changes if c.action is action) for action in ChangeAction)
    if applied:
        console.print(f"{added} added, {changed} changed, {removed} removed.")
    else:
        console.print(f"{added} to add, {changed} to change, {removed} to remove; run `apply` to make it so.")


# --- commands ------------------------------------------------------------------------------------


@inventory_app.command("plan")
def plan_command(file: FileArgument = None, as_json: JsonOption = False) -> None:
    """Show what `apply` would change. Changes nothing."""
    declaration = _declaration(file)
    _refuse_backup_ports(declaration)
    source = str(file) if file is not None else "demo.yaml (embedded)"
    with _failures(), session_scope(_engine()) as session:
        changes = plan(session, declaration)
        elsewhere = _running_elsewhere(session)
    _print_changes(changes, as_json, applied=False, source=source, elsewhere=elsewhere)


@inventory_app.command("apply")
def apply_command(file: FileArgument = None, as_json: JsonOption = False) -> None:
    """Make the inventory match the declaration: add, change, remove; allocate ports. Journaled."""
    declaration = _declaration(file)
    _refuse_backup_ports(declaration)
    source = str(file) if file is not None else "demo.yaml (embedded)"
    with _failures(), session_scope(_engine()) as session:
        changes = apply(session, declaration, actor=_actor(), ports=_port_ranges())
        elsewhere = _running_elsewhere(session)
    _print_changes(changes, as_json, applied=True, source=source, elsewhere=elsewhere)


@inventory_app.command("show")
def show_command(as_json: JsonOption = False) -> None:
    """Sites, hosts (capacity used / total), tenants and VMs with their ports."""
    with _failures(), session_scope(_engine()) as session:
        view = snapshot(session)
    if as_json:
        print(json.dumps(view.to_dict(), ensure_ascii=False, indent=2))
        return
    sites = Table("site", "role", "status", "hosts", title="Sites")
    for s in view.sites:
        sites.add_row(s.name, s.role, s.status, str(s.hosts))
    hosts = Table("host", "site", "VMs", "vCPU", "memory MB", "disk MB", title="Hosts (used / total)")
    for h in view.hosts:
        hosts.add_row(h.name, h.site, str(h.vms), f"{h.vcpus_used} / {h.vcpus_total}",
                      f"{h.memory_mb_used} / {h.memory_mb_total}", f"{h.disk_mb_used} / {h.disk_mb_total}")
    tenants = Table("tenant", "name", "status", "site", "running at", "address port", "VMs", "protection",
                    title="Tenants")
    for t in view.tenants:
        tenants.add_row(t.slug, t.name, t.status, t.site, _value(t.running_site), _value(t.gateway_port),
                        str(t.vms), t.protection)
    vms = Table("VM", "role", "size", "status", "vCPU", "MB", "host", "ssh", "app", title="VMs")
    for v in view.vms:
        size = f"{v.size} (resize due)" if v.needs_resize else v.size
        vms.add_row(v.name, v.role, size, v.status, str(v.vcpus), str(v.memory_mb), _value(v.host),
                    _value(v.ssh_port), _value(v.app_port))
    for table in (sites, hosts, tenants, vms):
        console.print(table)
