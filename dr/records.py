"""What DR jobs read from and record in the inventory: the counties running at a site, fencing a VM,
and moving a county to the site it now serves from. Plain functions over one session each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from inventory import queries
from inventory.db import as_utc, session_scope
from inventory.enums import Lifecycle
from inventory.jobs import Job
from provisioning.records import plan_of
from provisioning.vmplan import VmPlan

ACTOR = "dr"
# Counties in these states have something at their site to recover.
RECOVERABLE = frozenset({Lifecycle.ACTIVE, Lifecycle.PROVISIONING, Lifecycle.FAILED})


@dataclass(frozen=True)
class RunningVm:
    """A county's VM as it runs at a site (what fencing and failover act on)."""

    tenant: str
    vm: str
    uuid: str
    status: Lifecycle


def running_at(engine: Engine, site: str) -> list[RunningVm]:
    """Every VM placed at `site` whose county runs there now and is not retired (fenced ones too:
    a rerun of a failover must find what it fenced)."""
    with session_scope(engine) as session:
        found = []
        for tenant in queries.list_tenants(session):
            if tenant.current_site.name != site or tenant.status not in RECOVERABLE:
                continue
            for vm in queries.vms_of(tenant):
                if vm.host is None or vm.host.site.name != site or vm.uuid is None:
                    continue
                if vm.status in (Lifecycle.RETIRED, Lifecycle.PLANNED):
                    continue
                found.append(RunningVm(tenant.slug, vm.name, vm.uuid, vm.status))
        return found


def county_slugs(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return [tenant.slug for tenant in queries.list_tenants(session)]


def county_plan(engine: Engine, tenant: str, site: str) -> VmPlan:
    """The county's one VM as it would run at `site` (its identity: name, UUID, ports, secret)."""
    with session_scope(engine) as session:
        vms = queries.vms_of(queries.get_tenant(session, tenant))
        if len(vms) != 1:
            raise RuntimeError(f"tenant {tenant}: {len(vms)} VMs; a failover restores a one-VM county's "
                               "database")
        return plan_of(vms[0], site)


def mark_fenced(engine: Engine, vm_name: str, note: str) -> None:
    """The VM sent no request through any address (its server kept disabled:
    provisioning.address.DISABLED) until it runs elsewhere."""
    with session_scope(engine) as session:
        queries.set_status(queries.get_vm(session, vm_name), Lifecycle.FENCED, actor=ACTOR, note=note)


def move_county(engine: Engine, tenant: str, site: str, note: str) -> None:
    """Record that the county's VM runs at `site` now: placed on a host there, active, and the county
    running there (None-ed when `site` is its home). Idempotent."""
    with session_scope(engine) as session:
        county = queries.get_tenant(session, tenant)
        target = queries.get_site(session, site)
        for vm in queries.vms_of(county):
            queries.place_vm(session, vm, target, actor=ACTOR)
            queries.set_status(vm, Lifecycle.ACTIVE, actor=ACTOR, note=note)
        queries.set_running_site(county, target, actor=ACTOR, note=note)


def gateway_port(engine: Engine, tenant: str) -> int:
    with session_scope(engine) as session:
        port = queries.get_tenant(session, tenant).gateway_port
    if port is None:
        raise RuntimeError(f"tenant {tenant} has no address port")
    return port


def current_site(engine: Engine, tenant: str) -> str:
    with session_scope(engine) as session:
        return queries.get_tenant(session, tenant).current_site.name


def submitted_at(engine: Engine, job_id: str) -> datetime | None:
    """When the job was asked for (None: no record of it, as for a job run outside the service)."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        return as_utc(job.created_at)
