"""Inventory plan and apply over a YAML text, for the use cases (the API and the console send the
declaration itself; the CLI reads it from a file and calls the same functions)."""

from __future__ import annotations

from typing import Any

from controlplane import bootstrap
from controlplane.errors import InvalidInput
from inventory.db import session_scope
from inventory.declare import apply as apply_declaration
from inventory.declare import plan as plan_declaration
from inventory.loader import DeclarationError, load_text
from inventory.ports import PortRange, PortRanges
from inventory.schemas import Declaration

# A declaration of 13 counties is ~5 KB and of hundreds ~200 KB; anything far larger is a mistake.
MAX_DECLARATION_BYTES = 2_000_000


def port_ranges() -> PortRanges:
    settings = bootstrap.settings()
    return PortRanges(
        guest=PortRange(settings.guest_port_first, settings.guest_port_last, "guest ports"),
        gateway=PortRange(settings.gateway_port_first, settings.gateway_port_last, "gateway ports"),
    )


def backup_port_problems(wanted: Declaration) -> list[str]:
    """The declared sites' backup REST ports under the settings (backup/restports.py): each site's
    server needs a port of its own, clear of the guests', the gateway's and the ephemeral ports."""
    from backup.restports import SitePlace

    places = [SitePlace(site.name, site.role) for site in wanted.sites]
    return bootstrap.backup_port_problems(places or bootstrap.declared_site_places())


def check_backup_ports(wanted: Declaration) -> None:
    found = backup_port_problems(wanted)
    if found:
        raise InvalidInput("\n".join([*found, "(settings COUNTYCLOUD_BACKUP_REST_PORT, "
                                       "COUNTYCLOUD_BACKUP_REST_PORTS); nothing was changed"]))


def declaration(yaml_text: str, source: str = "<request>") -> Declaration:
    if len(yaml_text.encode()) > MAX_DECLARATION_BYTES:
        raise InvalidInput(f"the declaration is over {MAX_DECLARATION_BYTES} bytes")
    try:
        return load_text(yaml_text, source=source)
    except DeclarationError as error:
        raise InvalidInput("\n".join(error.lines())) from None


def plan(yaml_text: str) -> dict[str, Any]:
    wanted = declaration(yaml_text)
    check_backup_ports(wanted)
    with session_scope(bootstrap.engine()) as session:
        changes = plan_declaration(session, wanted)
    return {"applied": False, "changes": [change.to_dict() for change in changes]}


def apply(yaml_text: str, *, actor: str) -> dict[str, Any]:
    wanted = declaration(yaml_text)
    check_backup_ports(wanted)
    with session_scope(bootstrap.engine()) as session:
        changes = apply_declaration(session, wanted, actor=actor, ports=port_ranges())
    return {"applied": True, "changes": [change.to_dict() for change in changes]}
