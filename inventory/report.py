"""A read-only picture of the whole inventory (for `countycloud inventory show`, the API, the console).

Plain dataclasses: capacity used/total per host, every tenant and VM with its ports. `to_dict` gives
the JSON form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from inventory import queries


@dataclass(frozen=True)
class SiteRow:
    name: str
    role: str
    status: str
    hosts: int


@dataclass(frozen=True)
class HostRow:
    name: str
    site: str
    vms: int
    vcpus_used: int
    vcpus_total: int
    memory_mb_used: int
    memory_mb_total: int
    disk_mb_used: int
    disk_mb_total: int


@dataclass(frozen=True)
class TenantRow:
    slug: str
    name: str
    status: str
    site: str
    # Where it runs when that is not its declared home (after a failover).
    running_site: str | None
    network: str
    image: str
    gateway_port: int | None
    vms: int
    protection: str = "backup"  # its protection tier (backup, replicated)


@dataclass(frozen=True)
class VmRow:
    name: str
    tenant: str
    role: str
    size: str
    status: str
    vcpus: int
    memory_mb: int
    host: str | None
    ssh_port: int | None
    app_port: int | None
    needs_resize: bool


@dataclass(frozen=True)
class InventoryView:
    sites: list[SiteRow]
    hosts: list[HostRow]
    tenants: list[TenantRow]
    vms: list[VmRow]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot(session: Session) -> InventoryView:
    sites = queries.list_sites(session)
    hosts: list[HostRow] = []
    for site in sites:
        for load in queries.host_loads(session, site):
            hosts.append(
                HostRow(
                    name=load.name,
                    site=site.name,
                    vms=len(queries.get_host(session, load.name).vms),
                    vcpus_used=load.used_vcpus,
                    vcpus_total=load.vcpu_capacity,
                    memory_mb_used=load.used_memory_mb,
                    memory_mb_total=load.memory_capacity_mb,
                    disk_mb_used=load.used_disk_mb,
                    disk_mb_total=load.disk_capacity_mb,
                )
            )
    tenants = [
        TenantRow(
            slug=t.slug,
            name=t.name,
            status=t.status.value,
            site=t.home_site.name,
            running_site=t.running_site.name if t.running_site else None,
            network=t.network.name,
            image=t.image.name,
            gateway_port=t.gateway_port,
            vms=len(t.vms),
            protection=t.protection.value,
        )
        for t in queries.list_tenants(session)
    ]
    vms = [
        VmRow(
            name=vm.name,
            tenant=vm.tenant.slug,
            role=vm.role.value,
            size=vm.size.name,
            status=vm.status.value,
            vcpus=vm.vcpus,
            memory_mb=vm.memory_mb,
            host=vm.host.name if vm.host else None,
            ssh_port=vm.ssh_port,
            app_port=vm.app_port,
            needs_resize=vm.needs_resize,
        )
        for vm in queries.list_vms(session)
    ]
    site_rows = [SiteRow(s.name, s.role.value, s.status.value, len(s.hosts)) for s in sites]
    return InventoryView(sites=site_rows, hosts=hosts, tenants=tenants, vms=vms)
