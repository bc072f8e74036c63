"""Which port each site's backup REST server listens on (pure).

A county's rounds copy to its offsite site's repository through that site's REST server. A county
at home copies to the secondary's; one failed over runs at the secondary and copies to the
primary's. On one machine both servers listen on 127.0.0.1 at once, so every site needs a port of
its own.

Each site gets `base + i` (the setting `backup_rest_port`, 23000 by default), i its place in the
order secondary-role sites first, then primary-role ones, by name within a role: the secondary
keeps the single port it always had, the primary takes the next (23001). A site named in the
settings' map (`backup_rest_ports`) takes the port given there instead. `problems` says what is
wrong with the result, one line each, before anything is started.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from inventory.enums import SiteRole

# Kept for backup REST servers: one per site that receives copies (docs/backup.md, "Ports").
KEPT = range(23000, 23010)
UNPRIVILEGED = range(1024, 65536)


@dataclass(frozen=True)
class SitePlace:
    """What decides a site's derived port: its name and role."""

    name: str
    role: SiteRole


@dataclass(frozen=True)
class Reserved:
    """A port range held by something else on this machine (guests, the gateway, the replica target)."""

    first: int
    last: int
    what: str

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


def site_order(sites: Iterable[SitePlace]) -> list[SitePlace]:
    """Secondary-role sites first, then primary-role ones; by name within a role."""
    return sorted(sites, key=lambda site: (site.role is SiteRole.PRIMARY, site.name))


def rest_ports(sites: Iterable[SitePlace], base: int, declared: Mapping[str, int]) -> dict[str, int]:
    """Each site's REST port: the one declared for it, else `base` + its place in `site_order`."""
    return {site.name: declared.get(site.name, base + place) for place, site in enumerate(site_order(sites))}


def port_of(ports: Mapping[str, int], site: str) -> int:
    if site not in ports:
        raise KeyError(f"no backup REST port for site {site!r} (sites with one: {', '.join(sorted(ports))})")
    return ports[site]


def problems(ports: Mapping[str, int], *, declared: Collection[str] = (), sites: Collection[str] = (),
             reserved: Sequence[Reserved] = (), ephemeral: range | None = None) -> list[str]:
    """What is wrong with these ports, one line each a user can act on (empty: nothing)."""
    said = [f"backup_rest_ports names site {name!r}, which is not a declared site"
            f" ({', '.join(sorted(sites))})" for name in sorted(declared) if sites and name not in sites]
    by_port: dict[int, list[str]] = {}
    for site, port in sorted(ports.items()):
        by_port.setdefault(port, []).append(site)
        if port not in UNPRIVILEGED:
            said.append(f"site {site}'s backup REST port {port} is not an unprivileged port (1024-65535)")
            continue
        if ephemeral is not None and port in ephemeral:
            said.append(f"site {site}'s backup REST port {port} is in Linux's ephemeral ports "
                        f"{ephemeral.start}-{ephemeral.stop - 1}: outgoing connections could take it")
        said += [f"site {site}'s backup REST port {port} is in the {held.what} ({held.first}-{held.last})"
                 for held in reserved if port in held]
    said += [f"sites {' and '.join(names)} have the same backup REST port {port}: each site's server "
             "needs its own (set backup_rest_ports)"
             for port, names in sorted(by_port.items()) if len(names) > 1]
    return said
