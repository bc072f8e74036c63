"""What provisioning's jobs read from and record in the inventory: plans of VMs, the checks made
before anything is touched, placement, and status. Plain functions over one session each."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine

from inventory import queries
from inventory.db import session_scope
from inventory.enums import Lifecycle, ProtectionTier
from inventory.models import Vm
from provisioning import address
from provisioning.errors import ProvisioningError
from provisioning.gateway import Frontend
from provisioning.jobdata import Placed, VmTarget
from provisioning.spec import new_uuid
from provisioning.vmplan import REPLICA_PORT, VmPlan

ACTOR = "provisioning"


def plan_of(vm: Vm, site: str | None = None) -> VmPlan:
    if vm.uuid is None or vm.ssh_port is None or vm.app_port is None or vm.host is None:
        raise ProvisioningError(f"{vm.name}: not placed yet (no host, uuid or ports); rerun the job")
    return VmPlan(
        name=vm.name, uuid=vm.uuid, tenant=vm.tenant.slug, county_name=vm.tenant.name,
        site=site or vm.host.site.name, vcpus=vm.vcpus, memory_mib=vm.memory_mb,
        data_disk_mib=vm.data_disk_mb, ssh_port=vm.ssh_port, app_port=vm.app_port,
        app_secret=vm.tenant.app_secret,
        settings={str(k): str(v) for k, v in (vm.tenant.settings or {}).items()},
        replica_port=REPLICA_PORT if vm.tenant.protection is ProtectionTier.REPLICATED else None,
    )


def load_plan(engine: Engine, vm_name: str) -> VmPlan:
    with session_scope(engine) as session:
        return plan_of(queries.get_vm(session, vm_name))


def load_plans(engine: Engine, tenant: str) -> list[VmPlan]:
    with session_scope(engine) as session:
        return [plan_of(vm) for vm in queries.vms_of(queries.get_tenant(session, tenant))]


def vm_names(engine: Engine, tenant: str) -> list[str]:
    """Every VM of the tenant: provisioning a retired county brings all of them back."""
    with session_scope(engine) as session:
        return [vm.name for vm in queries.vms_of(queries.get_tenant(session, tenant))]


def current_site(engine: Engine, tenant: str) -> str:
    """Where the county runs: its home site, or the one it was failed over to."""
    with session_scope(engine) as session:
        return queries.get_tenant(session, tenant).current_site.name


def gateway_port(engine: Engine, tenant: str) -> int:
    with session_scope(engine) as session:
        port = queries.get_tenant(session, tenant).gateway_port
    if port is None:
        raise ProvisioningError(f"tenant {tenant} has no address port; apply the inventory first")
    return port


def check_provision(engine: Engine, tenant_slug: str) -> tuple[str, dict[str, list[tuple[str, int]]]]:
    """The inventory side of the provision check: the tenant may be provisioned, every VM has ports
    and fits a host (tried, then rolled back). Returns its site and each VM's forwards."""
    with session_scope(engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        if tenant.status is Lifecycle.RETIRING:
            raise ProvisioningError(
                f"tenant {tenant_slug} is being retired; finish that first "
                f"(`countycloud tenant retire {tenant_slug}`)")
        vms = queries.vms_of(tenant)
        if not vms:
            raise ProvisioningError(f"tenant {tenant_slug} declares no VMs")
        forwards_of: dict[str, list[tuple[str, int]]] = {}
        for vm in vms:
            if vm.ssh_port is None or vm.app_port is None:
                raise ProvisioningError(f"{vm.name} has no ports; apply the inventory first")
            forwards_of[vm.name] = [("ssh", vm.ssh_port), ("app", vm.app_port)]
            queries.place_vm(session, vm)  # NoHostFits explains per host; rolled back below
        if tenant.gateway_port is None:
            raise ProvisioningError(f"tenant {tenant_slug} has no address port; apply the inventory first")
        site = tenant.current_site.name
        session.rollback()  # the check decides nothing; `place` records
    return site, forwards_of


def place(engine: Engine, tenant_slug: str) -> Placed:
    """Choose hosts where the tenant runs and record each VM's identity (once)."""
    with session_scope(engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        queries.set_status(tenant, Lifecycle.PROVISIONING, actor=ACTOR)
        hosts, targets = {}, []
        for vm in queries.vms_of(tenant):
            host = queries.place_vm(session, vm)
            if vm.uuid is None or vm.mac is None:
                queries.record_vm_identity(vm, new_uuid(), _random_mac(), actor=ACTOR)
            if vm.status is not Lifecycle.ACTIVE:
                queries.set_status(vm, Lifecycle.PROVISIONING, actor=ACTOR)
            assert vm.app_port is not None  # the check step guarantees it
            hosts[vm.name] = host.name
            targets.append(VmTarget(name=vm.name, site=host.site.name, memory_mib=vm.memory_mb,
                                    vcpus=vm.vcpus, app_port=vm.app_port))
        return Placed(site=tenant.current_site.name, vms=tuple(targets), hosts=hosts)


def _random_mac() -> str:
    # 52:54:00 is QEMU's locally administered prefix.
    return "52:54:00:" + ":".join(f"{secrets.randbelow(256):02x}" for _ in range(3))


def frontends(engine: Engine) -> list[Frontend]:
    """Every tenant address as the inventory says it should be now."""
    with session_scope(engine) as session:
        return address.frontends(queries.list_tenants(session))


def record_size(engine: Engine, vm_name: str, vcpus: int, memory_mib: int) -> None:
    with session_scope(engine) as session:
        queries.record_vm_size(queries.get_vm(session, vm_name), vcpus, memory_mib, actor=ACTOR)


def mark_tenant(engine: Engine, tenant_slug: str, status: Lifecycle, *, with_vms: bool,
                release_hosts: bool = False) -> None:
    """Set the tenant's status (and its VMs', releasing their hosts when they are retired)."""
    with session_scope(engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        if with_vms:
            for vm in queries.vms_of(tenant):
                queries.set_status(vm, status, actor=ACTOR)
                if release_hosts:
                    queries.release_host(vm, actor=ACTOR, note=status.value)
        queries.set_status(tenant, status, actor=ACTOR)
        if status is Lifecycle.RETIRED and tenant.running_site is not None:
            # A retired county runs nowhere: created again, it comes up at its home. Kept, its backup
            # rounds took the site it had been failed over to for the one it runs at (2026-12-05).
            queries.set_running_site(tenant, None, actor=ACTOR, note="retired")


def tenant_status(engine: Engine, tenant_slug: str) -> Lifecycle:
    with session_scope(engine) as session:
        return queries.get_tenant(session, tenant_slug).status


def vm_site(engine: Engine, vm_name: str) -> str:
    """Where the VM is placed, else its tenant's home site."""
    with session_scope(engine) as session:
        vm = queries.get_vm(session, vm_name)
        return vm.host.site.name if vm.host else vm.tenant.current_site.name
