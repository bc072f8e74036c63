"""What the routes depend on: the use-case layer (a Protocol, so tests may hand in a fake backend
where the real one would boot VMs), the service's context, and the caller as an Actor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request
from sqlalchemy import Engine

from controlplane import auth, jobs
from controlplane.actors import Actor
from controlplane.errors import Forbidden
from controlplane.roles import Action, Role, allows


class JobRefLike(Protocol):
    id: str
    target: str

    @property
    def kind(self) -> Any: ...


class Operations(Protocol):
    """controlplane.operations, as the API calls it (the contract with the use-case layer)."""

    def list_sites(self, actor: Actor) -> list[dict[str, Any]]: ...
    def list_hosts(self, actor: Actor) -> list[dict[str, Any]]: ...
    def list_tenants(self, actor: Actor, *, limit: int | None = None,
                     after: str | None = None) -> list[dict[str, Any]]: ...
    def show_tenant(self, actor: Actor, slug: str) -> dict[str, Any]: ...
    def list_vms(self, actor: Actor) -> list[dict[str, Any]]: ...
    def create_tenant(self, actor: Actor, slug: str, *, cold: bool = False) -> JobRefLike: ...
    def resize_vm(self, actor: Actor, tenant: str, *, vcpus: int | None, memory_mb: int | None,
                  vm: str | None = None) -> JobRefLike: ...
    def configure_tenant(self, actor: Actor, slug: str) -> JobRefLike: ...
    def retire_tenant(self, actor: Actor, slug: str, *, purge: bool = False) -> JobRefLike: ...
    def inventory_plan(self, actor: Actor, yaml_text: str) -> dict[str, Any]: ...
    def inventory_apply(self, actor: Actor, yaml_text: str) -> dict[str, Any]: ...
    def list_jobs(self, actor: Actor, *, limit: int = 50, target: str | None = None,
                  status: Any = None, tenant: str | None = None) -> list[jobs.JobView]: ...
    def get_job(self, actor: Actor, job_id: str) -> jobs.JobView: ...
    def resume_job(self, actor: Actor, job_id: str) -> JobRefLike: ...
    def cancel_job(self, actor: Actor, job_id: str) -> None: ...


@dataclass
class ServiceContext:
    engine: Engine
    ops: Operations
    state_dir: Path
    limits: auth.Limits
    cookie_secure: bool = False
    # How long one server-sent-events stream of a job lasts at most (the browser reconnects).
    sse_max_s: float = 900.0
    sse_poll_s: float = 0.5


SESSION_COOKIE = "cc_session"


def context(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def api_actor(request: Request) -> Actor:
    """The caller of the API: a Bearer token, or (for reading only) a console session's cookie, so
    the console's live step view can use the API's event stream."""
    ctx = context(request)
    source = client_address(request)
    header = request.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise auth.AuthError("use `Authorization: Bearer <token>` (countycloud token create)")
        return auth.authenticate_token(ctx.engine, credential.strip(), source)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method in ("GET", "HEAD"):
        found = auth.session_actor(ctx.engine, cookie, source)
        if found is not None:
            return found[0]
    raise auth.AuthError("sign in: send `Authorization: Bearer <token>` (countycloud token create)")


def require(actor: Actor, action: Action, *, tenant: str | None = None, platform_wide: bool = False) -> None:
    """The route's own gate, before the use case checks again: the role may do `action`; a county
    actor only on its own county, and never on what spans the platform (sites, hosts, inventory)."""
    if not allows(actor.role, action):
        raise Forbidden(f"{actor.describe()} ({actor.role.value}) may not {action.value}")
    if actor.role == Role.COUNTY:
        if platform_wide:
            raise Forbidden(f"{actor.describe()} sees only its county {actor.tenant}")
        if tenant is not None and tenant != actor.tenant:
            raise Forbidden(f"{actor.describe()} sees only its county {actor.tenant}, not {tenant}")
