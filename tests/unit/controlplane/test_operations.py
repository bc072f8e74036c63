"""The use-case layer over a real inventory (SQLite, the demo sample applied, no site running): who
may do what, a county actor's scope, validation before any job exists, and the audit record."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane import audit, bootstrap, jobs, operations
from controlplane.actors import Actor, ActorKind, cli_actor
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFoundError
from controlplane.roles import Role
from inventory.jobs import JobKind, JobStatus


def actor(role: Role, tenant: str | None = None) -> Actor:
    return Actor(ActorKind.USER, f"someone-{role.value}", role, tenant=tenant, source="127.0.0.1")


def test_a_county_sees_its_own_county_only(applied: Path) -> None:
    keelung = actor(Role.COUNTY, tenant="keelung")
    assert [row["tenant"] for row in operations.list_tenants(keelung)] == ["keelung"]
    assert operations.show_tenant(keelung, "keelung", probe_health=False)["name"] == "基隆市"
    with pytest.raises(Forbidden):
        operations.show_tenant(keelung, "penghu")
    with pytest.raises(Forbidden):
        operations.list_sites(keelung)
    with pytest.raises(Forbidden):
        operations.request_create(keelung, "keelung")
    assert {vm["tenant"] for vm in operations.list_vms(keelung)} == {"keelung"}


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.OPERATOR, Role.COUNTY])
def test_only_central_it_and_admin_provision(applied: Path, role: Role) -> None:
    with pytest.raises(Forbidden):
        operations.request_create(actor(role, tenant="keelung"), "keelung")
    assert operations.request_create(actor(Role.CENTRAL_IT), "keelung").args == {"tenant": "keelung",
                                                                                  "cold": False}


def test_requests_are_validated_before_any_job(applied: Path) -> None:
    it = actor(Role.CENTRAL_IT)
    with pytest.raises(NotFoundError, match="no tenant 'nosuch'"):
        operations.request_create(it, "nosuch")
    with pytest.raises(InvalidInput, match="give --vcpus, --memory or both"):
        operations.request_resize(it, "keelung")
    with pytest.raises(Conflict, match="keelung-accounting-1 is planned; provision it first"):
        operations.request_resize(it, "keelung", vcpus=2)
    with pytest.raises(InvalidInput, match="vcpus"):
        operations.request_resize(it, "keelung", vcpus=10**6)
    assert jobs.list_jobs(bootstrap.engine()) == []


def test_submit_queues_the_job_and_audits_who_asked_and_a_cancel(applied: Path) -> None:
    it = actor(Role.CENTRAL_IT)
    ref = operations.create_tenant(it, "keelung")
    assert (ref.kind, ref.target) == (JobKind.PROVISION, "keelung")
    assert operations.get_job(it, ref.id).status is JobStatus.PENDING  # no worker runs here
    assert operations.create_tenant(it, "keelung").id == ref.id  # the same request is the same job
    with pytest.raises(Forbidden):
        operations.cancel_job(actor(Role.AUDITOR), ref.id)
    with pytest.raises(NotFoundError):
        operations.get_job(actor(Role.COUNTY, tenant="penghu"), ref.id)  # not even its existence
    operations.cancel_job(actor(Role.OPERATOR), ref.id)
    assert operations.get_job(it, ref.id).status is JobStatus.CANCELLED
    events = audit.list_events(bootstrap.engine())
    said = [(e.actor_name, e.action, e.target, e.job_id) for e in reversed(events)]
    assert said[:2] == [("someone-central-it", "provision", "keelung", ref.id),
                        ("someone-central-it", "provision", "keelung", ref.id)]
    assert said[-1] == ("someone-operator", "job-control", "keelung", ref.id)
    assert audit.verify(bootstrap.engine(), audit.anchor_path(bootstrap.engine())).ok


def test_the_cli_acts_as_admin_for_its_os_user() -> None:
    assert cli_actor().role is Role.ADMIN
