"""Every route of the API and the console, called as every role (anonymous, admin, central-it,
operator, auditor, and a county user on its own county and on another one): allowed or denied as
controlplane.roles says. A new route without a row here fails the coverage test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from controlplane import audit, auth, bootstrap
from controlplane.actors import cli_actor
from controlplane.models import User
from controlplane.roles import Role
from inventory.db import session_scope
from inventory.jobs import Job, JobKind, JobStatus
from tests.unit.controlplane.service_support import OTHER, OWN, PASSWORD, Service, make_service, sign_in

ANON = "anonymous"
ROLES = [ANON, "root", "central", "oper", "auditor", "liaison"]
EVERYONE = {"root", "central", "oper", "auditor", "liaison"}
PLATFORM_READERS = {"root", "central", "oper", "auditor"}
PROVISIONERS = {"root", "central"}
JOB_CONTROLLERS = {"root", "central", "oper"}
AUDIT_READERS = {"root", "auditor"}
OWN_JOB, OTHER_JOB = f"template_build-{OWN}-1", f"template_build-{OTHER}-1"
SMALL_YAML = "sites: []\n"


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    allowed: frozenset[str]
    body: Any = None
    ok: int = 200
    route: str = ""  # the route's template when the path is a concrete instance of it


def case(method: str, path: str, allowed: set[str], body: Any = None, ok: int = 200,
         route: str = "") -> Case:
    return Case(method, path, frozenset(allowed), body, ok, route or path)


API = "/api/v1"
API_CASES = [
    case("GET", f"{API}/me", EVERYONE),
    case("GET", f"{API}/sites", PLATFORM_READERS),
    case("GET", f"{API}/hosts", PLATFORM_READERS),
    case("GET", f"{API}/vms", EVERYONE),
    case("GET", f"{API}/tenants", EVERYONE),
    case("GET", f"{API}/tenants/{OWN}", EVERYONE, route=f"{API}/tenants/{{slug}}"),
    case("GET", f"{API}/tenants/{OTHER}", PLATFORM_READERS, route=f"{API}/tenants/{{slug}}"),
    case("POST", f"{API}/tenants", PROVISIONERS, {"slug": OWN}, 202),
    case("POST", f"{API}/tenants/{OWN}/resize", PROVISIONERS, {"vcpus": 2}, 202,
         route=f"{API}/tenants/{{slug}}/resize"),
    case("POST", f"{API}/tenants/{OWN}/configure", PROVISIONERS, None, 202,
         route=f"{API}/tenants/{{slug}}/configure"),
    case("POST", f"{API}/tenants/{OWN}/retire", PROVISIONERS, {"purge": False}, 202,
         route=f"{API}/tenants/{{slug}}/retire"),
    case("POST", f"{API}/inventory/plan", PLATFORM_READERS, {"yaml": SMALL_YAML}),
    case("POST", f"{API}/inventory/apply", PROVISIONERS, {"yaml": "tenants: []\n"}),
    case("GET", f"{API}/jobs", EVERYONE),
    case("GET", f"{API}/jobs/{OWN_JOB}", EVERYONE, route=f"{API}/jobs/{{job_id}}"),
    case("GET", f"{API}/jobs/{OTHER_JOB}", PLATFORM_READERS, route=f"{API}/jobs/{{job_id}}"),
    case("GET", f"{API}/jobs/{OWN_JOB}/events", EVERYONE, route=f"{API}/jobs/{{job_id}}/events"),
    case("GET", f"{API}/jobs/{OTHER_JOB}/events", PLATFORM_READERS, route=f"{API}/jobs/{{job_id}}/events"),
    case("POST", f"{API}/jobs/{OWN_JOB}/resume", JOB_CONTROLLERS, None, 202,
         route=f"{API}/jobs/{{job_id}}/resume"),
    case("POST", f"{API}/jobs/{OWN_JOB}/cancel", JOB_CONTROLLERS, route=f"{API}/jobs/{{job_id}}/cancel"),
    case("GET", f"{API}/users", AUDIT_READERS),
    case("POST", f"{API}/users", {"root"}, {"name": "newbie", "role": "auditor", "password": PASSWORD}, 201),
    case("POST", f"{API}/users/central/disable", {"root"}, route=f"{API}/users/{{name}}/disable"),
    case("POST", f"{API}/users/central/enable", {"root"}, route=f"{API}/users/{{name}}/enable"),
    case("PUT", f"{API}/users/oper/password", {"root", "oper"}, {"password": PASSWORD},
         route=f"{API}/users/{{name}}/password"),
    case("GET", f"{API}/tokens", EVERYONE),
    case("POST", f"{API}/tokens", EVERYONE, {"label": "matrix"}, 201),
    case("DELETE", f"{API}/tokens/{{spare}}", {"root"}, route=f"{API}/tokens/{{token_id}}"),
    case("GET", f"{API}/audit", AUDIT_READERS),
    case("GET", f"{API}/audit/verify", AUDIT_READERS),
]

# Console: pages and forms. A signed-out browser is sent to sign in (303), a refused one gets 403.
CONSOLE_CASES = [
    case("GET", "/", EVERYONE),
    case("GET", f"/tenants/{OWN}", EVERYONE, route="/tenants/{slug}"),
    case("GET", f"/tenants/{OTHER}", PLATFORM_READERS, route="/tenants/{slug}"),
    case("POST", f"/tenants/{OWN}/create", PROVISIONERS, {}, 303, route="/tenants/{slug}/{operation}"),
    case("POST", f"/tenants/{OWN}/resize", PROVISIONERS, {"vcpus": "2"}, 303,
         route="/tenants/{slug}/{operation}"),
    case("POST", f"/tenants/{OWN}/configure", PROVISIONERS, {}, 303, route="/tenants/{slug}/{operation}"),
    case("POST", f"/tenants/{OWN}/retire", PROVISIONERS, {}, 303, route="/tenants/{slug}/{operation}"),
    case("GET", "/jobs", EVERYONE),
    case("GET", f"/jobs/{OWN_JOB}", EVERYONE, route="/jobs/{job_id}"),
    case("GET", f"/jobs/{OTHER_JOB}", PLATFORM_READERS, route="/jobs/{job_id}"),
    case("POST", f"/jobs/{OWN_JOB}/resume", JOB_CONTROLLERS, {}, 303, route="/jobs/{job_id}/{control}"),
    case("POST", f"/jobs/{OWN_JOB}/cancel", JOB_CONTROLLERS, {}, 303, route="/jobs/{job_id}/{control}"),
    case("GET", "/users", EVERYONE),
    case("POST", "/users", {"root"}, {"name": "webbie", "role": "auditor", "password": PASSWORD}, 303),
    case("POST", "/users/central/disable", {"root"}, {}, 303, route="/users/{name}/{change}"),
    case("POST", "/users/central/enable", {"root"}, {}, 303, route="/users/{name}/{change}"),
    case("POST", "/tokens", EVERYONE, {"label": "web"}),
    case("POST", "/tokens/{spare}/revoke", {"root"}, {}, 303, route="/tokens/{token_id}/revoke"),
    case("GET", "/audit", AUDIT_READERS),
]
# Routes every visitor may use, signed in or not.
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/lang/{code}"), ("GET", "/healthz"),
          ("POST", "/logout"), ("POST", "/password")}


@pytest.fixture(params=["fake", "real"])
def service(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Service]:
    """Over the fake use-case backend (every allowed call succeeds), and over controlplane.operations
    itself (an allowed call may still be refused by the world: no VM to resize, say)."""
    real = request.param == "real"
    if real:
        state = request.getfixturevalue("state")  # the control plane's settings in a tmp folder
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", db_url)
        for cached in (bootstrap.settings, bootstrap.engine, bootstrap.platform):
            cached.cache_clear()
        tmp_path = state.parent
    for svc in make_service(db_url, tmp_path / "state", real=real):
        auth.create_user(svc.engine, cli_actor(), "bystander", Role.AUDITOR)
        with session_scope(svc.engine) as session:
            for job_id, target in ((OWN_JOB, OWN), (OTHER_JOB, OTHER)):
                session.add(Job(id=job_id, kind=JobKind.TEMPLATE_BUILD, target=target, args={},
                                status=JobStatus.FAILED, created_at=datetime.now(UTC), artifacts_dir=""))
        yield svc


def _reset(service: Service, method: str, response: Any) -> None:
    """Undo what an allowed change did, so the next role meets the same state."""
    if method == "GET" or response.status_code >= 400:
        return
    with session_scope(service.engine) as session:
        session.execute(update(Job).where(Job.id.not_in([OWN_JOB, OTHER_JOB]))
                        .values(status=JobStatus.CANCELLED))
        session.execute(update(Job).where(Job.id.in_([OWN_JOB, OTHER_JOB])).values(status=JobStatus.FAILED))
        session.execute(update(User).where(User.name == "central").values(disabled=False))
        session.execute(delete(User).where(User.name.in_(["newbie", "webbie"])))


def _agrees(service: Service, c: Case, role: str, expected: int, status: int) -> bool:
    """The real use cases may answer an allowed call with the world's refusal (409: nothing to
    resize yet; 422: the VM cannot take that size), and hide another county's job as 404."""
    if not service.real or status >= 500:
        return False
    if expected == 403:
        return status == 404 and role == "liaison" and OTHER in c.path
    return expected < 400 and status in (409, 422)


def _spare_token(service: Service) -> str:
    """A token of a user none of the callers is: only a user manager may revoke it."""
    return auth.create_token(service.engine, cli_actor(), "bystander", "spare")[0].id


def _call(client: TestClient, service: Service, c: Case, role: str, headers: dict[str, str],
          form: bool) -> Any:
    path = c.path.replace("{spare}", _spare_token(service)) if "{spare}" in c.path else c.path
    kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": False}
    if c.method != "GET" and c.method != "DELETE":
        if form:
            kwargs["data"] = {**(c.body or {}), "csrf": headers.pop("x-csrf", "")}
        elif c.body is not None:
            kwargs["json"] = c.body
    headers.pop("x-csrf", None)
    return client.request(c.method, path, **kwargs)


def test_every_api_route_as_every_role(service: Service) -> None:
    client = TestClient(service.app)
    wrong: list[str] = []
    for c in API_CASES:
        for role in ROLES:
            headers = {} if role == ANON else service.bearer(role)
            response = _call(client, service, c, role, dict(headers), form=False)
            if role == ANON:
                expected = 401
            elif role in c.allowed:
                expected = c.ok
            else:
                expected = 403
            if _agrees(service, c, role, expected, response.status_code):
                pass
            elif response.status_code != expected:
                wrong.append(f"{c.method} {c.path} as {role}: {response.status_code} (want {expected}) "
                             f"{response.text[:160]}")
            elif expected >= 400:
                assert response.json()["code"] == ("unauthenticated" if expected == 401 else "forbidden")
            _reset(service, c.method, response)
    assert wrong == []


def test_a_county_user_lists_only_its_county(service: Service) -> None:
    client = TestClient(service.app)
    headers = service.bearer("liaison")
    tenants = client.get(f"{API}/tenants", headers=headers).json()
    assert [row["tenant"] for row in tenants] == [OWN]
    assert {vm["tenant"] for vm in client.get(f"{API}/vms", headers=headers).json()} == {OWN}
    assert {job["target"] for job in client.get(f"{API}/jobs", headers=headers).json()} == {OWN}
    assert client.get(f"{API}/jobs?target={OTHER}", headers=headers).status_code == 403
    everyone = client.get(f"{API}/tenants", headers=service.bearer("auditor")).json()
    assert len(everyone) == 13


def service_engine(client: TestClient) -> Any:
    return client.app.state.ctx.engine  # type: ignore[attr-defined]


def test_every_console_route_as_every_role(service: Service) -> None:
    wrong: list[str] = []
    for role in ROLES:
        client = TestClient(service.app)
        csrf = "" if role == ANON else sign_in(client, role)
        for c in CONSOLE_CASES:
            response = _call(client, service, c, role, {"x-csrf": csrf}, form=True)
            if role == ANON:
                expected = 303
            elif role in c.allowed:
                expected = c.ok
            else:
                expected = 403
            if _agrees(service, c, role, expected, response.status_code):
                pass
            elif response.status_code != expected:
                wrong.append(f"{c.method} {c.path} as {role}: {response.status_code} (want {expected})")
            elif role == ANON:
                assert response.headers["location"].startswith("/login")
            _reset(service, c.method, response)
    assert wrong == []


def test_a_form_without_the_session_csrf_token_is_refused(service: Service) -> None:
    client = TestClient(service.app)
    sign_in(client, "central")
    for token in ("", "0" * 64):
        response = client.post(f"/tenants/{OWN}/create", data={"csrf": token}, follow_redirects=False)
        assert response.status_code == 422
    assert service.ops.submitted == [] and audit.list_events(service.engine, target=OWN) == []
    # The sign-in form's own token: a login posted from elsewhere (no cookie-bound token) is refused.
    client.cookies.clear()
    response = client.post("/login", data={"username": "central", "password": PASSWORD, "csrf": "x"},
                           follow_redirects=False)
    assert response.status_code == 400 and "cc_session" not in response.cookies


def test_the_matrix_covers_every_route(service: Service) -> None:
    covered = {(c.method, c.route) for c in API_CASES + CONSOLE_CASES} | PUBLIC
    from controlplane.api.routes import router as api_router
    from controlplane.web.console import router as console_router

    routes = {(method, route.path) for route in [*api_router.routes, *console_router.routes]
              if isinstance(route, APIRoute) for method in route.methods - {"HEAD"}}
    assert len(routes) > 40
    assert routes == covered
