"""A use-case backend for API and console tests where the real one would boot VMs.

Reads go to the real inventory and job tables. A submit checks the role (and the county scope) the
way controlplane.operations does, records a real Job row and an audit event, and returns at once;
nothing runs the job unless a test does (with the fake step builder of fake_job.py). Inventory plan
and apply are the real inventory functions over YAML text.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from controlplane import audit, jobs
from controlplane.actors import Actor
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFoundError
from controlplane.roles import Action, Role, allows
from inventory import declare
from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.jobs import FINISHED, Job, JobKind, JobStatus
from inventory.loader import DeclarationError, load_text
from inventory.models import Tenant
from inventory.queries import NotFound, get_tenant, list_hosts, list_sites, list_tenants, list_vms, vms_of


@dataclass(frozen=True)
class JobRef:
    id: str
    kind: JobKind
    target: str


def _check(actor: Actor, action: Action, tenant: str | None = None) -> None:
    if not allows(actor.role, action):
        raise Forbidden(f"{actor.describe()} may not {action.value}")
    if actor.role == Role.COUNTY and tenant is not None and tenant != actor.tenant:
        raise Forbidden(f"{actor.describe()} sees only {actor.tenant}")


def tenant_row(tenant: Tenant) -> dict[str, Any]:
    return {
        "tenant": tenant.slug, "name": tenant.name, "status": tenant.status.value,
        "site": tenant.home_site.name,
        "address": f"http://127.0.0.1:{tenant.gateway_port}/" if tenant.gateway_port else None,
        "vms": [{"name": vm.name, "role": vm.role.value, "status": vm.status.value, "vcpus": vm.vcpus,
                 "memory_mb": vm.memory_mb, "host": vm.host.name if vm.host else None,
                 "ssh_port": vm.ssh_port, "app_port": vm.app_port} for vm in vms_of(tenant)],
    }


class FakeOperations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.submitted: list[JobRef] = []

    # -- reads
    def list_sites(self, actor: Actor) -> list[dict[str, Any]]:
        _check(actor, Action.READ)
        with session_scope(self.engine) as s:
            return [{"site": x.name, "role": x.role.value, "state": "up",
                     "hosts": [h.name for h in x.hosts]} for x in list_sites(s)]

    def list_hosts(self, actor: Actor) -> list[dict[str, Any]]:
        _check(actor, Action.READ)
        with session_scope(self.engine) as s:
            return [{"host": h.name, "site": h.site.name, "vcpus": h.vcpus, "memory_mb": h.memory_mb}
                    for h in list_hosts(s)]

    def list_tenants(self, actor: Actor, *, limit: int | None = None,
                     after: str | None = None) -> list[dict[str, Any]]:
        _check(actor, Action.READ)
        with session_scope(self.engine) as s:
            rows = [tenant_row(t) for t in list_tenants(s)
                    if (actor.role != Role.COUNTY or t.slug == actor.tenant)
                    and (after is None or t.slug > after)]
        rows = sorted(rows, key=lambda row: row["tenant"])[:limit]
        last = self._last_jobs([row["tenant"] for row in rows])
        return [{**row, "healthy": None, "last_job": last.get(row["tenant"])} for row in rows]

    def show_tenant(self, actor: Actor, slug: str) -> dict[str, Any]:
        _check(actor, Action.READ, slug)
        try:
            with session_scope(self.engine) as s:
                row = tenant_row(get_tenant(s, slug))
        except NotFound as error:
            raise NotFoundError(str(error)) from None
        return {**row, "healthy": None, "last_job": self._last_jobs([slug]).get(slug)}

    def list_vms(self, actor: Actor) -> list[dict[str, Any]]:
        _check(actor, Action.READ)
        with session_scope(self.engine) as s:
            return [{"name": v.name, "tenant": v.tenant.slug, "status": v.status.value,
                     "host": v.host.name if v.host else None} for v in list_vms(s)
                    if actor.role != Role.COUNTY or v.tenant.slug == actor.tenant]

    def _last_jobs(self, targets: list[str]) -> dict[str, dict[str, Any]]:
        with session_scope(self.engine) as s:
            found: dict[str, dict[str, Any]] = {}
            for job in s.scalars(select(Job).where(Job.target.in_(targets)).order_by(Job.created_at)):
                found[job.target] = {"id": job.id, "kind": job.kind.value, "status": job.status.value}
            return found

    # -- submits
    def _submit(self, actor: Actor, action: Action, kind: JobKind, slug: str, args: dict[str, Any]) -> JobRef:
        _check(actor, action, slug)
        job_id = f"{kind.value}-{slug}-{uuid.uuid4().hex[:6]}"
        try:
            with session_scope(self.engine) as s:
                try:
                    tenant = get_tenant(s, slug)
                except NotFound as error:
                    raise NotFoundError(str(error)) from None
                if kind == JobKind.PROVISION and tenant.status == Lifecycle.ACTIVE:
                    raise Conflict(f"{slug} is already active")
                s.add(Job(id=job_id, kind=kind, target=slug, args=args, status=JobStatus.PENDING,
                          created_at=datetime.now(UTC), artifacts_dir=""))
                s.flush()
                audit.record(s, actor, f"tenant.{kind.value}", slug, job_id=job_id, detail=args)
        except IntegrityError:
            raise Conflict(f"an unfinished {kind.value} job for {slug} exists") from None
        ref = JobRef(job_id, kind, slug)
        self.submitted.append(ref)
        return ref

    def create_tenant(self, actor: Actor, slug: str, *, cold: bool = False) -> JobRef:
        return self._submit(actor, Action.PROVISION, JobKind.PROVISION, slug, {"tenant": slug, "cold": cold})

    def resize_vm(self, actor: Actor, tenant: str, *, vcpus: int | None, memory_mb: int | None,
                  vm: str | None = None) -> JobRef:
        return self._submit(actor, Action.RESIZE, JobKind.RESIZE, tenant,
                            {"tenant": tenant, "vcpus": vcpus, "memory_mb": memory_mb, "vm": vm})

    def configure_tenant(self, actor: Actor, slug: str) -> JobRef:
        return self._submit(actor, Action.CONFIGURE, JobKind.CONFIGURE, slug, {"tenant": slug})

    def retire_tenant(self, actor: Actor, slug: str, *, purge: bool = False) -> JobRef:
        return self._submit(actor, Action.RETIRE, JobKind.RETIRE, slug, {"tenant": slug, "purge": purge})

    # -- inventory
    def _declaration(self, yaml_text: str) -> Any:
        try:
            return load_text(yaml_text)
        except DeclarationError as error:
            raise InvalidInput("; ".join(error.lines())) from None

    def inventory_plan(self, actor: Actor, yaml_text: str) -> dict[str, Any]:
        _check(actor, Action.READ)
        if actor.role == Role.COUNTY:
            raise Forbidden("the inventory is not a county's to see")
        declaration = self._declaration(yaml_text)
        with session_scope(self.engine) as s:
            return {"changes": [c.to_dict() for c in declare.plan(s, declaration)]}

    def inventory_apply(self, actor: Actor, yaml_text: str) -> dict[str, Any]:
        _check(actor, Action.INVENTORY_APPLY)
        declaration = self._declaration(yaml_text)
        try:
            with session_scope(self.engine) as s:
                changes = [c.to_dict() for c in declare.apply(s, declaration, actor=actor.describe())]
                audit.record(s, actor, "inventory.apply", "inventory", detail={"changes": len(changes)})
        except declare.ApplyRefused as error:
            raise Conflict(str(error)) from None
        return {"changes": changes}

    # -- jobs
    def list_jobs(self, actor: Actor, *, limit: int = 50, target: str | None = None,
                  status: JobStatus | None = None, tenant: str | None = None) -> list[jobs.JobView]:
        _check(actor, Action.READ, target or tenant)
        views = jobs.list_jobs(self.engine, limit=limit, target=target or tenant, status=status)
        return [v for v in views if actor.role != Role.COUNTY or v.target == actor.tenant]

    def get_job(self, actor: Actor, job_id: str) -> jobs.JobView:
        _check(actor, Action.READ)
        try:
            view = jobs.get_job(self.engine, job_id)
        except jobs.JobNotFound as error:
            raise NotFoundError(str(error)) from None
        _check(actor, Action.READ, view.target)
        return view

    def resume_job(self, actor: Actor, job_id: str) -> JobRef:
        _check(actor, Action.JOB_CONTROL)
        view = self.get_job(actor, job_id)
        if view.status in FINISHED:
            raise Conflict(f"job {job_id} is {view.status.value}")
        with session_scope(self.engine) as s:
            audit.record(s, actor, "job.resume", view.target, job_id=job_id)
        return JobRef(job_id, view.kind, view.target)

    def cancel_job(self, actor: Actor, job_id: str) -> None:
        _check(actor, Action.JOB_CONTROL)
        view = self.get_job(actor, job_id)
        if view.status == JobStatus.SUCCEEDED:
            raise Conflict(f"job {job_id} already succeeded")
        with session_scope(self.engine) as s:
            job = s.get(Job, job_id)
            assert job is not None
            job.status = JobStatus.CANCELLED
            audit.record(s, actor, "job.cancel", view.target, job_id=job_id)
