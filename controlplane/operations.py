"""The use cases: what the CLI, the API and the console may ask of the platform, and the one place
that holds their rules (who may, what is valid, what is recorded).

Every use case takes the Actor asking, checks the role matrix (and a county actor's scope), validates
everything before touching anything, records an audit event for each change, and then either
submits the job (returns its id at once; the service's workers run it) or runs it here and waits.
Entry points translate the errors with controlplane.errors.classify.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError

from controlplane import audit, bootstrap, county_view, inventory_ops, jobs
from controlplane.actors import Actor
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFoundError
from controlplane.roles import Action, Role, allows
from inventory import queries
from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.jobs import JobKind, JobStatus
from inventory.models import Tenant
from provisioning import records, steps
from provisioning.errors import ProvisioningError
from provisioning.jobdata import (
    ConfigureArgs,
    JobArgs,
    ProvisionArgs,
    ResizeArgs,
    ResizeAsked,
    RetireArgs,
)

# VM statuses in which a running VM can be acted on (resize, configure, exec).
ACTIONABLE = frozenset({Lifecycle.ACTIVE, Lifecycle.PROVISIONING})
# Jobs that a retire makes pointless: left unfinished, a later create would resume them.
CANCELLED_BY_RETIRE = frozenset({JobKind.PROVISION, JobKind.CONFIGURE})


@dataclass(frozen=True)
class JobRef:
    id: str
    kind: JobKind
    target: str


@dataclass(frozen=True)
class JobRequest:
    """A validated request for a job: nothing has happened yet."""

    actor: Actor
    action: Action
    kind: JobKind
    target: str
    args: dict[str, Any]
    # Unfinished jobs to cancel before this one starts (e.g. a county's provision, when retiring it).
    cancel_first: tuple[str, ...] = field(default=())
    # The site the job acts at: its queue there bounds how many jobs run at that site at once.
    site: str | None = None


# --- authorisation ---------------------------------------------------------------------------

def authorize(actor: Actor, action: Action, *, tenant: str | None = None) -> None:
    if not allows(actor.role, action):
        raise Forbidden(f"{actor.describe()} ({actor.role.value}) may not {action.value}")
    if actor.role is Role.COUNTY and tenant != actor.tenant:
        raise Forbidden(f"{actor.describe()} may only see county {actor.tenant}")


def _visible(actor: Actor, tenant: str) -> bool:
    return actor.role is not Role.COUNTY or actor.tenant == tenant


def _args(model: type[JobArgs], **values: Any) -> dict[str, Any]:
    try:
        return model.model_validate(values).model_dump()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidInput(problems) from None


# --- reading -----------------------------------------------------------------------------------

def _get_tenant(session: Any, slug: str) -> Tenant:
    try:
        return queries.get_tenant(session, slug)
    except queries.NotFound as error:
        raise NotFoundError(str(error)) from None


def list_sites(actor: Actor) -> list[dict[str, Any]]:
    authorize(actor, Action.READ)  # the platform's own layout: not a county's to see
    from provisioning import sites

    platform = bootstrap.platform()
    with session_scope(platform.engine) as session:
        declared = {site.name: site for site in queries.list_sites(session, with_hosts=True)}
        counties = queries.tenants_per_site(session)
        rows = []
        for name in declared or bootstrap.DEFAULT_SITES:
            site = declared.get(name)
            rows.append({
                "site": name, "role": site.role.value if site else None,
                "state": sites.state(platform.site(name)).value,
                "hosts": [host.name for host in site.hosts] if site else [],
                "counties": counties.get(name, 0),
            })
    return rows


def list_hosts(actor: Actor) -> list[dict[str, Any]]:
    authorize(actor, Action.READ)
    with session_scope(bootstrap.engine()) as session:
        return [
            {"host": host.name, "site": host.site.name, "vcpus": host.vcpus, "memory_mb": host.memory_mb,
             "disk_gb": host.disk_gb,
             "vms": sorted(vm.name for vm in host.vms)}
            for site in queries.list_sites(session) for host in site.hosts
        ]


def list_tenants(actor: Actor, *, limit: int | None = None, after: str | None = None) -> list[dict[str, Any]]:
    """Counties in slug order with their VMs, health (cached) and newest job; a page of `limit` after
    the slug `after` when asked (the API's pages), every county otherwise."""
    authorize(actor, Action.READ, tenant=actor.tenant)
    with session_scope(bootstrap.engine()) as session:
        rows = queries.tenant_rows(session, None if actor.role is not Role.COUNTY else [str(actor.tenant)],
                                   limit=limit, after=after)
        county_view.add_last_jobs(session, rows, every_target=len(rows) > LONG_LIST)
    county_view.add_health(rows)
    return rows


# Past this many counties, reading every target's newest job beats naming the counties' targets.
LONG_LIST = 50


def list_vms(actor: Actor) -> list[dict[str, Any]]:
    authorize(actor, Action.READ, tenant=actor.tenant)
    with session_scope(bootstrap.engine()) as session:
        rows = queries.tenant_rows(session, None if actor.role is not Role.COUNTY else [str(actor.tenant)])
    return [dict(vm, tenant=row["tenant"]) for row in rows for vm in cast(list[dict[str, Any]], row["vms"])]


def show_tenant(actor: Actor, slug: str, *, probe_health: bool = False) -> dict[str, Any]:
    """One county as in the list. Its health is the cached one; `probe_health` probes its address now
    and waits (the CLI)."""
    authorize(actor, Action.READ, tenant=slug)
    with session_scope(bootstrap.engine()) as session:
        found = queries.tenant_rows(session, [slug])
        if not found:
            _get_tenant(session, slug)  # NotFoundError naming close matches
        county_view.add_last_jobs(session, found, every_target=False)
    county_view.add_health(found, fresh=probe_health)
    return found[0]


def list_jobs(actor: Actor, *, limit: int = 50, target: str | None = None,
              status: JobStatus | None = None, tenant: str | None = None) -> list[jobs.JobView]:
    """Newest first. `tenant`: every job of that county (its own and its VMs'); a county actor sees
    only its county's, whatever it asks."""
    if actor.role is Role.COUNTY:
        tenant = tenant or actor.tenant
    authorize(actor, Action.READ, tenant=tenant if actor.role is Role.COUNTY else None)
    targets: set[str] | None = {target} if target is not None else None
    if tenant is not None:
        own = _county_targets(tenant)
        if targets is not None and not targets <= own:
            if actor.role is Role.COUNTY:
                raise Forbidden(f"{actor.describe()} sees only its county {actor.tenant}'s jobs")
            return []
        targets = targets or own
    return jobs.list_jobs(bootstrap.engine(), limit=limit, targets=targets, status=status)


def _county_targets(slug: str) -> set[str]:
    """What a county's jobs target: the county, or one of its VMs."""
    with session_scope(bootstrap.engine()) as session:
        rows = queries.tenant_rows(session, [slug])
    return county_view.targets_of(rows[0]) if rows else {slug}


def get_job(actor: Actor, job_id: str) -> jobs.JobView:
    authorize(actor, Action.READ, tenant=actor.tenant)
    try:
        view = jobs.get_job(bootstrap.engine(), job_id)
    except jobs.JobNotFound as error:
        raise NotFoundError(str(error)) from None
    if not _visible(actor, _job_tenant(view)):
        raise NotFoundError(f"no job with id {job_id!r}")  # a county does not learn others' job ids
    return view


def _job_tenant(view: jobs.JobView) -> str:
    """The county a job acts on (a resize targets a VM)."""
    if view.kind is not JobKind.RESIZE:
        return view.target
    with session_scope(bootstrap.engine()) as session:
        try:
            return queries.get_vm(session, view.target).tenant.slug
        except queries.NotFound:
            return ""


# --- validating job requests -------------------------------------------------------------------

def request_create(actor: Actor, slug: str, *, cold: bool = False) -> JobRequest:
    authorize(actor, Action.PROVISION, tenant=slug)
    args = _args(ProvisionArgs, tenant=slug, cold=cold)
    with session_scope(bootstrap.engine()) as session:
        tenant = _get_tenant(session, slug)
        if tenant.status is Lifecycle.RETIRING:
            raise Conflict(f"tenant {slug} is being retired; finish that first "
                           f"(`countycloud tenant retire {slug}`)")
        if not queries.vms_of(tenant):
            raise InvalidInput(f"tenant {slug} declares no VMs")
        site = tenant.current_site.name
    return JobRequest(actor, Action.PROVISION, JobKind.PROVISION, slug, args, site=site)


def vm_of(slug: str, vm: str | None) -> str:
    """The one VM a request acts on; it must be provisioned (active or on its way)."""
    with session_scope(bootstrap.engine()) as session:
        tenant = _get_tenant(session, slug)
        vms = queries.vms_of(tenant)
        if vm is not None:
            chosen = [v for v in vms if v.name == vm]
            if not chosen:
                names = ", ".join(v.name for v in vms)
                raise NotFoundError(f"tenant {slug} has no VM {vm!r}; it has {names}")
        elif len(vms) != 1:
            raise InvalidInput(f"tenant {slug} has {len(vms)} VMs ({', '.join(v.name for v in vms)}); "
                               "name one with --vm")
        else:
            chosen = vms
        name, status = chosen[0].name, chosen[0].status
    if status not in ACTIONABLE:
        raise Conflict(f"{name} is {status.value}; provision it first (`countycloud tenant create {slug}`)")
    return name


def request_resize(actor: Actor, slug: str, *, vcpus: int | None = None, memory_mb: int | None = None,
                   vm: str | None = None) -> JobRequest:
    """A live resize; a size left out stays as it is. Checked against the running VM's live maximums
    here, so a resize it cannot take never becomes a (failed, blocking) job."""
    authorize(actor, Action.RESIZE, tenant=slug)
    if vcpus is None and memory_mb is None:
        raise InvalidInput("give --vcpus, --memory or both")
    _args(ResizeAsked, vcpus=vcpus, memory_mb=memory_mb)  # out-of-range sizes first, whatever the VM
    name = vm_of(slug, vm)
    with session_scope(bootstrap.engine()) as session:
        record = queries.get_vm(session, name)
        vcpus = record.vcpus if vcpus is None else vcpus
        memory_mb = record.memory_mb if memory_mb is None else memory_mb
    args = _args(ResizeArgs, vm=name, vcpus=vcpus, memory_mb=memory_mb)
    try:
        steps.check_resize(bootstrap.platform(), name, vcpus, memory_mb)
    except ProvisioningError as error:
        raise InvalidInput(str(error)) from None
    return JobRequest(actor, Action.RESIZE, JobKind.RESIZE, name, args,
                      site=records.vm_site(bootstrap.engine(), name))


def request_configure(actor: Actor, slug: str) -> JobRequest:
    authorize(actor, Action.CONFIGURE, tenant=slug)
    vm_of_any(slug)
    return JobRequest(actor, Action.CONFIGURE, JobKind.CONFIGURE, slug, _args(ConfigureArgs, tenant=slug),
                      site=records.current_site(bootstrap.engine(), slug))


def vm_of_any(slug: str) -> None:
    with session_scope(bootstrap.engine()) as session:
        tenant = _get_tenant(session, slug)
        if not any(vm.status in ACTIONABLE for vm in queries.vms_of(tenant)):
            raise Conflict(f"tenant {slug} has no provisioned VM; `countycloud tenant create {slug}` first")


def request_retire(actor: Actor, slug: str, *, purge: bool = False) -> JobRequest:
    authorize(actor, Action.RETIRE, tenant=slug)
    args = _args(RetireArgs, tenant=slug, purge=purge)
    with session_scope(bootstrap.engine()) as session:
        _get_tenant(session, slug)
    pending = tuple(job.id for job in jobs.list_jobs(bootstrap.engine(), target=slug, with_steps=False)
                    if job.kind in CANCELLED_BY_RETIRE and job.status not in jobs.FINISHED)
    return JobRequest(actor, Action.RETIRE, JobKind.RETIRE, slug, args, cancel_first=pending,
                      site=records.current_site(bootstrap.engine(), slug))


# --- submitting and running ----------------------------------------------------------------------

def _record(request: JobRequest, job_id: str | None, what: str) -> None:
    with session_scope(bootstrap.engine()) as session:
        audit.record(session, request.actor, request.action.value, request.target, job_id=job_id,
                     detail={"args": request.args, "what": what})


def _cancel_first(request: JobRequest) -> None:
    for job_id in request.cancel_first:
        try:
            jobs.cancel(bootstrap.engine(), job_id)
        except jobs.JobConflict as error:  # e.g. its process is still running it
            raise Conflict(str(error)) from None
        _record(JobRequest(request.actor, Action.JOB_CONTROL, JobKind.RETIRE, job_id, {}), job_id,
                f"cancelled before {request.kind.value}")


def submit(request: JobRequest) -> JobRef:
    """Queue the job for the service's workers and return at once (its id is for following it)."""
    bootstrap.register_job_builders()
    _cancel_first(request)
    try:
        job_id = jobs.submit(bootstrap.engine(), request.kind, request.target, request.args,
                             artifacts_root=bootstrap.platform().artifacts_dir, site=request.site)
    except jobs.JobConflict as error:
        raise Conflict(str(error)) from None
    _record(request, job_id, "submitted")
    return JobRef(job_id, request.kind, request.target)


Progress = Callable[[jobs.JobView], None]


def run(request: JobRequest, on_progress: Progress | None = None) -> JobRef:
    """Run the job in this process (or follow the worker already running it) until it ends; raises
    jobs.JobFailed when a step fails (a rerun resumes it)."""
    bootstrap.register_job_builders()
    _cancel_first(request)
    platform = bootstrap.platform()
    _record(request, None, "run")
    job_id = jobs.start(platform.engine, request.kind, request.target, request.args, context=platform,
                        artifacts_root=platform.artifacts_dir, on_progress=on_progress)
    return JobRef(job_id, request.kind, request.target)


def run_many(requests: Iterable[JobRequest], on_progress: Callable[[str, jobs.JobView], None] | None = None,
             ) -> dict[str, str | jobs.JobError]:
    """Several jobs of one kind at once in this process; each target's outcome (id or error)."""
    chosen = list(requests)
    kinds = {request.kind for request in chosen}
    if len(kinds) > 1:
        raise InvalidInput("jobs run together must be of one kind")
    bootstrap.register_job_builders()
    for request in chosen:
        _cancel_first(request)
        _record(request, None, "run")
    platform = bootstrap.platform()
    return jobs.start_many(platform.engine, kinds.pop(), {r.target: r.args for r in chosen},
                           context=platform, artifacts_root=platform.artifacts_dir, on_progress=on_progress)


# --- the API's one-call forms (submit) ---------------------------------------------------------

def create_tenant(actor: Actor, slug: str, *, cold: bool = False) -> JobRef:
    return submit(request_create(actor, slug, cold=cold))


def resize_vm(actor: Actor, tenant: str, *, vcpus: int | None = None, memory_mb: int | None = None,
              vm: str | None = None) -> JobRef:
    return submit(request_resize(actor, tenant, vcpus=vcpus, memory_mb=memory_mb, vm=vm))


def configure_tenant(actor: Actor, slug: str) -> JobRef:
    return submit(request_configure(actor, slug))


def retire_tenant(actor: Actor, slug: str, *, purge: bool = False) -> JobRef:
    return submit(request_retire(actor, slug, purge=purge))


# --- jobs ---------------------------------------------------------------------------------------

def resume_job(actor: Actor, job_id: str) -> JobRef:
    view = get_job(actor, job_id)
    authorize(actor, Action.JOB_CONTROL, tenant=_job_tenant(view))
    bootstrap.register_job_builders()
    try:
        jobs.requeue(bootstrap.engine(), job_id, site=_job_site(view))
    except jobs.JobError as error:
        raise Conflict(str(error)) from None
    _record(JobRequest(actor, Action.JOB_CONTROL, view.kind, view.target, {}), job_id, "resumed")
    return JobRef(job_id, view.kind, view.target)


def _job_site(view: jobs.JobView) -> str | None:
    """The site a recorded job acts at (its queue), where the inventory still knows its target."""
    try:
        if view.kind is JobKind.RESIZE:
            return records.vm_site(bootstrap.engine(), view.target)
        return records.current_site(bootstrap.engine(), view.target)
    except queries.NotFound:
        return None


def cancel_job(actor: Actor, job_id: str) -> None:
    view = get_job(actor, job_id)
    authorize(actor, Action.JOB_CONTROL, tenant=_job_tenant(view))
    try:
        jobs.cancel(bootstrap.engine(), job_id)
    except jobs.JobError as error:
        raise Conflict(str(error)) from None
    _record(JobRequest(actor, Action.JOB_CONTROL, view.kind, view.target, {}), job_id, "cancelled")


# --- inventory ----------------------------------------------------------------------------------

def inventory_plan(actor: Actor, yaml_text: str) -> dict[str, Any]:
    authorize(actor, Action.READ)
    return inventory_ops.plan(yaml_text)


def inventory_apply(actor: Actor, yaml_text: str) -> dict[str, Any]:
    authorize(actor, Action.INVENTORY_APPLY)
    applied = inventory_ops.apply(yaml_text, actor=actor.describe())
    with session_scope(bootstrap.engine()) as session:
        audit.record(session, actor, Action.INVENTORY_APPLY.value, "inventory",
                     detail={"changes": applied.get("changes", [])[:200]})
    return applied
