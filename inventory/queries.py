"""The inventory's public API for the other packages: look things up, record what happened.

Plain functions over a session. Every write is journaled in the same transaction. Callers own the
transaction (`inventory.db.session_scope`).
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from functools import cache
from typing import Any

from sqlalchemy import Integer, Select, String, bindparam, func, select, type_coerce, update
from sqlalchemy.orm import Session, aliased, object_session, selectinload

from inventory import journal
from inventory.enums import RELEASED, ChangeAction, Lifecycle, ObjectKind, ProtectionTier, SiteStatus
from inventory.errors import InventoryError
from inventory.models import Host, ProtectionTierRow, Site, Tenant, Vm
from inventory.placement import HostLoad, Need, choose_host
from inventory.schemas import DEFAULT_TIERS


class NotFound(InventoryError, LookupError):
    """An inventory object that does not exist; the message says what exists instead."""


class SiteNotFound(NotFound):
    pass


class HostNotFound(NotFound):
    pass


class TenantNotFound(NotFound):
    pass


class VmNotFound(NotFound):
    pass


def _not_found(kind: str, name: str, known: list[str]) -> str:
    close = get_close_matches(name, known, n=3)
    if close:
        return f"no {kind} '{name}'; did you mean {' or '.join(repr(c) for c in close)}?"
    if known:
        more = ", ..." if len(known) > 20 else ""
        return f"no {kind} '{name}' (known: {', '.join(sorted(known)[:20])}{more})"
    return f"no {kind} '{name}': the inventory has none (apply a declaration first)"


# --- reads ---------------------------------------------------------------------------------------


def list_sites(session: Session, *, with_hosts: bool = False) -> list[Site]:
    query = select(Site).order_by(Site.name)
    return list(session.scalars(query.options(selectinload(Site.hosts)) if with_hosts else query))


def tenants_per_site(session: Session) -> dict[str, int]:
    """How many counties each site is home to."""
    query = (select(Site.name, func.count(Tenant.id)).join(Tenant, Tenant.home_site_id == Site.id)
             .group_by(Site.name))
    return {name: count for name, count in session.execute(query)}


def get_site(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise SiteNotFound(_not_found("site", name, list(session.scalars(select(Site.name)))))
    return site


def list_hosts(session: Session, site: Site | None = None) -> list[Host]:
    query = select(Host).order_by(Host.name)
    if site is not None:
        query = query.where(Host.site_id == site.id)
    return list(session.scalars(query))


def get_host(session: Session, name: str) -> Host:
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise HostNotFound(_not_found("host", name, list(session.scalars(select(Host.name)))))
    return host


def list_tenants(session: Session, status: Lifecycle | None = None) -> list[Tenant]:
    # Their site, VMs and the VMs' hosts come in three more queries, not three per tenant: the API
    # and the console list 1000 counties with all of them.
    query = select(Tenant).order_by(Tenant.slug).options(
        selectinload(Tenant.home_site), selectinload(Tenant.vms).selectinload(Vm.host).selectinload(Host.site)
    )
    if status is not None:
        query = query.where(Tenant.status == status)
    return list(session.scalars(query))


def get_tenant(session: Session, slug: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise TenantNotFound(_not_found("tenant", slug, list(session.scalars(select(Tenant.slug)))))
    return tenant


@dataclass(frozen=True)
class TierSettings:
    """A protection tier's backup interval and retention counts (None: not a rule)."""

    tier: ProtectionTier
    interval_s: int
    keep_last: int | None
    keep_hourly: int | None
    keep_daily: int | None
    keep_monthly: int | None


def protection_tiers(session: Session) -> dict[ProtectionTier, TierSettings]:
    """Every tier's settings as applied from the declaration; a tier never applied (a database no
    declaration was applied to since tiers exist) has the defaults."""
    tiers = {}
    for tier, declared in DEFAULT_TIERS.items():
        keeps = declared.retention.counts()
        tiers[tier] = TierSettings(tier, declared.interval_s, *keeps)
    for row in session.scalars(select(ProtectionTierRow)):
        tiers[row.name] = TierSettings(row.name, row.interval_s, row.keep_last, row.keep_hourly,
                                       row.keep_daily, row.keep_monthly)
    return tiers


def protection_of(session: Session, slug: str) -> TierSettings:
    """The settings of the county's protection tier."""
    return protection_tiers(session)[get_tenant(session, slug).protection]


def vms_of(tenant: Tenant) -> list[Vm]:
    return sorted(tenant.vms, key=lambda vm: vm.name)


def list_vms(session: Session, site: Site | None = None, status: Lifecycle | None = None) -> list[Vm]:
    """All VMs, or those placed at `site`, or those in `status`."""
    query = select(Vm).order_by(Vm.name)
    if site is not None:
        query = query.join(Host, Vm.host_id == Host.id).where(Host.site_id == site.id)
    if status is not None:
        query = query.where(Vm.status == status)
    return list(session.scalars(query))


def get_vm(session: Session, name: str) -> Vm:
    vm = session.scalar(select(Vm).where(Vm.name == name))
    if vm is None:
        raise VmNotFound(_not_found("VM", name, list(session.scalars(select(Vm.name)))))
    return vm


def used_ports(session: Session) -> set[int]:
    """Every host port the inventory has handed out (guests' forwards and tenants' addresses)."""
    used: set[int] = set()
    for ssh_port, app_port in session.execute(select(Vm.ssh_port, Vm.app_port)):
        used.update(port for port in (ssh_port, app_port) if port is not None)
    used.update(port for port in session.scalars(select(Tenant.gateway_port)) if port is not None)
    return used


def host_loads(session: Session, site: Site) -> list[HostLoad]:
    """Each host of `site` with the capacity its placed, not yet retired VMs take."""
    loads = []
    for host in list_hosts(session, site):
        holding = [vm for vm in host.vms if vm.status not in RELEASED]
        loads.append(
            HostLoad(
                name=host.name,
                vcpus=host.vcpus,
                memory_mb=host.memory_mb,
                disk_gb=host.disk_gb,
                cpu_ratio=host.cpu_allocation_ratio,
                ram_ratio=host.ram_allocation_ratio,
                used_vcpus=sum(vm.vcpus for vm in holding),
                used_memory_mb=sum(vm.memory_mb for vm in holding),
                used_disk_mb=sum(vm.data_disk_mb for vm in holding),
            )
        )
    return loads


def lock_placement(session: Session, site: Site) -> None:
    """Serialise placements at `site` until this transaction ends: two placements that both read the
    hosts' loads before either records its choice would overcommit a host. A no-op write to the
    site's row takes PostgreSQL's row lock and SQLite's write lock, before the loads are read."""
    session.execute(update(Site).where(Site.id == site.id).values(name=Site.name))


# --- writes (journaled) --------------------------------------------------------------------------


def _session_of(obj: object) -> Session:
    session = object_session(obj)
    if session is None:
        raise RuntimeError(f"{obj!r} is not attached to a session")
    return session


def set_status(
    obj: Tenant | Vm | Site, status: Lifecycle | SiteStatus, *, actor: str, note: str = ""
) -> None:
    """Change a tenant's or VM's lifecycle status, or a site's up/down status, and journal it."""
    if isinstance(obj, Site) != isinstance(status, SiteStatus):
        raise TypeError(f"{status!r} is not a status for {obj!r}")
    session = _session_of(obj)
    before = obj.status
    if before == status:
        return
    obj.status = status  # the isinstance check above pairs the types
    kind, name = _identity(obj)
    journal.record(
        session, actor=actor, kind=kind, name=name, action=ChangeAction.CHANGE,
        before={"status": before}, after={"status": status}, note=note,
    )


def _identity(obj: Tenant | Vm | Site | Host) -> tuple[ObjectKind, str]:
    if isinstance(obj, Tenant):
        return ObjectKind.TENANT, obj.slug
    if isinstance(obj, Vm):
        return ObjectKind.VM, obj.name
    if isinstance(obj, Host):
        return ObjectKind.HOST, obj.name
    return ObjectKind.SITE, obj.name


def place_vm(session: Session, vm: Vm, site: Site | None = None, *, actor: str = "placement") -> Host:
    """Choose a host for `vm` at `site` (default: its tenant's home site), record it, return it.

    A VM already on a host of that site stays there. NoHostFits (from inventory.placement) says per
    host why nothing fits; nothing is recorded then.
    """
    site = site or vm.tenant.current_site
    if vm.host is not None and vm.host.site_id == site.id:
        return vm.host
    lock_placement(session, site)
    loads = host_loads(session, site)
    chosen = choose_host(vm.name, Need(vm.vcpus, vm.memory_mb, vm.data_disk_mb), loads)
    host = get_host(session, chosen.name)
    before = vm.host.name if vm.host is not None else None
    vm.host = host
    journal.record(
        session, actor=actor, kind=ObjectKind.VM, name=vm.name, action=ChangeAction.CHANGE,
        before={"host": before}, after={"host": host.name}, note=f"placed at site {site.name}",
    )
    session.flush()
    return host


def set_running_site(tenant: Tenant, site: Site | None, *, actor: str, note: str = "") -> None:
    """Record where the county runs now (None: back at its home site); journaled."""
    running = None if site is None or site.id == tenant.home_site_id else site
    before = tenant.running_site.name if tenant.running_site else None
    after = running.name if running else None
    if before == after:
        return
    tenant.running_site = running
    journal.record(
        _session_of(tenant), actor=actor, kind=ObjectKind.TENANT, name=tenant.slug,
        action=ChangeAction.CHANGE, before={"running_site": before}, after={"running_site": after}, note=note,
    )


def release_host(vm: Vm, *, actor: str, note: str = "") -> None:
    """Forget where `vm` runs (e.g. after retiring it or failing it over); journaled."""
    if vm.host is None:
        return
    session = _session_of(vm)
    before = vm.host.name
    vm.host = None
    journal.record(
        session, actor=actor, kind=ObjectKind.VM, name=vm.name, action=ChangeAction.CHANGE,
        before={"host": before}, after={"host": None}, note=note,
    )


def record_vm_identity(vm: Vm, uuid: str, mac: str, *, actor: str = "provisioning") -> None:
    """Record the libvirt UUID and MAC address that provisioning gave the VM; journaled."""
    before = {"uuid": vm.uuid, "mac": vm.mac}
    if before == {"uuid": uuid, "mac": mac}:
        return
    vm.uuid, vm.mac = uuid, mac
    journal.record(
        _session_of(vm), actor=actor, kind=ObjectKind.VM, name=vm.name, action=ChangeAction.CHANGE,
        before=before, after={"uuid": uuid, "mac": mac},
    )


def record_vm_size(
    vm: Vm, vcpus: int, memory_mb: int, *, actor: str = "provisioning", note: str = ""
) -> None:
    """Record the size a VM really has after a (live) resize; journaled."""
    before = {"vcpus": vm.vcpus, "memory_mb": vm.memory_mb}
    if before == {"vcpus": vcpus, "memory_mb": memory_mb}:
        return
    vm.vcpus, vm.memory_mb = vcpus, memory_mb
    journal.record(
        _session_of(vm), actor=actor, kind=ObjectKind.VM, name=vm.name, action=ChangeAction.CHANGE,
        before=before, after={"vcpus": vcpus, "memory_mb": memory_mb}, note=note,
    )


def tenant_rows(session: Session, slugs: list[str] | None = None, *, limit: int | None = None,
                after: str | None = None) -> list[dict[str, object]]:
    """Every tenant (or those named) as plain rows with their VMs, in one query read as plain strings:
    through ORM objects a thousand counties took a second, and converting each status to its enum
    and back to text was most of what remained. `limit` counties after the slug `after`: a page.
    """
    query = _tenant_rows_query(slugs is not None, after is not None, limit is not None)
    values: dict[str, object] = {"slugs": slugs, "after": after, "limit": limit}
    result = session.connection().execute(query, {k: v for k, v in values.items() if v is not None})
    rows: list[dict[str, object]] = []
    vms: list[dict[str, object]] = []
    last = None
    # Unpacked as plain tuples, fetched at once: per-row attribute access was a third of the time.
    for (slug, name, status, gateway_port, site, running_site, vm, role, vm_status, vcpus, memory_mb,
         ssh_port, app_port, host, vm_host_site) in result.fetchall():
        if slug != last:
            last, vms = slug, []
            rows.append({"tenant": slug, "name": name, "status": status, "site": site,
                         "running_site": running_site,
                         "address": f"http://127.0.0.1:{gateway_port}/" if gateway_port else None,
                         "vms": vms})
        if vm is not None:
            vms.append({"name": vm, "role": role, "status": vm_status, "vcpus": vcpus, "memory_mb": memory_mb,
                        "host": host, "site": vm_host_site, "ssh_port": ssh_port, "app_port": app_port})
    return rows


@cache
def _tenant_rows_query(by_slugs: bool, by_after: bool, by_limit: bool) -> Select[Any]:
    """tenant_rows' statement, built once for each combination of filters (values are bound): building
    it took most of the time of reading one county."""
    home, running, vm_site = aliased(Site), aliased(Site), aliased(Site)

    def text_of(column: Any) -> Any:  # the stored value as it is, without the enum round trip
        return type_coerce(column, String)

    query = (select(Tenant.slug, Tenant.name, text_of(Tenant.status).label("status"), Tenant.gateway_port,
                    home.name.label("site"), running.name.label("running_site"),
                    Vm.name.label("vm"), text_of(Vm.role).label("role"),
                    text_of(Vm.status).label("vm_status"),
                    Vm.vcpus, Vm.memory_mb, Vm.ssh_port, Vm.app_port, Host.name.label("host"),
                    vm_site.name.label("vm_site"))
             .join(home, Tenant.home_site_id == home.id)
             .outerjoin(running, Tenant.running_site_id == running.id)
             .outerjoin(Vm, Vm.tenant_id == Tenant.id)
             .outerjoin(Host, Vm.host_id == Host.id).outerjoin(vm_site, Host.site_id == vm_site.id)
             .order_by(Tenant.slug, Vm.name))
    wanted = select(Tenant.slug)
    if by_slugs:
        wanted = wanted.where(Tenant.slug.in_(bindparam("slugs", expanding=True)))
    if by_after:
        wanted = wanted.where(Tenant.slug > bindparam("after", type_=String))
    if by_limit:  # a page of counties, not of joined rows
        wanted = wanted.order_by(Tenant.slug).limit(bindparam("limit", type_=Integer))
    if by_slugs or by_after or by_limit:
        query = query.where(Tenant.slug.in_(wanted.scalar_subquery()))
    return query
