"""What the use cases show of a county beside its record (newest job, health) and a county actor's
view of jobs, over controlplane.operations itself and the API, on SQLite and PostgreSQL (db_url):
- a county's jobs are its own and its VMs' (a resize targets the VM), and no other county's;
- the county list and a county's page carry the newest of those jobs and the health from the cache,
  never probing an address while a request waits;
- the API lists counties a page at a time, in slug order, with a link to the next page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from controlplane import bootstrap, health, operations
from controlplane.actors import Actor, ActorKind
from controlplane.errors import Forbidden, NotFoundError
from controlplane.roles import Role
from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.jobs import Job, JobKind, JobStatus
from inventory.models import Tenant
from tests.unit.controlplane.service_support import OTHER, OWN, PASSWORD, Service, make_service

OWN_VM, OTHER_VM = f"{OWN}-accounting-1", f"{OTHER}-accounting-1"
BEGAN = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def actor(role: Role, tenant: str | None = None) -> Actor:
    return Actor(ActorKind.USER, f"someone-{role.value}", role, tenant=tenant, source="127.0.0.1")


@pytest.fixture
def service(db_url: str, state: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """The real use cases over the demo inventory on `db_url`; four recorded jobs: each county's
    create, then a resize of its VM (newer)."""
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", db_url)
    for cached in (bootstrap.settings, bootstrap.engine, bootstrap.platform):
        cached.cache_clear()
    probed: list[tuple[int, str]] = []

    def probe(port: int) -> bool:
        probed.append((port, threading.current_thread().name))
        return True

    monkeypatch.setattr(health, "CACHE", health.HealthCache(probe=probe))
    for svc in make_service(db_url, state, real=True):
        with session_scope(svc.engine) as session:
            for minutes, (kind, target) in enumerate([(JobKind.PROVISION, OWN), (JobKind.PROVISION, OTHER),
                                                      (JobKind.RESIZE, OWN_VM), (JobKind.RESIZE, OTHER_VM)]):
                session.add(Job(id=f"{kind.value}-{target}", kind=kind, target=target, args={},
                                status=JobStatus.SUCCEEDED, created_at=BEGAN + timedelta(minutes=minutes),
                                artifacts_dir=""))
        svc.probed = probed  # type: ignore[attr-defined]
        yield svc


def test_a_county_sees_every_job_of_its_county_and_no_other(service: Service) -> None:
    liaison = actor(Role.COUNTY, OWN)
    mine = {f"resize-{OWN_VM}", f"provision-{OWN}"}
    assert [view.id for view in operations.list_jobs(liaison)] == [f"resize-{OWN_VM}", f"provision-{OWN}"]
    assert {view.id for view in operations.list_jobs(liaison, target=OWN_VM)} == {f"resize-{OWN_VM}"}
    assert operations.get_job(liaison, f"resize-{OWN_VM}").target == OWN_VM
    with pytest.raises(NotFoundError):
        operations.get_job(liaison, f"resize-{OTHER_VM}")
    with pytest.raises(Forbidden):
        operations.list_jobs(liaison, target=OTHER_VM)
    with pytest.raises(Forbidden):
        operations.list_jobs(liaison, tenant=OTHER)
    # Others ask for a county's jobs by its slug and get its VMs' too.
    assert {view.id for view in operations.list_jobs(actor(Role.AUDITOR), tenant=OWN)} == mine

    # Through the API and the console as the county's user.
    client = TestClient(service.app)
    listed = client.get("/api/v1/jobs", headers=service.bearer("liaison"))
    assert {job["id"] for job in listed.json()} == mine
    assert client.get(f"/api/v1/jobs/resize-{OWN_VM}", headers=service.bearer("liaison")).status_code == 200
    assert client.get(f"/api/v1/jobs/resize-{OTHER_VM}", headers=service.bearer("liaison")).status_code == 404
    assert client.get(f"/api/v1/jobs?target={OTHER_VM}", headers=service.bearer("liaison")).status_code == 403
    assert {job["id"] for job in client.get(f"/api/v1/jobs?tenant={OWN}",
                                            headers=service.bearer("auditor")).json()} == mine


def test_the_list_and_a_county_carry_its_newest_job_and_cached_health(service: Service) -> None:
    auditor = actor(Role.AUDITOR)
    rows = {row["tenant"]: row for row in operations.list_tenants(auditor)}
    assert rows[OWN]["last_job"]["id"] == f"resize-{OWN_VM}"  # its VM's resize is its newest job
    assert rows[OTHER]["last_job"]["id"] == f"resize-{OTHER_VM}"
    assert all(row["last_job"] is None for slug, row in rows.items() if slug not in (OWN, OTHER))
    assert operations.show_tenant(auditor, OWN)["last_job"]["id"] == f"resize-{OWN_VM}"
    # The long-list query (every target's newest job) and the named one agree.
    assert operations.list_tenants(auditor, limit=100)[0]["last_job"] == \
        operations.show_tenant(auditor, sorted(rows)[0])["last_job"]

    # Health: only serving counties are watched, in the background; the request answers at once.
    assert {row["healthy"] for row in rows.values()} == {None}
    with session_scope(service.engine) as session:
        session.execute(update(Tenant).where(Tenant.slug == OWN).values(status=Lifecycle.ACTIVE))
    assert operations.show_tenant(auditor, OWN)["healthy"] is None  # not probed yet: unknown
    deadline = time.monotonic() + 10
    while operations.show_tenant(auditor, OWN)["healthy"] is not True:
        assert time.monotonic() < deadline, "the background probe never reported"
        time.sleep(0.05)
    probed: list[tuple[int, str]] = service.probed  # type: ignore[attr-defined]
    own_port = int(str(rows[OWN]["address"]).rstrip("/").rsplit(":", 1)[1])
    assert {port for port, _thread in probed} == {own_port}
    assert threading.main_thread().name not in {thread for _port, thread in probed}

    # The console's dashboard and the county's page show both.
    client = TestClient(service.app)
    client.get("/login")
    signed = client.post("/login", data={"username": "auditor", "password": PASSWORD, "next": "/",
                                         "csrf": client.cookies.get("cc_login_csrf") or ""})
    assert signed.status_code == 200
    row = signed.text.split(f'data-tenant="{OWN}"', 1)[1].split("</tr>", 1)[0]
    assert "s-healthy" in row and f"/jobs/resize-{OWN_VM}" in row
    page = client.get(f"/tenants/{OWN}").text
    assert f"/jobs/resize-{OWN_VM}" in page and f"/jobs/provision-{OWN}" in page
    assert f"/jobs/resize-{OTHER_VM}" not in page


def test_the_api_lists_counties_a_page_at_a_time(service: Service) -> None:
    client = TestClient(service.app)
    everyone = sorted(row["tenant"] for row in operations.list_tenants(actor(Role.AUDITOR)))
    assert len(everyone) == 13
    seen: list[str] = []
    url: str | None = "/api/v1/tenants?limit=5"
    while url is not None:
        page = client.get(url, headers=service.bearer("auditor"))
        assert page.status_code == 200
        seen += [row["tenant"] for row in page.json()]
        link = page.headers.get("link")
        url = link.split(">")[0].lstrip("<") if link else None
    assert seen == everyone
    default = client.get("/api/v1/tenants", headers=service.bearer("auditor"))
    assert [row["tenant"] for row in default.json()] == everyone and "link" not in default.headers
    mine = client.get("/api/v1/tenants?limit=1", headers=service.bearer("liaison")).json()
    assert [row["tenant"] for row in mine] == [OWN]
    assert client.get("/api/v1/tenants?limit=0", headers=service.bearer("auditor")).status_code == 422
